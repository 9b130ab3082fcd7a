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
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4 /* a code of ICMP_DEST_UNREACH */
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

/* A parsed IPv4 packet. */
struct packet {
	struct flow flow;
	__u32 l4_off;   /* offset of the L4 header in the frame */
	__u8 has_ports; /* TCP, UDP or ICMP echo, not a fragment: translatable */
	__u8 icmp_request;
	__u8 tcp_flags; /* the TCP header's flag byte (FIN, SYN, RST, ACK…) */
	__u8 icmp_type; /* ICMP: the message's type */
	__u32 seq, ack_seq; /* TCP, in host order */
	/* A fragment after the first: no L4 header, its ports (when
	 * has_ports) are its first fragment's. */
	__u8 later_fragment;
	__u8 pad2[3];
};

/* How long the ports of a fragmented datagram are kept for its later
 * fragments: the kernel's reassembly timeout (ipfrag_time). */
#define FRAG_LIFETIME_NS (30 * 1000000000ULL)
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_SRC_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

/* What a frame carries, as parse_packet finds it. */
enum l3 {
	L3_IPV4,
	L3_ARP,
	L3_IPV6,
	L3_OTHER,
};

/* The head of an Ethernet/IPv4 ARP packet, up to the sender's address. */
struct arp_ipv4 {
	__be16 htype, ptype;
	__u8 hlen, plen;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__be32 spa;
} __attribute__((packed));

/* arp_sender returns the sender protocol address of an ARP packet, or 0
 * when it is too short to have one. */
static __always_inline __be32 arp_sender(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct arp_ipv4 *arp = data + ETH_HLEN;

	if ((void *)(arp + 1) > end)
		return 0;
	return arp->spa;
}

/* parse_packet fills p for an IPv4 packet and says what the frame
 * carries. It returns an int for callers to branch on, rather than a
 * pointer that clang may merge into a form the verifier rejects. */
static __noinline __attribute__((unused)) int parse_packet(struct __sk_buff *skb, struct packet *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 ihl;

	if ((void *)(eth + 1) > end)
		return L3_OTHER;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return L3_ARP;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return L3_IPV6;
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return L3_OTHER;
	__builtin_memset(p, 0, sizeof(*p));
	p->flow.saddr = ip->saddr;
	p->flow.daddr = ip->daddr;
	p->flow.proto = ip->protocol;
	if (ip->frag_off & bpf_htons(IP_OFFSET)) {
		/* A later fragment: its flow's ports came with the first. */
		struct frag_key fk = { .saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .proto = ip->protocol,
				       .ifindex = skb->ifindex };
		struct frag_ports *fp = bpf_map_lookup_elem(&frags, &fk);

		p->later_fragment = 1;
		if (fp && fp->expires > bpf_ktime_get_boot_ns()) {
			p->flow.sport = fp->sport;
			p->flow.dport = fp->dport;
			p->icmp_request = fp->icmp_request;
			p->has_ports = 1;
		}
		return L3_IPV4;
	}
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return L3_IPV4;
	p->l4_off = ETH_HLEN + ihl;

	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = data + p->l4_off;

		if ((void *)(th + 1) > end)
			return L3_IPV4;
		p->flow.sport = th->source;
		p->flow.dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		p->seq = bpf_ntohl(th->seq);
		p->ack_seq = bpf_ntohl(th->ack_seq);
		p->has_ports = 1;
	} else if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = data + p->l4_off;

		if ((void *)(uh + 1) > end)
			return L3_IPV4;
		p->flow.sport = uh->source;
		p->flow.dport = uh->dest;
		p->has_ports = 1;
	} else if (ip->protocol == IPPROTO_ICMP) {
		struct icmp_echo *ih = data + p->l4_off;

		if ((void *)(ih + 1) > end)
			return L3_IPV4;
		p->icmp_type = ih->type;
		if (ih->type == ICMP_ECHO) {
			p->flow.sport = ih->id;
			p->icmp_request = 1;
			p->has_ports = 1;
		} else if (ih->type == ICMP_ECHOREPLY) {
			p->flow.dport = ih->id;
			p->has_ports = 1;
		}
	}
	if ((ip->frag_off & bpf_htons(IP_MF)) && p->has_ports) {
		/* The first fragment: keep its ports for the ones after it. */
		struct frag_key fk = { .saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .proto = ip->protocol,
				       .ifindex = skb->ifindex };
		struct frag_ports fp = { .expires = bpf_ktime_get_boot_ns() + FRAG_LIFETIME_NS,
					 .sport = p->flow.sport, .dport = p->flow.dport, .icmp_request = p->icmp_request };

		bpf_map_update_elem(&frags, &fk, &fp, BPF_ANY);
	}
	return L3_IPV4;
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

/* is_multicast_or_broadcast: 224.0.0.0/4 and 255.255.255.255, which no
 * router forwards and which must never be masqueraded. */
static __always_inline int is_multicast_or_broadcast(__be32 addr)
{
	return (bpf_ntohl(addr) >> 28) == 0xe || addr == 0xffffffff;
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
