/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding on TC: delivering a translated packet into an endpoint or
 * along the host's routes, as a router would (TTL, MTU, ICMP errors),
 * translating known flows and ICMP errors about them, translating and
 * delivering new flows (to a publication: dnat_published; out through an
 * uplink: masquerade, which finds the uplink by the route), and changing
 * a flow's family. Only TC programs forward this way: XDP's fast path
 * (uplink_xdp.c) hands everything but the plainest delivery to them. */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "nat.h"
#include "icmp.h"
#include "ratelimit.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
/* rewrite_family turns a TCP or UDP packet into the other family, of
 * flow to, with hop limit (or TTL) hops, as RFC 7915 translates headers:
 * for an IPv6 client of an IPv4-only sandbox, and the sandbox's replies.
 * The L4 checksum follows the change of pseudo-header. IPv4 options, IPv6
 * extension headers, fragments and UDP without a checksum (IPv6 requires
 * one) are not translated: it returns -1. A GSO packet longer than 64 KiB
 * (BIG TCP) says 0 in its length field, in either family: its length is
 * the packet's, and it says 0 again in the other family's header. */
__verified_alone int rewrite_family(struct __sk_buff *skb, const struct packet *p, const struct flow *to, __u8 hops)
{
	__u8 proto;
	__u32 old_l3, new_l3, csum, l4_len;
	__u16 udp_csum = 1;
	union {
		struct iphdr ip;
		struct ipv6hdr ip6;
	} hdr = {};
	__be16 eth_proto;
	__s64 diff;

	if (!p || !to)
		return -1;
	proto = p->flow.proto;
	old_l3 = p->v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	new_l3 = p->v6 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr);
	csum = proto == IPPROTO_TCP ? offsetof(struct tcphdr, check) : offsetof(struct udphdr, check);
	if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || p->later_fragment || p->l4_off != ETH_HLEN + old_l3)
		return -1;
	if (p->v6) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &hdr.ip6, sizeof(hdr.ip6)) < 0)
			return -1;
		l4_len = bpf_ntohs(hdr.ip6.payload_len);
	} else {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &hdr.ip, sizeof(hdr.ip)) < 0 ||
		    (hdr.ip.frag_off & bpf_htons(IP_MF | IP_OFFSET)))
			return -1;
		l4_len = bpf_ntohs(hdr.ip.tot_len);
		if (l4_len)
			l4_len -= sizeof(struct iphdr);
	}
	if (!l4_len) {
		/* Only a GSO packet may leave its length to the skb. */
		if (!skb->gso_size || skb->len < p->l4_off)
			return -1;
		l4_len = skb->len - p->l4_off;
	}
	if (proto == IPPROTO_UDP && bpf_skb_load_bytes(skb, p->l4_off + csum, &udp_csum, sizeof(udp_csum)) < 0)
		return -1;
	if (!udp_csum)
		return -1;
	/* Both pseudo-headers hold the length and protocol alike: only the
	 * addresses differ. */
	if (p->v6)
		diff = bpf_csum_diff((__be32 *)p->flow.saddr.w, 2 * sizeof(union addr), (__be32 *)&to->saddr.w[3],
				     sizeof(__be32), 0);
	else
		diff = bpf_csum_diff((__be32 *)&p->flow.saddr.w[3], sizeof(__be32), (__be32 *)to->saddr.w,
				     2 * sizeof(union addr), 0);
	/* The pair of addresses is read from one buffer: the flow's daddr
	 * follows its saddr, and the IPv4 ones are added apart. */
	if (p->v6 && diff >= 0)
		diff = bpf_csum_diff(0, 0, (__be32 *)&to->daddr.w[3], sizeof(__be32), diff);
	else if (!p->v6 && diff >= 0)
		diff = bpf_csum_diff((__be32 *)&p->flow.daddr.w[3], sizeof(__be32), 0, 0, diff);
	if (diff < 0)
		return -1;

	eth_proto = p->v6 ? bpf_htons(ETH_P_IP) : bpf_htons(ETH_P_IPV6);
	if (bpf_skb_change_proto(skb, eth_proto, 0) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &eth_proto, sizeof(eth_proto), 0) < 0)
		return -1;
	if (p->v6) {
		__u8 tos = (hdr.ip6.priority << 4) | (hdr.ip6.flow_lbl[0] >> 4);

		__builtin_memset(&hdr, 0, sizeof(hdr));
		hdr.ip.version = 4;
		hdr.ip.ihl = 5;
		hdr.ip.tos = tos;
		hdr.ip.tot_len = l4_len > 0xffff - sizeof(struct iphdr) ? 0 : bpf_htons(sizeof(struct iphdr) + l4_len);
		hdr.ip.frag_off = bpf_htons(0x4000); /* don't fragment: path MTU discovery stays IPv6's */
		hdr.ip.ttl = hops;
		hdr.ip.protocol = proto;
		hdr.ip.saddr = to->saddr.w[3];
		hdr.ip.daddr = to->daddr.w[3];
		hdr.ip.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&hdr.ip, sizeof(hdr.ip), 0));
	} else {
		__u8 tos = hdr.ip.tos;

		__builtin_memset(&hdr, 0, sizeof(hdr));
		hdr.ip6.version = 6;
		hdr.ip6.priority = tos >> 4;
		hdr.ip6.flow_lbl[0] = tos << 4;
		hdr.ip6.payload_len = l4_len > 0xffff ? 0 : bpf_htons(l4_len);
		hdr.ip6.nexthdr = proto;
		hdr.ip6.hop_limit = hops;
		__builtin_memcpy(&hdr.ip6.saddr, to->saddr.b, sizeof(hdr.ip6.saddr));
		__builtin_memcpy(&hdr.ip6.daddr, to->daddr.b, sizeof(hdr.ip6.daddr));
	}
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &hdr, new_l3, 0) < 0)
		return -1;
	__u32 l4 = ETH_HLEN + new_l3;
	if (bpf_l4_csum_replace(skb, l4 + csum, 0, diff,
				BPF_F_PSEUDO_HDR | (proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0)) < 0)
		return -1;
	if (store_port(skb, proto, l4 + csum, l4, p->flow.sport, to->sport) < 0)
		return -1;
	return store_port(skb, proto, l4 + csum, l4 + 2, p->flow.dport, to->dport);
}

/* deliver_to_endpoint puts the packet straight into an endpoint's
 * namespace, past the bridge and the host's stack. */
static __always_inline int deliver_to_endpoint(struct __sk_buff *skb, const struct endpoint_info *ep)
{
	if (endpoint_frame(skb, ep) < 0)
		return -1;
	return bpf_redirect_peer(ep->ifindex, 0);
}

/* fib_route looks up where a packet from saddr to daddr (one family)
 * leaves the host. */
static __always_inline int fib_route(struct __sk_buff *skb, const union addr *saddr, const union addr *daddr,
				     struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	if (addr_is_v4(daddr)) {
		fib->family = AF_INET;
		fib->ipv4_src = saddr->w[3];
		fib->ipv4_dst = daddr->w[3];
	} else {
		fib->family = AF_INET6;
		__builtin_memcpy(fib->ipv6_src, saddr->w, sizeof(fib->ipv6_src));
		__builtin_memcpy(fib->ipv6_dst, daddr->w, sizeof(fib->ipv6_dst));
	}
	fib->ifindex = skb->ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* redirect_routed sends a packet out of the interface fib_route found. */
static __always_inline int redirect_routed(struct __sk_buff *skb, int rc, struct bpf_fib_lookup *fib)
{
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = { .nh_family = fib->family };

		if (fib->family == AF_INET)
			nh.ipv4_nh = fib->ipv4_dst;
		else
			__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, sizeof(nh.ipv6_nh));
		return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
	}
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(fib->ifindex, 0);
}

/* deliver sends a packet of a translated flow on, rewritten to flow to:
 * into the endpoint it is now addressed to, else along the host's routes;
 * what the host itself should receive goes up its stack. Forwarding is a routed hop: the TTL goes down, and a
 * packet whose TTL runs out, or that is too big for the interface it
 * would leave by, is answered with an ICMP error from err_src (0: none)
 * instead. Both are decided before the rewrite, so the error quotes what
 * its sender sent and reaches it. */
static __noinline int deliver(struct __sk_buff *skb, const struct packet *p, enum program prog,
				   enum verdict v, const struct flow *to, const union addr *err_src)
{
	struct endpoint_info *ep = bpf_map_lookup_elem(&endpoints, &to->daddr);
	__u32 zero = 0;
	struct bpf_fib_lookup *fib = bpf_map_lookup_elem(&fib_scratch, &zero);
	int rc = BPF_FIB_LKUP_RET_SUCCESS, err, v6 = !addr_is_v4(&to->daddr);
	/* An IPv4 packet that leaves as IPv6 grows by the difference of the
	 * headers: the route's MTU less that is what its sender may send. */
	__u32 grow = !p->v6 && v6 ? sizeof(struct ipv6hdr) - sizeof(struct iphdr) : 0, mtu = 0;
	/* For the monitor: the flow as it came in, which the rewrite hides. */
	const struct flow *before = &p->flow;

	if (!fib)
		return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
	if (ep && over_rate(skb, ep->ifindex, RATE_INGRESS))
		return drop(skb, prog, VERDICT_DROP_RATE_LIMIT);
	if (!ep) {
		/* The lookup also checks the packet (GSO segments included)
		 * against the MTU of the interface it would leave by. */
		rc = fib_route(skb, &to->saddr, &to->daddr, fib);
		if (rc == BPF_FIB_LKUP_RET_NOT_FWDED && is_host_addr(&to->daddr)) {
			/* NOT_FWDED means local, or no route at all: only a host address is local. */
			if (rewrite(skb, p, to) < 0)
				return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
			count_flow(skb, prog, v, MONITOR_TRACE, before, to);
			return TC_ACT_UNSPEC;
		}
		if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
			mtu = fib->mtu_result;
			goto too_big;
		}
		if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
			return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
		/* The FIB lets GSO packets through whatever their segments'
		 * size, and checks nothing without a neighbour: check the
		 * segments, which would otherwise leave oversized. A GSO packet
		 * that grows has its segments shrunk by the kernel
		 * (bpf_skb_change_proto); any other is checked as it will be. */
		if (bpf_check_mtu(skb, fib->ifindex, &mtu, 0, BPF_MTU_CHK_SEGS) != BPF_MTU_CHK_RET_SUCCESS)
			goto too_big;
		mtu = 0; /* an input other than 0 would be the length to check */
		if (grow && !skb->gso_size && bpf_check_mtu(skb, fib->ifindex, &mtu, grow, 0) != BPF_MTU_CHK_RET_SUCCESS)
			goto too_big;
	}
	/* The packet is still of the family it came in with. */
	int in_v6 = p->v6;
	__u16 ttl_word;
	__u8 hops = hop_limit(skb, in_v6, &ttl_word);
	if (hops <= 1) {
		count_flow(skb, prog, VERDICT_DROP_TTL_EXCEEDED, MONITOR_DROP, before, to);
		err = icmp_reply(skb, ICMP_ERROR_HOP_LIMIT, 0, err_src);
		return err < 0 ? TC_ACT_SHOT : err;
	}
	if (in_v6 != v6)
		err = rewrite_family(skb, p, to, hops - 1);
	else
		err = rewrite(skb, p, to) < 0 || dec_hop_limit(skb, v6, hops, ttl_word) < 0 ? -1 : 0;
	if (err < 0)
		return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
	if (ep) {
		rc = deliver_to_endpoint(skb, ep);
		if (rc < 0)
			return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
		count_flow(skb, prog, v, MONITOR_TRACE, before, to);
		return rc;
	}
	count_flow(skb, prog, v, MONITOR_TRACE, before, to);
	return redirect_routed(skb, rc, fib);
too_big:
	count_flow(skb, prog, VERDICT_DROP_TOO_BIG, MONITOR_DROP, before, to);
	err = icmp_reply(skb, ICMP_ERROR_TOO_BIG, mtu - grow, err_src);
	return err < 0 ? TC_ACT_SHOT : err;
}

/* translate_known rewrites and delivers a packet of a flow conntrack
 * knows, that came in on ifindex (0: from outside); the rewrite is empty
 * for untranslated flows. It returns -1 when the flow is new. */
static __noinline int translate_known(struct __sk_buff *skb, const struct packet *p, __u32 ifindex,
					   enum program prog, const union addr *err_src, int *verdict)
{
	struct ct_entry *e;
	int assured = 0;

	if (!p->has_ports)
		return -1;
	e = ct_lookup_current(&p->flow, ifindex, &assured);
	if (!e || (!ifindex && host_owns_reply(skb, &p->flow, e)))
		return -1;
	if (reopen_refused(p, e)) {
		*verdict = drop(skb, prog, VERDICT_DROP_SOURCE_RANGE);
		return 0;
	}
	if (reopen_moved(p, e)) {
		ct_forget(&p->flow, e, assured);
		return -1;
	}
	struct flow to = e->nat; /* the entry may move while we use it */
	ct_update(&p->flow, e, assured, p, prog);
	*verdict = deliver(skb, p, prog, VERDICT_TRACKED, &to, err_src);
	return 0;
}

/* icmp_error_rewrite's answer for an error about a flow that changed
 * family: translating it is another message (too_big_to_v4). */
#define ICMP_ERROR_CHANGES_FAMILY -2

/* icmp_error_rewrite rewrites the quote of an ICMP error about a packet
 * of a flow conntrack knows, which came in on ifindex, the way that
 * flow's packets are: the error goes to whoever sent the quoted packet,
 * quoting it as they sent it. outer gets the flow the error itself is to
 * be rewritten to, which deliver does, so that until then p->flow is what
 * came in. It returns 0 when rewritten, -1 when the error is about no
 * known flow, ICMP_ERROR_CHANGES_FAMILY (outer then gets the flow's
 * translation) when the flow changed family, or the verdict to drop it
 * with. */
__verified_alone int icmp_error_rewrite(struct __sk_buff *skb, const struct packet *p, __u32 ifindex,
				       struct flow *outer)
{
	struct icmp_quote q;
	struct flow key, quoted;
	struct ct_entry *e;
	int assured = 0;

	if (!p || !outer)
		return -1;

	if (icmp_error_quote(skb, p, &q) < 0)
		return -1;
	/* A sandbox's error is about a packet it received: one addressed to
	 * it. Any other quote would name someone else's flow. */
	if (ifindex && !addr_eq(&q.flow.daddr, &p->flow.saddr))
		return -1;
	/* The error travels the way a packet from the quoted packet's
	 * destination to its source would: that direction's entry says
	 * where it goes. */
	reverse(&q.flow, &key);
	e = ct_lookup_current(&key, ifindex, &assured);
	if (!e)
		return -1;
	if (addr_is_v4(&e->nat.saddr) == p->v6) {
		/* The flow changed family on its way: the error is another's. */
		*outer = e->nat;
		return ICMP_ERROR_CHANGES_FAMILY;
	}
	/* From here the flow's translation is of the error's family. */
	reverse(&e->nat, &quoted);
	*outer = p->flow;
	outer->daddr = e->nat.daddr;
	if (addr_eq(&p->flow.saddr, &key.saddr)) /* sent by the far end itself, not a router on the way */
		outer->saddr = e->nat.saddr;
	if (icmp_quote_rewrite(skb, &q, &quoted) < 0)
		return VERDICT_DROP_NO_ROUTE;
	return 0;
}

/* The translation of an ICMPv6 packet too big (RFC 7915 5.2): the IPv4
 * header, the frag needed, and the quoted IPv4 packet's header and first
 * 8 bytes, as too_big_to_v4 writes them after the frame's header. */
struct too_big_v4 {
	struct iphdr ip;
	struct icmp_error_hdr icmp;
	struct iphdr quoted;
	__be16 sport;
	__be16 dport;
	__be32 l4_rest; /* TCP's sequence number, UDP's length and checksum */
};

/* too_big_to_v4 turns an ICMPv6 packet too big from outside about a flow
 * an IPv6 client has with an IPv4 sandbox (nat: the flow's translation,
 * the client's packets as the sandbox gets them) into what the sandbox
 * understands, as RFC 7915 5.2 says: a frag needed with an MTU 20 bytes
 * less (the headers' difference), from the peer the sandbox sees,
 * quoting the IPv4 packet it sent. It delivers it and returns the
 * verdict; path MTU discovery then works for such clients. Other errors
 * of such flows are dropped: a sandbox has no use for them. */
static __noinline int too_big_to_v4(struct __sk_buff *skb, const struct packet *p, const struct flow *nat,
				    enum program prog)
{
	struct too_big_v4 e = {};
	struct ipv6hdr quoted6;
	struct endpoint_info *ep;
	struct icmp_quote q;
	__be16 ethertype = bpf_htons(ETH_P_IP);
	__be32 mtu6;
	__u32 mtu;
	__s64 sum;

	if (p->icmp_type != ICMPV6_PKT_TOOBIG || icmp_error_quote(skb, p, &q) < 0 || is_icmp(q.flow.proto) ||
	    bpf_skb_load_bytes(skb, p->l4_off + offsetof(struct icmp_error_hdr, mtu6), &mtu6, sizeof(mtu6)) < 0 ||
	    bpf_skb_load_bytes(skb, q.ip_off, &quoted6, sizeof(quoted6)) < 0 ||
	    bpf_skb_load_bytes(skb, q.l4_off + 4, &e.l4_rest, sizeof(e.l4_rest)) < 0)
		return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
	mtu = bpf_ntohl(mtu6);
	if (mtu < 68 + 20)
		return drop(skb, prog, VERDICT_DROP_MALFORMED);
	mtu = mtu - 20 > 0xffff ? 0xffff : mtu - 20;
	ep = bpf_map_lookup_elem(&endpoints, &nat->daddr);
	if (!ep)
		return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
	if (over_rate(skb, ep->ifindex, RATE_INGRESS))
		return drop(skb, prog, VERDICT_DROP_RATE_LIMIT);

	e.quoted.version = 4;
	e.quoted.ihl = 5;
	e.quoted.tot_len = bpf_htons(bpf_ntohs(quoted6.payload_len) + sizeof(struct iphdr));
	e.quoted.frag_off = bpf_htons(IP_DF);
	e.quoted.ttl = quoted6.hop_limit;
	e.quoted.protocol = q.flow.proto;
	e.quoted.saddr = nat->daddr.w[3];
	e.quoted.daddr = nat->saddr.w[3];
	e.quoted.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&e.quoted, sizeof(e.quoted), 0));
	e.sport = nat->dport;
	e.dport = nat->sport;
	e.icmp.type = ICMP_DEST_UNREACH;
	e.icmp.code = ICMP_FRAG_NEEDED;
	e.icmp.mtu = bpf_htons(mtu);
	sum = bpf_csum_diff(0, 0, (__be32 *)&e.icmp, sizeof(e) - sizeof(e.ip), 0);
	if (sum < 0)
		return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
	e.icmp.checksum = csum_fold(sum);
	e.ip.version = 4;
	e.ip.ihl = 5;
	e.ip.tot_len = bpf_htons(sizeof(e));
	e.ip.ttl = 64;
	e.ip.protocol = IPPROTO_ICMP;
	e.ip.saddr = nat->saddr.w[3];
	e.ip.daddr = nat->daddr.w[3];
	e.ip.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&e.ip, sizeof(e.ip), 0));

	/* The IPv6 header makes room for IPv4's (20 bytes less); the rest
	 * of the error is written anew and cut to its length. */
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) < 0 ||
	    bpf_skb_change_tail(skb, ETH_HLEN + sizeof(e), 0) < 0 ||
	    bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &ethertype, sizeof(ethertype), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &e, sizeof(e), 0) < 0) {
		return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
	}
	struct flow after = { .saddr = nat->saddr, .daddr = nat->daddr, .proto = IPPROTO_ICMP };
	int rc = deliver_to_endpoint(skb, ep);

	if (rc < 0)
		return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
	count_flow(skb, prog, VERDICT_TRACKED, MONITOR_TRACE, &p->flow, &after);
	return rc;
}

/* translate_icmp_error translates an ICMP error about a packet of a flow
 * conntrack knows (icmp_error_rewrite) and delivers it, never answering
 * it with an error of its own (no err_src). It returns -1 when the error
 * is about no known flow. */
static __noinline int translate_icmp_error(struct __sk_buff *skb, const struct packet *p, __u32 ifindex,
					   enum program prog, int *verdict)
{
	struct flow outer;
	int rc = icmp_error_rewrite(skb, p, ifindex, &outer);

	if (rc == ICMP_ERROR_CHANGES_FAMILY) {
		/* From outside, about an IPv6 client's flow with an IPv4
		 * sandbox; a sandbox's errors about such flows are dropped. */
		*verdict = !ifindex && p->v6 ? too_big_to_v4(skb, p, &outer, prog) : drop(skb, prog, VERDICT_DROP_NO_ROUTE);
		return 0;
	}
	if (rc < 0)
		return -1;
	if (rc > 0)
		*verdict = drop(skb, prog, rc);
	else
		*verdict = deliver(skb, p, prog, VERDICT_TRACKED, &outer, NULL);
	return 0;
}

/* icmp_error_of_known_flow reports whether an ICMP error from outside is
 * about a flow conntrack knows (one a sandbox started untranslated, say)
 * that the receiving endpoint dst started: path MTU discovery must not
 * stop where the gateway mode keeps the outside out, and an error quoting
 * someone else's packet names a flow that is not the receiver's. */
static __noinline __attribute__((unused)) int icmp_error_of_known_flow(struct __sk_buff *skb, const struct packet *p,
									const struct iface_info *dst)
{
	struct icmp_quote q;
	struct flow key;
	int assured;

	if (icmp_error_quote(skb, p, &q) < 0)
		return 0;
	if (!addr_eq(&q.flow.saddr, addr_is_v4(&q.flow.saddr) ? &dst->addr : &dst->addr6))
		return 0;
	reverse(&q.flow, &key);
	return ct_lookup(&key, 0, &assured) != NULL;
}

/* dnat_published translates a new flow to a published host address and
 * port (dnat_claim), and delivers it. It returns -1 when the packet is no
 * new flow to a publication. */
static __noinline int dnat_published(struct __sk_buff *skb, const struct packet *p, enum program prog,
				     __u32 ifindex, const union addr *snat_to, int *verdict)
{
	struct flow to;
	int rc = dnat_claim(skb, p, prog, ifindex, snat_to, &to);

	if (rc < 0)
		return -1;
	if (rc > 0)
		*verdict = drop(skb, prog, rc);
	else
		*verdict = deliver(skb, p, prog, VERDICT_DNAT, &to, &p->flow.daddr);
	return 0;
}

/* uplink_source finds the address a flow from saddr to daddr leaves the
 * host with: the address of its family of the uplink it is routed
 * through. It returns -1 when the flow does not leave through an uplink,
 * or the uplink has no address of the flow's family. */
static __noinline int uplink_source(struct __sk_buff *skb, const union addr *saddr, const union addr *daddr,
				    union addr *src)
{
	struct bpf_fib_lookup fib;
	struct uplink_info *up;
	__u32 out;
	int rc;

	rc = fib_route(skb, saddr, daddr, &fib);
	/* Too big for the uplink still says which uplink: deliver answers it. */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return -1;
	out = fib.ifindex;
	up = bpf_map_lookup_elem(&uplinks, &out);
	if (!up)
		return -1;
	*src = addr_is_v4(daddr) ? up->addr : up->addr6;
	return addr_is_zero(src) ? -1 : 0;
}

/* masquerade_claim creates the conntrack entries of a new flow to the
 * outside, from the address of the uplink it leaves through, and gives
 * the flow it is translated to. It returns 0 when claimed, -1 when the
 * flow does not leave through an uplink (the stack's business), or the
 * verdict to drop it with. */
static __noinline int masquerade_claim(struct __sk_buff *skb, const struct packet *p, struct flow *to)
{
	struct port_search s;
	union addr src;

	if (uplink_source(skb, &p->flow.saddr, &p->flow.daddr, &src) < 0)
		return -1;
	if (!port_search_init(&s, PROGRAM_FROM_CONTAINER))
		return VERDICT_DROP_NO_NAT_PORT;
	/* A reset of no flow would leave with the sandbox's own address. */
	if (ct_prepare(s.nf, p, skb->ifindex, 0, 0, 0) < 0)
		return VERDICT_DROP_CT_INVALID;
	s.nf->fwd.nat.saddr = src;
	if (claim_nat_port(skb, &s, 1) < 0)
		return VERDICT_DROP_NO_NAT_PORT;
	*to = s.nf->fwd.nat;
	return 0;
}

/* masquerade sends a new flow to the outside (masquerade_claim). */
static __noinline __attribute__((unused)) int masquerade(struct __sk_buff *skb, const struct packet *p,
							 const union addr *gateway)
{
	struct flow to;
	int rc = masquerade_claim(skb, p, &to);

	if (rc < 0)
		return pass(skb, PROGRAM_FROM_CONTAINER);
	if (rc > 0)
		return drop(skb, PROGRAM_FROM_CONTAINER, rc);
	return deliver(skb, p, PROGRAM_FROM_CONTAINER, VERDICT_SNAT, &to, gateway);
}
