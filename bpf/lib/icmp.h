/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP errors the datapath sends where it routes a packet itself and the
 * kernel never sees it: time exceeded when a TTL runs out, frag needed
 * when a packet is too big for the interface it would leave by. The
 * packet becomes its own error, quoting its IP header and the head of its
 * L4 header, and goes back out of the interface it came in on. */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parse.h"
#include "conntrack.h"

/* The budget: at most ICMP_BURST errors at once per CPU, refilled at one
 * per ICMP_INTERVAL_NS, the kernel's defaults (icmp_msgs_burst,
 * icmp_msgs_per_sec). */
#define ICMP_BURST 50
#define ICMP_INTERVAL_NS 1000000ULL

static __always_inline int icmp_spend(void)
{
	__u32 zero = 0;
	struct icmp_budget *b = bpf_map_lookup_elem(&icmp_budget, &zero);
	__u64 now = ct_now();

	if (!b)
		return 0;
	if (now - b->last >= ICMP_INTERVAL_NS) {
		__u64 refill = (now - b->last) / ICMP_INTERVAL_NS;

		b->tokens = refill + b->tokens > ICMP_BURST ? ICMP_BURST : b->tokens + refill;
		b->last = now;
	}
	if (b->tokens == 0)
		return 0;
	b->tokens--;
	return 1;
}

/* The head of an ICMP or ICMPv6 error. */
struct icmp_error_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	union {
		struct {
			__be16 unused;
			__be16 mtu; /* ICMP frag needed: the next hop's MTU */
		};
		__be32 mtu6; /* ICMPv6 packet too big */
	};
};

/* The errors the datapath sends, in either family. */
enum icmp_error {
	ICMP_ERROR_TOO_BIG,   /* frag needed; packet too big */
	ICMP_ERROR_HOP_LIMIT, /* time exceeded in transit */
};

/* icmp_quote_sum adds the quote of an error built in place (quote_len
 * bytes after its headers, at off) to sum. */
static __always_inline __s64 icmp_quote_sum(struct __sk_buff *skb, __u32 off, __u32 quote_len, __s64 sum)
{
	void *data = (void *)(long)skb->data + off;
	void *end = (void *)(long)skb->data_end;

	/* The helpers that built the error left the quote in the linear
	 * part; its length takes one of a few values, each proved in bounds. */
	switch (quote_len) {
	case sizeof(struct iphdr) + sizeof(struct tcphdr):
		if (data + sizeof(struct iphdr) + sizeof(struct tcphdr) > end)
			return -1;
		return bpf_csum_diff(0, 0, data, sizeof(struct iphdr) + sizeof(struct tcphdr), sum);
	case sizeof(struct iphdr) + 8:
		if (data + sizeof(struct iphdr) + 8 > end)
			return -1;
		return bpf_csum_diff(0, 0, data, sizeof(struct iphdr) + 8, sum);
	case sizeof(struct ipv6hdr) + sizeof(struct tcphdr):
		if (data + sizeof(struct ipv6hdr) + sizeof(struct tcphdr) > end)
			return -1;
		return bpf_csum_diff(0, 0, data, sizeof(struct ipv6hdr) + sizeof(struct tcphdr), sum);
	case sizeof(struct ipv6hdr) + 8:
		if (data + sizeof(struct ipv6hdr) + 8 > end)
			return -1;
		return bpf_csum_diff(0, 0, data, sizeof(struct ipv6hdr) + 8, sum);
	}
	return -1;
}

/* icmp_reply turns the packet into an ICMP (or, for IPv6, ICMPv6) error
 * from src to its sender, and returns the redirect that sends it back
 * where it came from; -1 when it cannot (an IPv4 header with options, a
 * spent budget, no src), and the packet is then only dropped. Its quote
 * is the IP header and the whole TCP header (a checksum the kernel may
 * still complete lies there) or 8 bytes of anything else. */
__verified_alone int icmp_reply(struct __sk_buff *skb, enum icmp_error kind, __u32 mtu, const union addr *src)
{
	struct icmp_error_hdr icmp = {};
	struct ethhdr eth;
	union {
		struct iphdr ip;
		struct ipv6hdr ip6;
	} hdr = {};
	union addr to;
	__u32 ip_len, quote_len;
	__u8 proto = 0;
	__s64 sum = 0;
	int v6;

	if (!src)
		return -1;

	if (!src || bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return -1;
	v6 = eth.h_proto == bpf_htons(ETH_P_IPV6);
	if (v6) {
		ip_len = sizeof(struct ipv6hdr);
		if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &proto, 1) < 0 ||
		    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, saddr), to.b, sizeof(to)) < 0)
			return -1;
	} else {
		ip_len = sizeof(struct iphdr);
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &hdr.ip, sizeof(hdr.ip)) < 0 || hdr.ip.ihl != 5)
			return -1;
		proto = hdr.ip.protocol;
		addr_set_v4(&to, hdr.ip.saddr);
	}
	quote_len = ip_len + (proto == IPPROTO_TCP ? sizeof(struct tcphdr) : 8);
	if (skb->len < ETH_HLEN + quote_len || !icmp_spend())
		return -1;
	if (bpf_skb_change_tail(skb, ETH_HLEN + quote_len, 0) < 0 ||
	    bpf_skb_adjust_room(skb, ip_len + sizeof(icmp), BPF_ADJ_ROOM_MAC, 0) < 0)
		return -1;

	/* Back where it came from: the frame's addresses swap. */
	if (bpf_skb_store_bytes(skb, 0, eth.h_source, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, eth.h_dest, ETH_ALEN, 0) < 0)
		return -1;
	__builtin_memset(&hdr, 0, sizeof(hdr));
	if (v6) {
		/* The pseudo-header the ICMPv6 checksum also covers (RFC 8200
		 * 8.1): both addresses, the length and the next header. */
		__be32 tail[2] = { bpf_htonl(sizeof(icmp) + quote_len), bpf_htonl(IPPROTO_ICMPV6) };

		hdr.ip6.version = 6;
		hdr.ip6.payload_len = bpf_htons(sizeof(icmp) + quote_len);
		hdr.ip6.nexthdr = IPPROTO_ICMPV6;
		hdr.ip6.hop_limit = 64;
		__builtin_memcpy(&hdr.ip6.saddr, src->b, sizeof(hdr.ip6.saddr));
		__builtin_memcpy(&hdr.ip6.daddr, to.b, sizeof(hdr.ip6.daddr));
		icmp.type = kind == ICMP_ERROR_TOO_BIG ? ICMPV6_PKT_TOOBIG : ICMPV6_TIME_EXCEED;
		if (kind == ICMP_ERROR_TOO_BIG)
			icmp.mtu6 = bpf_htonl(mtu);
		sum = bpf_csum_diff(0, 0, (__be32 *)&hdr.ip6.saddr, 2 * sizeof(union addr), 0);
		if (sum >= 0)
			sum = bpf_csum_diff(0, 0, tail, sizeof(tail), sum);
	} else {
		hdr.ip.version = 4;
		hdr.ip.ihl = 5;
		hdr.ip.tot_len = bpf_htons(sizeof(hdr.ip) + sizeof(icmp) + quote_len);
		hdr.ip.ttl = 64;
		hdr.ip.protocol = IPPROTO_ICMP;
		hdr.ip.saddr = src->w[3];
		hdr.ip.daddr = to.w[3];
		hdr.ip.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&hdr.ip, sizeof(hdr.ip), 0));
		icmp.type = kind == ICMP_ERROR_TOO_BIG ? ICMP_DEST_UNREACH : ICMP_TIME_EXCEEDED;
		icmp.code = kind == ICMP_ERROR_TOO_BIG ? ICMP_FRAG_NEEDED : 0;
		if (kind == ICMP_ERROR_TOO_BIG)
			icmp.mtu = bpf_htons(mtu);
	}
	if (sum < 0 || bpf_skb_store_bytes(skb, ETH_HLEN, &hdr, ip_len, 0) < 0)
		return -1;
	/* The checksum covers the error's header and the quote (and, for
	 * ICMPv6, the pseudo-header). */
	sum = bpf_csum_diff(0, 0, (__be32 *)&icmp, sizeof(icmp), sum);
	if (sum < 0)
		return -1;
	sum = icmp_quote_sum(skb, ETH_HLEN + ip_len + sizeof(icmp), quote_len, sum);
	if (sum < 0)
		return -1;
	icmp.checksum = csum_fold(sum);
	if (bpf_skb_store_bytes(skb, ETH_HLEN + ip_len, &icmp, sizeof(icmp), 0) < 0)
		return -1;
	return bpf_redirect(skb->ifindex, 0);
}

/* An ICMP error's quote: the offending packet's flow, and where its parts
 * sit in the frame. */
struct icmp_quote {
	struct flow flow;   /* the quoted packet's, as parse_packet would give it */
	__u32 ip_off;       /* its IP header */
	__u32 l4_off;       /* its L4 header */
	__u32 icmp_csum_off; /* the error's own checksum */
	__u8 v6;
};

/* is_icmp_error reports whether packet p is an ICMP or ICMPv6 error that
 * quotes the packet it is about. */
static __always_inline int is_icmp_error(const struct packet *p)
{
	if (p->l4_off == 0)
		return 0;
	if (p->flow.proto == IPPROTO_ICMP)
		return p->icmp_type == ICMP_DEST_UNREACH || p->icmp_type == ICMP_TIME_EXCEEDED ||
		       p->icmp_type == ICMP_PARAMETERPROB;
	if (p->flow.proto == IPPROTO_ICMPV6)
		return p->icmp_type == ICMPV6_DEST_UNREACH || p->icmp_type == ICMPV6_PKT_TOOBIG ||
		       p->icmp_type == ICMPV6_TIME_EXCEED || p->icmp_type == ICMPV6_PARAMPROB;
	return 0;
}

/* icmp_error_quote finds the quoted packet of an ICMP error (destination
 * unreachable, time exceeded, parameter problem; packet too big) about a
 * TCP or UDP packet or an echo request of the error's family; it returns
 * -1 for anything else. A quoted IPv6 packet with extension headers is
 * not followed. */
static __always_inline int icmp_error_quote(struct __sk_buff *skb, const struct packet *p, struct icmp_quote *q)
{
	__be16 ports[4];
	__u8 echo;

	if (!is_icmp_error(p))
		return -1;
	__builtin_memset(q, 0, sizeof(*q));
	q->icmp_csum_off = p->l4_off + offsetof(struct icmp_error_hdr, checksum);
	q->ip_off = p->l4_off + sizeof(struct icmp_error_hdr);
	if (p->v6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, q->ip_off, &ip6, sizeof(ip6)) < 0 || ip6.version != 6)
			return -1;
		q->v6 = 1;
		q->l4_off = q->ip_off + sizeof(ip6);
		__builtin_memcpy(q->flow.saddr.b, &ip6.saddr, 16);
		__builtin_memcpy(q->flow.daddr.b, &ip6.daddr, 16);
		q->flow.proto = ip6.nexthdr;
		echo = ICMPV6_ECHO_REQUEST;
	} else {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, q->ip_off, &ip, sizeof(ip)) < 0 || ip.version != 4 || ip.ihl < 5)
			return -1;
		q->l4_off = q->ip_off + ip.ihl * 4;
		addr_set_v4(&q->flow.saddr, ip.saddr);
		addr_set_v4(&q->flow.daddr, ip.daddr);
		q->flow.proto = ip.protocol;
		echo = ICMP_ECHO;
	}
	if (bpf_skb_load_bytes(skb, q->l4_off, ports, sizeof(ports)) < 0)
		return -1;
	switch (q->flow.proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		q->flow.sport = ports[0];
		q->flow.dport = ports[1];
		return 0;
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6:
		if (q->flow.proto != p->flow.proto || (bpf_ntohs(ports[0]) >> 8) != echo)
			return -1;
		q->flow.sport = ports[2]; /* the identifier */
		return 0;
	}
	return -1;
}

/* icmp_quote_rewrite_addr changes an address of the quoted IP header,
 * keeping its checksum (IPv4's) and the error's right. */
static __always_inline int icmp_quote_rewrite_addr(struct __sk_buff *skb, const struct icmp_quote *q,
						   int dst, const union addr *from, const union addr *to)
{
	if (addr_eq(from, to))
		return 0;
	if (q->v6) {
		__u32 off = q->ip_off + (dst ? offsetof(struct ipv6hdr, daddr) : offsetof(struct ipv6hdr, saddr));
		__s64 diff = bpf_csum_diff((__be32 *)from->w, sizeof(*from), (__be32 *)to->w, sizeof(*to), 0);

		if (diff < 0 || bpf_skb_store_bytes(skb, off, to->b, sizeof(*to), 0) < 0)
			return -1;
		return bpf_l4_csum_replace(skb, q->icmp_csum_off, 0, diff, 0);
	}
	__u32 csum_off = q->ip_off + offsetof(struct iphdr, check);
	__u32 off = q->ip_off + (dst ? offsetof(struct iphdr, daddr) : offsetof(struct iphdr, saddr));
	__be32 f4 = from->w[3], t4 = to->w[3];
	__sum16 before, after;

	if (bpf_skb_load_bytes(skb, csum_off, &before, sizeof(before)) < 0 ||
	    bpf_l3_csum_replace(skb, csum_off, f4, t4, sizeof(t4)) < 0 ||
	    bpf_skb_load_bytes(skb, csum_off, &after, sizeof(after)) < 0 ||
	    bpf_skb_store_bytes(skb, off, &t4, sizeof(t4), 0) < 0 ||
	    bpf_l4_csum_replace(skb, q->icmp_csum_off, f4, t4, sizeof(t4)) < 0)
		return -1;
	return bpf_l4_csum_replace(skb, q->icmp_csum_off, before, after, sizeof(after));
}

/* icmp_quote_rewrite_port changes a port (or echo identifier) of the
 * quoted packet. Its own L4 checksum is left as it was: nobody checks a
 * quote's. */
static __always_inline int icmp_quote_rewrite_port(struct __sk_buff *skb, const struct icmp_quote *q,
						   __u32 off, __be16 from, __be16 to)
{
	if (from == to)
		return 0;
	if (bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0) < 0)
		return -1;
	return bpf_l4_csum_replace(skb, q->icmp_csum_off, from, to, sizeof(to));
}

/* icmp_quote_rewrite makes the quoted packet read as quoted, the flow it
 * now belongs to. */
static __always_inline int icmp_quote_rewrite(struct __sk_buff *skb, const struct icmp_quote *q,
					      const struct flow *quoted)
{
	if (addr_is_v4(&quoted->saddr) == q->v6 || addr_is_v4(&quoted->daddr) == q->v6)
		return -1; /* no flow changes family yet */
	if (icmp_quote_rewrite_addr(skb, q, 0, &q->flow.saddr, &quoted->saddr) < 0 ||
	    icmp_quote_rewrite_addr(skb, q, 1, &q->flow.daddr, &quoted->daddr) < 0)
		return -1;
	if (is_icmp(q->flow.proto))
		return icmp_quote_rewrite_port(skb, q, q->l4_off + offsetof(struct icmp_echo, id), q->flow.sport,
					       quoted->sport);
	if (icmp_quote_rewrite_port(skb, q, q->l4_off, q->flow.sport, quoted->sport) < 0)
		return -1;
	return icmp_quote_rewrite_port(skb, q, q->l4_off + 2, q->flow.dport, quoted->dport);
}
