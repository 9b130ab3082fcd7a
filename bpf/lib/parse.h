/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

/* The head of an ICMP echo request or reply (RFC 792). linux/icmp.h would
 * pull in the C library's socket headers, which BPF cannot build with. */
struct icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

/* A parsed IPv4 packet. */
struct packet {
	struct flow flow;
	__u32 l4_off;   /* offset of the L4 header in the frame */
	__u8 has_ports; /* TCP, UDP or ICMP echo, not a fragment: translatable */
	__u8 icmp_request;
};

#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SRC_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

/* parse_packet fills p and returns 0 for an IPv4 packet, -1 otherwise. It
 * returns an int for callers to branch on, rather than a pointer that clang
 * may merge into a form the verifier rejects. */
static __always_inline int parse_packet(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 ihl;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	__builtin_memset(p, 0, sizeof(*p));
	p->flow.saddr = ip->saddr;
	p->flow.daddr = ip->daddr;
	p->flow.proto = ip->protocol;
	if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset: no ports here */
		return 0;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return 0;
	p->l4_off = ETH_HLEN + ihl;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = data + p->l4_off;

		if ((void *)(th + 1) > end)
			return 0;
		p->flow.sport = th->source;
		p->flow.dport = th->dest;
		p->has_ports = 1;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = data + p->l4_off;

		if ((void *)(uh + 1) > end)
			return 0;
		p->flow.sport = uh->source;
		p->flow.dport = uh->dest;
		p->has_ports = 1;
	} else if (ip->protocol == IPPROTO_ICMP) {
		struct icmp_echo *ih = data + p->l4_off;

		if ((void *)(ih + 1) > end)
			return 0;
		if (ih->type == ICMP_ECHO) {
			p->flow.sport = ih->id;
			p->icmp_request = 1;
			p->has_ports = 1;
		} else if (ih->type == ICMP_ECHOREPLY) {
			p->flow.dport = ih->id;
			p->has_ports = 1;
		}
	}
	return 0;
}

/* network_of returns the index of the network whose subnet holds addr. */
static __always_inline __u32 *network_of(__be32 addr)
{
	struct subnet_key key = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(&subnets, &key);
}

static __always_inline int is_host_addr(__be32 addr)
{
	return bpf_map_lookup_elem(&host_addrs, &addr) != NULL;
}

static __always_inline int is_loopback(__be32 addr)
{
	return (bpf_ntohl(addr) >> 24) == 127;
}

/* published finds where a host address and port lead: the entry for that
 * address, else the one for every address of the host. */
static __always_inline struct publication *published(__be32 addr, __be16 port, __u8 proto)
{
	struct publication_key key = { .addr = addr, .port = port, .proto = proto };
	struct publication *pub = bpf_map_lookup_elem(&publications, &key);

	if (pub)
		return pub;
	key.addr = 0;
	return bpf_map_lookup_elem(&publications, &key);
}
