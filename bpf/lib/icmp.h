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

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

/* The head of an ICMP error. */
struct icmp_error_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 unused;
	__be16 mtu; /* frag needed: the next hop's MTU */
};

/* icmp_reply turns the packet into an ICMP error from src to its sender,
 * and returns the redirect that sends it back where it came from; -1
 * when it cannot (an IP header with options, a spent budget), and the
 * packet is then only dropped. Its quote is the IP header and the whole
 * TCP header (a checksum the kernel may still complete lies there) or 8
 * bytes of anything else. */
static __noinline int icmp_reply(struct __sk_buff *skb, __u8 type, __u8 code, __u16 mtu, __be32 src)
{
	struct icmp_error_hdr icmp = {};
	struct iphdr ip = {}, orig;
	struct ethhdr eth;
	__u8 mac[ETH_ALEN];
	__u32 quote_len, sum;
	void *data, *end;

	if (!src || bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &orig, sizeof(orig)) < 0 || orig.ihl != 5)
		return -1;
	quote_len = sizeof(struct iphdr) + (orig.protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : 8);
	if (skb->len < ETH_HLEN + quote_len || !icmp_spend())
		return -1;
	if (bpf_skb_change_tail(skb, ETH_HLEN + quote_len, 0) < 0 ||
	    bpf_skb_adjust_room(skb, sizeof(ip) + sizeof(icmp), BPF_ADJ_ROOM_MAC, 0) < 0)
		return -1;

	/* Back where it came from: the frame's addresses swap. */
	__builtin_memcpy(mac, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth.h_dest, mac, ETH_ALEN);
	ip.version = 4;
	ip.ihl = 5;
	ip.tot_len = bpf_htons(sizeof(ip) + sizeof(icmp) + quote_len);
	ip.ttl = 64;
	ip.protocol = IPPROTO_ICMP;
	ip.saddr = src;
	ip.daddr = orig.saddr;
	ip.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&ip, sizeof(ip), 0));
	icmp.type = type;
	icmp.code = code;
	icmp.mtu = bpf_htons(mtu);

	/* The ICMP checksum covers its header and the quote, which the
	 * helpers above left in the linear part of the packet. */
	sum = bpf_csum_diff(0, 0, (__be32 *)&icmp, sizeof(icmp), 0);
	data = (void *)(long)skb->data + ETH_HLEN + sizeof(ip) + sizeof(icmp);
	end = (void *)(long)skb->data_end;
	if (orig.protocol == IPPROTO_TCP) {
		if (data + sizeof(struct iphdr) + sizeof(struct tcphdr) > end)
			return -1;
		sum = bpf_csum_diff(0, 0, data, sizeof(struct iphdr) + sizeof(struct tcphdr), sum);
	} else {
		if (data + sizeof(struct iphdr) + 8 > end)
			return -1;
		sum = bpf_csum_diff(0, 0, data, sizeof(struct iphdr) + 8, sum);
	}
	icmp.checksum = csum_fold(sum);
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &ip, sizeof(ip), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip), &icmp, sizeof(icmp), 0) < 0)
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
};

/* icmp_error_quote finds the quoted packet of an ICMP error (destination
 * unreachable, time exceeded, parameter problem) about a TCP or UDP
 * packet or an ICMP echo request; it returns -1 for anything else. */
static __always_inline int icmp_error_quote(struct __sk_buff *skb, const struct packet *p, struct icmp_quote *q)
{
	struct iphdr ip;
	__be16 ports[4];

	if (p->flow.proto != IPPROTO_ICMP || p->l4_off == 0 ||
	    (p->icmp_type != ICMP_DEST_UNREACH && p->icmp_type != ICMP_TIME_EXCEEDED &&
	     p->icmp_type != ICMP_PARAMETERPROB))
		return -1;
	__builtin_memset(q, 0, sizeof(*q));
	q->icmp_csum_off = p->l4_off + offsetof(struct icmp_error_hdr, checksum);
	q->ip_off = p->l4_off + sizeof(struct icmp_error_hdr);
	if (bpf_skb_load_bytes(skb, q->ip_off, &ip, sizeof(ip)) < 0 || ip.version != 4 || ip.ihl < 5)
		return -1;
	q->l4_off = q->ip_off + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, q->l4_off, ports, sizeof(ports)) < 0)
		return -1;
	q->flow.saddr = ip.saddr;
	q->flow.daddr = ip.daddr;
	q->flow.proto = ip.protocol;
	switch (ip.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		q->flow.sport = ports[0];
		q->flow.dport = ports[1];
		return 0;
	case IPPROTO_ICMP:
		if ((bpf_ntohs(ports[0]) >> 8) != ICMP_ECHO)
			return -1;
		q->flow.sport = ports[2]; /* the identifier */
		return 0;
	}
	return -1;
}

/* icmp_quote_rewrite_addr changes an address of the quoted IP header,
 * keeping its checksum and the error's right. */
static __always_inline int icmp_quote_rewrite_addr(struct __sk_buff *skb, const struct icmp_quote *q,
						   __u32 field, __be32 from, __be32 to)
{
	__u32 csum_off = q->ip_off + offsetof(struct iphdr, check);
	__sum16 before, after;

	if (from == to)
		return 0;
	if (bpf_skb_load_bytes(skb, csum_off, &before, sizeof(before)) < 0 ||
	    bpf_l3_csum_replace(skb, csum_off, from, to, sizeof(to)) < 0 ||
	    bpf_skb_load_bytes(skb, csum_off, &after, sizeof(after)) < 0 ||
	    bpf_skb_store_bytes(skb, q->ip_off + field, &to, sizeof(to), 0) < 0 ||
	    bpf_l4_csum_replace(skb, q->icmp_csum_off, from, to, sizeof(to)) < 0)
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
	if (icmp_quote_rewrite_addr(skb, q, offsetof(struct iphdr, saddr), q->flow.saddr, quoted->saddr) < 0 ||
	    icmp_quote_rewrite_addr(skb, q, offsetof(struct iphdr, daddr), q->flow.daddr, quoted->daddr) < 0)
		return -1;
	if (q->flow.proto == IPPROTO_ICMP)
		return icmp_quote_rewrite_port(skb, q, q->l4_off + offsetof(struct icmp_echo, id), q->flow.sport,
					       quoted->sport);
	if (icmp_quote_rewrite_port(skb, q, q->l4_off, q->flow.sport, quoted->sport) < 0)
		return -1;
	return icmp_quote_rewrite_port(skb, q, q->l4_off + 2, q->flow.dport, quoted->dport);
}
