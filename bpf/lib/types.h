/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Types shared by the BPF programs and the Go control plane. Go gets them
 * through bpf2go -type, so this file is their only declaration. */
#pragma once

#include <linux/types.h>

/* Why a packet got its verdict. It indexes the stats map and is the label set
 * of the drop counters; VERDICT_PASS counts what went through. */
enum verdict {
	VERDICT_PASS = 0,
	VERDICT_DROP_CROSS_NETWORK = 1, /* to an address of a network the sender is not on */
	VERDICT_DROP_ICC = 2,           /* between sandboxes of a network with icc disabled */
	VERDICT_DROP_INTERNAL = 3,      /* to or from outside an internal network */
	VERDICT_MAX,
};

enum network_flag {
	NETWORK_ICC_DISABLED = 1 << 0,
	NETWORK_INTERNAL = 1 << 1,
};

/* Value of the networks map, keyed by the network's index. */
struct network_info {
	enum network_flag flags; /* a set of bits */
	__be32 gateway; /* the host's address on the network */
};

/* Value of the ifaces map, keyed by the ifindex of an endpoint's host-side
 * interface in the dataplane's namespace. */
struct iface_info {
	__u32 network; /* index of the network the endpoint is on */
	__be32 addr;   /* the endpoint's address */
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
