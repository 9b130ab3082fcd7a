/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Types shared by the BPF programs and the Go control plane. Go gets them
 * through bpf2go -type (on datapath.c), so this file is their only
 * declaration. */
#pragma once

#include <linux/types.h>

/* What happened to a packet. With the program that saw it, it indexes the
 * stats map and labels the counters. NAT_PORT_COLLISION counts NAT ports
 * found taken while allocating, not packets. */
enum verdict {
	VERDICT_PASS = 0,
	VERDICT_DROP_CROSS_NETWORK = 1, /* to an address of a network the sender is not on */
	VERDICT_DROP_ICC = 2,           /* between sandboxes of a network with icc disabled */
	VERDICT_DROP_INTERNAL = 3,      /* to or from outside an internal network */
	VERDICT_DNAT = 4,               /* first packet of a flow to a published port */
	VERDICT_SNAT = 5,               /* first packet of a masqueraded flow */
	VERDICT_TRACKED = 6,            /* later packet of a tracked flow, either way */
	VERDICT_DROP_NO_NAT_PORT = 7,   /* no free NAT port for a new flow */
	VERDICT_DROP_NO_ROUTE = 8,      /* a translated packet has nowhere to go */
	VERDICT_NAT_PORT_COLLISION = 9,
	VERDICT_MAX,
};

/* Which program counted. */
enum program {
	PROGRAM_FROM_CONTAINER = 0,
	PROGRAM_TO_CONTAINER = 1,
	PROGRAM_UPLINK = 2,
	PROGRAM_SOCKET = 3,
	PROGRAM_MAX,
};

enum network_flag {
	NETWORK_ICC_DISABLED = 1 << 0,
	NETWORK_INTERNAL = 1 << 1,
	NETWORK_MASQUERADE = 1 << 2,
	/* Gateway modes: who outside the host may reach sandbox ports
	 * directly, by routing to the sandbox's address. Neither bit is
	 * Docker's "nat": only published host ports lead in. */
	NETWORK_DIRECT_ALL = 1 << 3,       /* "nat-unprotected": every port */
	NETWORK_DIRECT_PUBLISHED = 1 << 4, /* "routed": the published sandbox ports */
};

/* Value of the networks map, keyed by the network's index. */
struct network_info {
	enum network_flag flags; /* a set of bits */
	__be32 gateway;          /* the host's address on the network */
	__u8 gateway_mac[6];     /* the bridge's MAC: the source of frames we deliver */
	__u8 pad[2];
};

/* Value of the ifaces map, keyed by the ifindex of an endpoint's host-side
 * interface in the dataplane's namespace. */
struct iface_info {
	__u32 network; /* index of the network the endpoint is on */
	__be32 addr;   /* the endpoint's address */
};

/* Value of the endpoints map, keyed by the endpoint's address. */
struct endpoint_info {
	__u32 ifindex; /* host side of its veth: the peer is the endpoint */
	__u32 network;
	__u8 mac[6];
	__u8 pad[2];
};

/* Key of the subnets LPM trie; its value is the network's index. */
struct subnet_key {
	__u32 prefixlen;
	__be32 addr;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* Key of the publications map: a host address (0: every address of the
 * host), port and protocol. */
struct publication_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* Value of the publications map: where the port leads. */
struct publication {
	__be32 addr;
	__be16 port;
	__u8 pad[2];
};

/* Value of the uplinks map, keyed by ifindex: the address flows leaving
 * through the uplink are masqueraded to. */
struct uplink_info {
	__be32 addr;
};

/* Marks of a conntrack entry (in its value) whose translation a
 * publication made. The datapath checks, packet by packet, that the
 * publication still leads where the entry does, so removing a publication
 * ends its flows at once without anyone walking conntrack. */
enum ct_flag {
	CT_PUBLISHED_IN = 1 << 0,  /* to the published port: daddr:dport was the publication's */
	CT_PUBLISHED_OUT = 1 << 1, /* the endpoint's reply: the value's saddr:sport is */
};

/* A flow as a packet shows it. For ICMP echo the identifier stands in for
 * the port: the source port of a request, the destination port of a reply.
 * As conntrack's value it is the flow the packet is rewritten to. */
struct flow {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 flags; /* enum ct_flag bits, in conntrack values; zero in keys */
	__u8 pad[2];
};

/* Key of sock_nat: a socket and the endpoint address it was sent to. */
struct sock_peer_key {
	__u64 cookie;
	__be32 addr;
	__be16 port;
	__u8 pad[2];
};

/* Value of sock_nat: the published address the socket asked for. */
struct sock_peer {
	__be32 addr;
	__be16 port;
	__u8 pad[2];
};
