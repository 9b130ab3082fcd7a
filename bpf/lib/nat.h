/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Address translation: rewriting packets with correct checksums, the
 * connection tracking entries that remember a translation, NAT port
 * allocation, and delivering a translated packet. */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parse.h"
#include "verdict.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* The NAT port range, set by the loader. It sits above the kernel's default
 * ephemeral range so masqueraded flows do not collide with the host's own. */
volatile const __u16 nat_port_min = 61000;
volatile const __u16 nat_port_max = 65535;

/* Allocation gives up after this many taken ports in a row. */
#define NAT_PORT_TRIES 32

static __always_inline void reverse(const struct flow *f, struct flow *r)
{
	r->saddr = f->daddr;
	r->daddr = f->saddr;
	r->sport = f->dport;
	r->dport = f->sport;
	r->proto = f->proto;
	r->flags = 0;
	r->pad[0] = r->pad[1] = 0;
}

static __always_inline __u32 l4_csum_off(const struct packet *p)
{
	switch (p->flow.proto) {
	case IPPROTO_TCP:
		return p->l4_off + offsetof(struct tcphdr, check);
	case IPPROTO_UDP:
		return p->l4_off + offsetof(struct udphdr, check);
	}
	return p->l4_off + offsetof(struct icmp_echo, checksum);
}

static __always_inline int rewrite_addr(struct __sk_buff *skb, const struct packet *p,
					__u32 off, __be32 from, __be32 to)
{
	__u64 flags = BPF_F_PSEUDO_HDR | sizeof(to);

	if (from == to)
		return 0;
	if (p->flow.proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0; /* a zero UDP checksum means none: keep it */
	/* ICMP's checksum does not cover the IP header. */
	if (p->flow.proto != IPPROTO_ICMP &&
	    bpf_l4_csum_replace(skb, l4_csum_off(p), from, to, flags) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, from, to, sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

static __always_inline int rewrite_port(struct __sk_buff *skb, const struct packet *p,
					__u32 off, __be16 from, __be16 to)
{
	__u64 flags = sizeof(to);

	if (from == to)
		return 0;
	if (p->flow.proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), from, to, flags) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, off, &to, sizeof(to), 0);
}

/* rewrite turns the packet's flow p->flow into to. */
static __always_inline int rewrite(struct __sk_buff *skb, const struct packet *p, const struct flow *to)
{
	if (rewrite_addr(skb, p, IP_SRC_OFF, p->flow.saddr, to->saddr) < 0 ||
	    rewrite_addr(skb, p, IP_DST_OFF, p->flow.daddr, to->daddr) < 0)
		return -1;
	if (p->flow.proto == IPPROTO_ICMP) {
		__u32 off = p->l4_off + offsetof(struct icmp_echo, id);

		return p->icmp_request ? rewrite_port(skb, p, off, p->flow.sport, to->sport)
				       : rewrite_port(skb, p, off, p->flow.dport, to->dport);
	}
	if (rewrite_port(skb, p, p->l4_off, p->flow.sport, to->sport) < 0)
		return -1;
	return rewrite_port(skb, p, p->l4_off + 2, p->flow.dport, to->dport);
}

/* ct_remember records a translation of orig into nat in both directions;
 * published marks the entries of a flow to a published port. With
 * BPF_NOEXIST it fails when the reply direction is taken, which is how port
 * allocation claims a NAT port. */
static __always_inline int ct_remember(const struct flow *orig, const struct flow *nat, int published, __u64 flags)
{
	struct flow reply_key, reply_val, val = *nat;

	reverse(nat, &reply_key);
	reverse(orig, &reply_val);
	if (published) {
		val.flags = CT_PUBLISHED_IN;
		reply_val.flags = CT_PUBLISHED_OUT;
	}
	if (bpf_map_update_elem(&ct, &reply_key, &reply_val, flags) < 0)
		return -1;
	return bpf_map_update_elem(&ct, orig, &val, BPF_ANY);
}

/* ct_current reports whether a conntrack entry (key f, value to) still
 * holds: an entry a publication made holds while that publication leads
 * where it did. When it does not, the flow's entries in both directions
 * go, and its packets are treated as new. */
static __always_inline int ct_current(const struct flow *f, const struct flow *to)
{
	struct publication *pub;
	struct flow partner;

	if (to->flags & CT_PUBLISHED_IN) {
		pub = published(f->daddr, f->dport, f->proto);
		if (pub && pub->addr == to->daddr && pub->port == to->dport)
			return 1;
	} else if (to->flags & CT_PUBLISHED_OUT) {
		pub = published(to->saddr, to->sport, f->proto);
		if (pub && pub->addr == f->saddr && pub->port == f->sport)
			return 1;
	} else {
		return 1;
	}
	reverse(to, &partner);
	bpf_map_delete_elem(&ct, &partner);
	bpf_map_delete_elem(&ct, f);
	return 0;
}

/* claim_nat_port completes nat, a translation of orig with its new source
 * address already set, with a free NAT source port (for ICMP echo, the
 * identifier) and remembers the translation (published: as ct_remember). */
static __always_inline int claim_nat_port(const struct flow *orig, struct flow *nat, int published,
					  enum program prog)
{
	__u32 range = (__u32)nat_port_max - nat_port_min + 1;
	__u32 start = bpf_get_prandom_u32();

	for (int i = 0; i < NAT_PORT_TRIES; i++) {
		nat->sport = bpf_htons(nat_port_min + (start + i) % range);
		if (ct_remember(orig, nat, published, BPF_NOEXIST) == 0)
			return 0;
		count_bytes(prog, VERDICT_NAT_PORT_COLLISION, 0);
	}
	return -1;
}

/* deliver_to_endpoint puts the packet straight into an endpoint's
 * namespace, past the bridge and the host's stack. */
static __always_inline int deliver_to_endpoint(struct __sk_buff *skb, const struct endpoint_info *ep)
{
	struct network_info *net = bpf_map_lookup_elem(&networks, &ep->network);

	if (!net)
		return -1;
	if (bpf_skb_store_bytes(skb, 0, ep->mac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, net->gateway_mac, ETH_ALEN, 0) < 0)
		return -1;
	return bpf_redirect_peer(ep->ifindex, 0);
}

/* fib_route looks up where a packet from saddr to daddr leaves the host. */
static __always_inline int fib_route(struct __sk_buff *skb, __be32 saddr, __be32 daddr,
				     struct bpf_fib_lookup *fib)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = AF_INET;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = skb->ifindex;
	return bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
}

/* redirect_routed sends a packet out of the interface fib_route found. */
static __always_inline int redirect_routed(struct __sk_buff *skb, int rc, struct bpf_fib_lookup *fib)
{
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = fib->ipv4_dst };

		return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
	}
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, ETH_ALEN, 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_ALEN, fib->smac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(fib->ifindex, 0);
}

/* deliver sends a translated packet on: into the endpoint it is now
 * addressed to, else along the host's routes. What the host itself should
 * receive goes up its stack. */
static __always_inline int deliver(struct __sk_buff *skb, enum program prog, enum verdict v,
				   const struct flow *to)
{
	struct endpoint_info *ep = bpf_map_lookup_elem(&endpoints, &to->daddr);
	struct bpf_fib_lookup fib;
	int rc;

	if (ep) {
		rc = deliver_to_endpoint(skb, ep);
		if (rc < 0)
			return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
		count(skb, prog, v);
		return rc;
	}
	rc = fib_route(skb, to->saddr, to->daddr, &fib);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		count(skb, prog, v);
		return redirect_routed(skb, rc, &fib);
	}
	/* NOT_FWDED means local, or no route at all: only a host address is local. */
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED && is_host_addr(to->daddr)) {
		count(skb, prog, v);
		return TC_ACT_UNSPEC;
	}
	return drop(skb, prog, VERDICT_DROP_NO_ROUTE);
}

/* translate_known rewrites and delivers a packet of a flow conntrack
 * knows (the rewrite is empty for flows routed in from outside); it
 * returns -1 when the flow is new. */
static __always_inline int translate_known(struct __sk_buff *skb, const struct packet *p,
					   enum program prog, int *verdict)
{
	struct flow *to;

	if (!p->has_ports)
		return -1;
	to = bpf_map_lookup_elem(&ct, &p->flow);
	if (!to)
		return -1;
	struct flow next = *to; /* the entry may go while we use it */
	if (!ct_current(&p->flow, &next))
		return -1;
	if (rewrite(skb, p, &next) < 0) {
		*verdict = drop(skb, prog, VERDICT_DROP_NO_ROUTE);
		return 0;
	}
	*verdict = deliver(skb, prog, VERDICT_TRACKED, &next);
	return 0;
}

/* host_socket_owns reports whether a socket of the host owns the packet's
 * flow: a host process's own connection (whose peer may answer from a
 * port number that is also published) or a listener. Either comes before
 * a publication, as a conntrack entry would in netfilter. */
static __always_inline int host_socket_owns(struct __sk_buff *skb, const struct packet *p)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;

	t.ipv4.saddr = p->flow.saddr;
	t.ipv4.daddr = p->flow.daddr;
	t.ipv4.sport = p->flow.sport;
	t.ipv4.dport = p->flow.dport;
	if (p->flow.proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* dnat_published translates a new flow to a published host address and
 * port, when it is one, and delivers it. snat_to, when non-zero, also
 * masquerades the source (for a sandbox reaching its own published port). */
static __always_inline int dnat_published(struct __sk_buff *skb, const struct packet *p,
					  enum program prog, __be32 snat_to, int *verdict)
{
	struct publication *pub;
	struct flow nat;

	if (!p->has_ports || p->flow.proto == IPPROTO_ICMP)
		return -1;
	pub = published(p->flow.daddr, p->flow.dport, p->flow.proto);
	if (!pub || host_socket_owns(skb, p))
		return -1;
	nat = p->flow;
	nat.daddr = pub->addr;
	nat.dport = pub->port;
	if (snat_to && nat.daddr == nat.saddr) {
		/* A sandbox reaching itself: its reply must come back through us. */
		nat.saddr = snat_to;
		if (claim_nat_port(&p->flow, &nat, 1, prog) < 0) {
			*verdict = drop(skb, prog, VERDICT_DROP_NO_NAT_PORT);
			return 0;
		}
	} else if (ct_remember(&p->flow, &nat, 1, BPF_ANY) < 0) {
		*verdict = drop(skb, prog, VERDICT_DROP_NO_ROUTE);
		return 0;
	}
	if (rewrite(skb, p, &nat) < 0) {
		*verdict = drop(skb, prog, VERDICT_DROP_NO_ROUTE);
		return 0;
	}
	*verdict = deliver(skb, prog, VERDICT_DNAT, &nat);
	return 0;
}

/* remember_inbound tracks a flow routed in from outside, untranslated, so
 * the sandbox's replies are recognised as replies and leave as they are
 * rather than being masqueraded as new flows. */
static __always_inline void remember_inbound(const struct packet *p)
{
	struct flow reply;

	if (!p->has_ports || network_of(p->flow.saddr) || is_host_addr(p->flow.saddr))
		return;
	reverse(&p->flow, &reply);
	if (!bpf_map_lookup_elem(&ct, &reply))
		bpf_map_update_elem(&ct, &reply, &reply, BPF_NOEXIST);
}
