/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "ctx.h"
#include "addr.h"

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

/* ICMPv6 messages (RFC 4443, RFC 4861); linux/icmpv6.h has no BPF-safe
 * form either. */
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_TIME_EXCEED 3
#define ICMPV6_PARAMPROB 4
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129
#define NDISC_ROUTER_ADVERTISEMENT 134
#define NDISC_NEIGHBOUR_SOLICITATION 135
#define NDISC_NEIGHBOUR_ADVERTISEMENT 136
#define NDISC_REDIRECT 137

/* A parsed IP packet of either family. */
struct packet {
	struct flow flow;
	__u32 l4_off;   /* offset of the L4 header in the frame (0: none found) */
	__u8 has_ports; /* TCP, UDP or ICMP echo, not a fragment: translatable */
	__u8 icmp_request;
	__u8 tcp_flags; /* the TCP header's flag byte (FIN, SYN, RST, ACK…) */
	__u8 icmp_type; /* ICMP or ICMPv6: the message's type */
	__u32 seq, ack_seq; /* TCP, in host order */
	/* A fragment after the first: no L4 header, its ports (when
	 * has_ports) are its first fragment's. */
	__u8 later_fragment;
	__u8 v6; /* an IPv6 packet: the flow's addresses are not v4-mapped */
	__u8 pad2[2];
};

/* How long the ports of a fragmented datagram are kept for its later
 * fragments: the kernel's reassembly timeout (ipfrag_time). */
#define FRAG_LIFETIME_NS (30 * 1000000000ULL)
#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define IP6_MF 0x0001
#define IP6_OFFSET 0xfff8

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Where the parts of an IP header sit in the frame. The IPv4 checksum
 * has no IPv6 counterpart; the IPv6 hop limit has no checksum. */
#define IP_CSUM_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define IP_TTL_OFF (ETH_HLEN + offsetof(struct iphdr, ttl))
#define IP6_HOP_LIMIT_OFF (ETH_HLEN + offsetof(struct ipv6hdr, hop_limit))

static __always_inline __u32 ip_saddr_off(const struct packet *p)
{
	return ETH_HLEN + (p->v6 ? offsetof(struct ipv6hdr, saddr) : offsetof(struct iphdr, saddr));
}

static __always_inline __u32 ip_daddr_off(const struct packet *p)
{
	return ETH_HLEN + (p->v6 ? offsetof(struct ipv6hdr, daddr) : offsetof(struct iphdr, daddr));
}

static __always_inline int is_icmp(__u8 proto)
{
	return proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
}

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
static __always_inline __be32 arp_sender(struct ctx_buff *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct arp_ipv4 *arp = data + ETH_HLEN;

	if ((void *)(arp + 1) > end)
		return 0;
	return arp->spa;
}

/* frag_key_of is the key of the datagram a fragment belongs to. */
static __always_inline void frag_key_of(struct frag_key *fk, const struct packet *p, __be32 id, __u32 ifindex)
{
	__builtin_memset(fk, 0, sizeof(*fk));
	fk->saddr = p->flow.saddr;
	fk->daddr = p->flow.daddr;
	fk->id = id;
	fk->proto = p->flow.proto;
	fk->ifindex = ifindex;
}

/* frag_later gives a fragment after the first the ports its first
 * fragment carried, when that was seen. */
static __always_inline void frag_later(struct ctx_buff *ctx, struct packet *p, __be32 id)
{
	struct frag_key fk;
	struct frag_ports *fp;

	frag_key_of(&fk, p, id, ctx_ifindex(ctx));
	fp = bpf_map_lookup_elem(&frags, &fk);
	p->later_fragment = 1;
	if (fp && fp->expires > bpf_ktime_get_boot_ns()) {
		p->flow.sport = fp->sport;
		p->flow.dport = fp->dport;
		p->icmp_request = fp->icmp_request;
		p->has_ports = 1;
	}
}

/* frag_first keeps the ports of a datagram's first fragment for the ones
 * after it. */
static __always_inline void frag_first(struct ctx_buff *ctx, const struct packet *p, __be32 id)
{
	struct frag_key fk;
	struct frag_ports fp = { .expires = bpf_ktime_get_boot_ns() + FRAG_LIFETIME_NS,
				 .sport = p->flow.sport, .dport = p->flow.dport, .icmp_request = p->icmp_request };

	frag_key_of(&fk, p, id, ctx_ifindex(ctx));
	bpf_map_update_elem(&frags, &fk, &fp, BPF_ANY);
}

/* parse_l4 reads the ports (or echo identifier) and TCP state of the L4
 * header at p->l4_off. */
static __always_inline void parse_l4(struct ctx_buff *ctx, struct packet *p)
{
	__u8 proto = p->flow.proto;

	if (proto == IPPROTO_TCP) {
		struct tcphdr th;

		if (ctx_load_bytes(ctx, p->l4_off, &th, sizeof(th)) < 0)
			return;
		p->flow.sport = th.source;
		p->flow.dport = th.dest;
		p->tcp_flags = ((__u8 *)&th)[13];
		p->seq = bpf_ntohl(th.seq);
		p->ack_seq = bpf_ntohl(th.ack_seq);
		p->has_ports = 1;
	} else if (proto == IPPROTO_UDP) {
		struct udphdr uh;

		if (ctx_load_bytes(ctx, p->l4_off, &uh, sizeof(uh)) < 0)
			return;
		p->flow.sport = uh.source;
		p->flow.dport = uh.dest;
		p->has_ports = 1;
	} else if (is_icmp(proto)) {
		struct icmp_echo ih;
		__u8 request = proto == IPPROTO_ICMP ? ICMP_ECHO : ICMPV6_ECHO_REQUEST;
		__u8 reply = proto == IPPROTO_ICMP ? ICMP_ECHOREPLY : ICMPV6_ECHO_REPLY;

		if (ctx_load_bytes(ctx, p->l4_off, &ih, sizeof(ih)) < 0)
			return;
		p->icmp_type = ih.type;
		if (ih.type == request) {
			p->flow.sport = ih.id;
			p->icmp_request = 1;
			p->has_ports = 1;
		} else if (ih.type == reply) {
			p->flow.dport = ih.id;
			p->has_ports = 1;
		}
	}
}

static __always_inline int parse_ipv4(struct ctx_buff *ctx, struct packet *p)
{
	struct iphdr ip;
	__u16 frag;

	if (ctx_load_bytes(ctx, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return L3_OTHER;
	addr_set_v4(&p->flow.saddr, ip.saddr);
	addr_set_v4(&p->flow.daddr, ip.daddr);
	p->flow.proto = ip.protocol;
	frag = bpf_ntohs(ip.frag_off);
	if (frag & IP_OFFSET) {
		frag_later(ctx, p, ip.id);
		return L3_IPV4;
	}
	if (ip.ihl < 5)
		return L3_IPV4;
	p->l4_off = ETH_HLEN + ip.ihl * 4;
	parse_l4(ctx, p);
	if ((frag & IP_MF) && p->has_ports)
		frag_first(ctx, p, ip.id);
	return L3_IPV4;
}

/* The extension headers a packet may carry before its L4 header that are
 * walked; a packet with more is left untranslated (has_ports unset). */
#define IPV6_EXT_MAX 4

struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

/* parse_ipv6 fills p for an IPv6 packet. A header cut short leaves the
 * addresses zero, which no source validation accepts. */
static __always_inline int parse_ipv6(struct ctx_buff *ctx, struct packet *p)
{
	struct ipv6hdr ip6;
	struct ipv6_frag_hdr fh;
	__u32 off = ETH_HLEN + sizeof(ip6);
	__u16 frag = 0;
	__be32 frag_id = 0;
	__u8 next;

	p->v6 = 1;
	if (ctx_load_bytes(ctx, ETH_HLEN, &ip6, sizeof(ip6)) < 0)
		return L3_IPV6;
	__builtin_memcpy(p->flow.saddr.b, &ip6.saddr, 16);
	__builtin_memcpy(p->flow.daddr.b, &ip6.daddr, 16);
	next = ip6.nexthdr;
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		__u8 h[2];

		if (next == IPPROTO_FRAGMENT) {
			if (ctx_load_bytes(ctx, off, &fh, sizeof(fh)) < 0)
				return L3_IPV6;
			next = fh.nexthdr;
			frag = bpf_ntohs(fh.frag_off);
			frag_id = fh.id;
			off += sizeof(fh);
			continue;
		}
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING && next != IPPROTO_DSTOPTS)
			break;
		if (ctx_load_bytes(ctx, off, h, sizeof(h)) < 0)
			return L3_IPV6;
		next = h[0];
		off += (h[1] + 1) * 8;
	}
	p->flow.proto = next;
	if (next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS || next == IPPROTO_FRAGMENT)
		return L3_IPV6;
	if (frag & IP6_OFFSET) {
		frag_later(ctx, p, frag_id);
		return L3_IPV6;
	}
	p->l4_off = off;
	parse_l4(ctx, p);
	if ((frag & IP6_MF) && p->has_ports)
		frag_first(ctx, p, frag_id);
	return L3_IPV6;
}

/* parse_packet fills p for an IP packet of either family and says what
 * the frame carries. It returns an int for callers to branch on, rather
 * than a pointer that clang may merge into a form the verifier rejects. */
static __noinline __attribute__((unused)) int parse_packet(struct ctx_buff *ctx, struct packet *p)
{
	__be16 proto;

	__builtin_memset(p, 0, sizeof(*p));
	if (ctx_load_bytes(ctx, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) < 0)
		return L3_OTHER;
	if (proto == bpf_htons(ETH_P_ARP))
		return L3_ARP;
	if (proto == bpf_htons(ETH_P_IPV6))
		return parse_ipv6(ctx, p);
	if (proto == bpf_htons(ETH_P_IP))
		return parse_ipv4(ctx, p);
	return L3_OTHER;
}

/* v4_mapped_v6 reports an IPv6 packet with an IPv4 address written
 * v4-mapped, which never appears on the wire: it would match IPv4
 * publications and IPv4 flows' entries, whose keys write IPv4 so. */
static __always_inline int v4_mapped_v6(const struct packet *p)
{
	return p->v6 && (addr_is_v4(&p->flow.saddr) || addr_is_v4(&p->flow.daddr));
}
