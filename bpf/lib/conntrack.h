/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking: flows that live and die like netfilter's. Each
 * flow has two entries, one per direction, in ct_new until it shows it is
 * real and in ct from then on (maps.h says why two tables). An entry's
 * state follows the packets; its lifetime follows its state, and an
 * expired entry is gone for every lookup at once, with or without the
 * daemon, which only reclaims the memory. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.h"
#include "verdict.h"

/* Lifetimes in seconds, netfilter's defaults; the loader sets the
 * daemon's. */
volatile const struct ct_timeouts ct_timeouts = {
	.tcp_syn_sent = 120,
	.tcp_syn_recv = 60,
	.tcp_established = 432000,
	.tcp_unacknowledged = 300,
	.tcp_fin_wait = 120,
	.tcp_time_wait = 120,
	.tcp_close = 10,
	.udp = 30,
	.udp_stream = 120,
	.icmp = 30,
};

#define NSEC_PER_SEC 1000000000ULL

/* A busy flow's lifetime is written at most this often: a write per
 * packet would bounce the entry's cache line between CPUs. */
#define CT_REFRESH_NS NSEC_PER_SEC

/* The per-flow bits of ct_entry.flags, which both entries share; the
 * others are each entry's own. */
#define CT_FLOW_FLAGS (CT_FIN_ORIG | CT_FIN_REPLY)

static __always_inline __u64 ct_now(void)
{
	return bpf_ktime_get_boot_ns();
}

static __always_inline __u64 ct_lifetime(__u8 state, int assured)
{
	__u32 s;

	switch (state) {
	case CT_TCP_SYN_SENT:
		s = ct_timeouts.tcp_syn_sent;
		break;
	case CT_TCP_SYN_RECV:
		s = ct_timeouts.tcp_syn_recv;
		break;
	case CT_TCP_ESTABLISHED:
		s = assured ? ct_timeouts.tcp_established : ct_timeouts.tcp_unacknowledged;
		break;
	case CT_TCP_FIN_WAIT:
		s = ct_timeouts.tcp_fin_wait;
		break;
	case CT_TCP_TIME_WAIT:
		s = ct_timeouts.tcp_time_wait;
		break;
	case CT_TCP_CLOSE:
		s = ct_timeouts.tcp_close;
		break;
	case CT_UDP_UNREPLIED:
	case CT_UDP_REPLIED:
		s = assured ? ct_timeouts.udp_stream : ct_timeouts.udp;
		break;
	default:
		s = ct_timeouts.icmp;
	}
	return (__u64)s * NSEC_PER_SEC;
}

static __always_inline void reverse(const struct flow *f, struct flow *r)
{
	r->saddr = f->daddr;
	r->daddr = f->saddr;
	r->sport = f->dport;
	r->dport = f->sport;
	r->proto = f->proto;
	r->pad[0] = r->pad[1] = r->pad[2] = 0;
}

static __always_inline int same_flow(const struct flow *a, const struct flow *b)
{
	return addr_eq(&a->saddr, &b->saddr) && addr_eq(&a->daddr, &b->daddr) && a->sport == b->sport &&
	       a->dport == b->dport && a->proto == b->proto;
}

/* ct_partner finds the entry of the other direction of e's flow (e is at
 * key), when it is still that flow's: in the LRU table one direction can
 * be evicted alone and its tuple claimed by another flow. partner_key
 * gets its key. */
static __always_inline struct ct_entry *ct_partner(const struct flow *key, const struct ct_entry *e, int assured,
						   struct flow *partner_key)
{
	struct ct_entry *partner;
	struct flow back;

	reverse(&e->nat, partner_key);
	if (assured)
		partner = bpf_map_lookup_elem(&ct, partner_key);
	else
		partner = bpf_map_lookup_elem(&ct_new, partner_key);
	if (!partner)
		return NULL;
	reverse(key, &back);
	return same_flow(&partner->nat, &back) ? partner : NULL;
}

/* ct_forget removes a flow: the entry at key and, when it still belongs
 * to the same flow, its partner. */
static __always_inline void ct_forget(const struct flow *key, const struct ct_entry *e, int assured)
{
	struct flow partner_key;
	int partnered = ct_partner(key, e, assured, &partner_key) != NULL;

	if (assured) {
		if (partnered)
			bpf_map_delete_elem(&ct, &partner_key);
		bpf_map_delete_elem(&ct, key);
		return;
	}
	if (partnered)
		bpf_map_delete_elem(&ct_new, &partner_key);
	bpf_map_delete_elem(&ct_new, key);
}

/* ct_owner decides whether a packet that came in on ifindex may use entry
 * e. From outside (0) nobody is vouched for: only entries of the outside
 * match. A sandbox's key carries its own address, which source validation
 * has checked against the interface, so an entry of another interface is
 * the sandbox's from before its veth was recreated: it moves to the new
 * one. */
static __always_inline int ct_owner(struct ct_entry *e, __u32 ifindex)
{
	if (e->ifindex == ifindex)
		return 1;
	if (!ifindex || !e->ifindex)
		return 0;
	e->ifindex = ifindex;
	return 1;
}

/* ct_find finds the live entry at key, in ct (assured) or ct_new,
 * removing an expired one in the way, so its tuple is free at once. */
static __always_inline struct ct_entry *ct_find(const struct flow *key, int *assured)
{
	__u64 now = ct_now();
	struct ct_entry *e = bpf_map_lookup_elem(&ct, key);

	if (e) {
		if (e->expires > now) {
			*assured = 1;
			return e;
		}
		ct_forget(key, e, 1);
	}
	e = bpf_map_lookup_elem(&ct_new, key);
	if (!e)
		return NULL;
	if (e->expires <= now) {
		ct_forget(key, e, 0);
		return NULL;
	}
	*assured = 0;
	return e;
}

/* ct_lookup finds the live entry for a packet with flow key that came in
 * on ifindex (0: from outside or from the host), and whether it is in ct
 * (assured) or ct_new. An expired or orphaned entry is removed as found.
 * An entry the packet may not use (ct_owner) is not found. */
static __noinline struct ct_entry *ct_lookup(const struct flow *key, __u32 ifindex, int *assured)
{
	struct ct_entry *e = ct_find(key, assured);
	struct flow partner_key;

	if (!e)
		return NULL;
	if (!*assured && !ct_partner(key, e, 0, &partner_key)) {
		bpf_map_delete_elem(&ct_new, key); /* the partner's tuple is another flow's now */
		return NULL;
	}
	return ct_owner(e, ifindex) ? e : NULL;
}

/* ct_taken reports whether a live entry holds key in either table. */
static __always_inline int ct_taken(const struct flow *key)
{
	int assured;

	return ct_find(key, &assured) != NULL;
}

/* ct_initial_state is the state a flow's first packet puts it in; -1 for
 * a packet that starts no flow (a TCP reset, a later fragment, an echo
 * reply). A TCP segment other than a
 * SYN picks up a flow in the middle, as netfilter does, so flows survive
 * a conntrack that lost them. */
static __always_inline int ct_initial_state(const struct packet *p)
{
	if (p->later_fragment)
		return -1; /* its first fragment starts the flow */
	switch (p->flow.proto) {
	case IPPROTO_TCP:
		if (p->tcp_flags & TCP_RST)
			return -1;
		if ((p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
			return CT_TCP_SYN_SENT;
		return CT_TCP_ESTABLISHED;
	case IPPROTO_UDP:
		return CT_UDP_UNREPLIED;
	}
	/* Only a request starts an echo flow: a reply would make the asker's
	 * next requests to the host look like the flow's replies. */
	return p->icmp_request ? CT_ICMP : -1;
}

/* ct_prepare fills the parts of a new flow's entries that do not depend
 * on the translation's ports: state, lifetime, where each direction comes
 * in and its marks. It returns -1 when the packet starts no flow. */
static __always_inline int ct_prepare(struct ct_new_flow *nf, const struct packet *p,
				      __u32 fwd_ifindex, __u32 rev_ifindex, __u8 fwd_flags, __u8 rev_flags)
{
	int state = ct_initial_state(p);

	if (state < 0)
		return -1;
	__builtin_memset(nf, 0, sizeof(*nf));
	nf->orig = p->flow;
	nf->orig.pad[0] = nf->orig.pad[1] = nf->orig.pad[2] = 0;
	nf->fwd.nat = nf->orig;
	nf->fwd.expires = nf->rev.expires = ct_now() + ct_lifetime(state, 0);
	nf->fwd.state = nf->rev.state = state;
	nf->fwd.ifindex = fwd_ifindex;
	nf->rev.ifindex = rev_ifindex;
	nf->fwd.flags = fwd_flags;
	nf->rev.flags = rev_flags | CT_REPLY;
	return 0;
}

/* ct_claim creates a flow's entries in ct_new, translated as nf->fwd.nat
 * says. The reply direction goes first, with BPF_NOEXIST: that is how a
 * translated tuple (a NAT port) is claimed, once. It returns -1 when the
 * reply tuple is in live use. */
static __noinline int ct_claim(struct ct_new_flow *nf)
{
	struct flow reply_key;

	reverse(&nf->fwd.nat, &reply_key);
	reverse(&nf->orig, &nf->rev.nat);
	if (ct_taken(&reply_key))
		return -1;
	if (bpf_map_update_elem(&ct_new, &reply_key, &nf->rev, BPF_NOEXIST) < 0)
		return -1; /* claimed by another CPU meanwhile */
	if (bpf_map_update_elem(&ct_new, &nf->orig, &nf->fwd, BPF_ANY) < 0) {
		bpf_map_delete_elem(&ct_new, &reply_key);
		return -1;
	}
	return 0;
}

/* ct_promote moves a flow that has shown it is real from ct_new to ct.
 * When ct is full the flow stays where it is, and works, and the event
 * is counted. */
static __always_inline void ct_promote(const struct flow *key, const struct ct_entry *e, enum program prog)
{
	struct flow partner_key;
	struct ct_entry mine = *e, *partner = ct_partner(key, e, 0, &partner_key);

	if (!partner)
		return;
	struct ct_entry theirs = *partner;
	mine.expires = theirs.expires = ct_now() + ct_lifetime(mine.state, 1);
	if (bpf_map_update_elem(&ct, key, &mine, BPF_NOEXIST) < 0) {
		count_bytes(prog, VERDICT_CT_FULL, 0);
		return;
	}
	if (bpf_map_update_elem(&ct, &partner_key, &theirs, BPF_NOEXIST) < 0) {
		bpf_map_delete_elem(&ct, key);
		count_bytes(prog, VERDICT_CT_FULL, 0);
		return;
	}
	bpf_map_delete_elem(&ct_new, &partner_key);
	bpf_map_delete_elem(&ct_new, key);
}

/* A reset counts only when its sequence number is within this distance
 * of what the other side last acknowledged, as netfilter checks it
 * against the window: a blind reset from someone who only knows the
 * tuple must not close a flow. */
#define CT_RST_WINDOW (1U << 22)

/* ct_next works out where packet p takes e's flow: the next state and
 * per-flow flags; it returns 1 when the flow has just shown it is real.
 * peer_ack is what the other direction last acknowledged (0: nothing). */
static __always_inline int ct_next(const struct ct_entry *e, const struct packet *p, int assured,
				   __u32 peer_ack, __u8 *state, __u8 *flags, __u32 *ack_seq)
{
	int reply = e->flags & CT_REPLY;
	__u8 f = p->tcp_flags;

	*state = e->state;
	*flags = e->flags & CT_FLOW_FLAGS;
	*ack_seq = e->ack_seq;
	switch (e->state) {
	case CT_UDP_UNREPLIED:
		if (reply)
			*state = CT_UDP_REPLIED;
		return 0;
	case CT_UDP_REPLIED:
		return !reply && !assured; /* answered back */
	case CT_ICMP:
		return 0;
	}
	/* TCP */
	if (f & TCP_RST) {
		if (!peer_ack || p->seq - peer_ack + CT_RST_WINDOW <= 2 * CT_RST_WINDOW)
			*state = CT_TCP_CLOSE;
		return 0;
	}
	if ((f & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		/* A new SYN on a closed flow reopens it, as netfilter lets it:
		 * otherwise a closed flow would hold its tuple for a TIME_WAIT
		 * lifetime, and a client reusing ports would stall. */
		if (!reply && (e->state == CT_TCP_TIME_WAIT || e->state == CT_TCP_CLOSE)) {
			*state = CT_TCP_SYN_SENT;
			*flags = 0;
		}
		return 0;
	}
	if ((f & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {
		if (reply && (e->state == CT_TCP_SYN_SENT || e->state == CT_TCP_SYN_RECV)) {
			*state = CT_TCP_SYN_RECV;
			*ack_seq = p->seq + 1;
		}
		return 0;
	}
	if (f & TCP_FIN) {
		*flags |= reply ? CT_FIN_REPLY : CT_FIN_ORIG;
		*state = (*flags & CT_FLOW_FLAGS) == CT_FLOW_FLAGS ? CT_TCP_TIME_WAIT : CT_TCP_FIN_WAIT;
		return 0;
	}
	/* The handshake completes with the originator's ACK of the SYN-ACK:
	 * one who only forges SYNs (and never sees the SYN-ACK) cannot. */
	if (e->state == CT_TCP_SYN_RECV && !reply && (f & TCP_ACK) && p->ack_seq == e->ack_seq) {
		*state = CT_TCP_ESTABLISHED;
		return !assured;
	}
	/* A flow picked up in the middle is real once the other side answers
	 * with anything but a reset. */
	return e->state == CT_TCP_ESTABLISHED && reply && !assured;
}

/* ct_sync writes a flow's state, flags and lifetime into entry e (at key)
 * and its partner. */
static __always_inline void ct_sync(const struct flow *key, struct ct_entry *e, int assured, __u8 state,
				    __u8 flags, __u32 ack_seq, __u64 expires)
{
	struct flow partner_key;
	struct ct_entry *partner;

	e->state = state;
	e->flags = (e->flags & ~CT_FLOW_FLAGS) | flags;
	e->ack_seq = ack_seq;
	e->expires = expires;
	partner = ct_partner(key, e, assured, &partner_key);
	if (partner) {
		partner->state = state;
		partner->flags = (partner->flags & ~CT_FLOW_FLAGS) | flags;
		partner->ack_seq = ack_seq;
		partner->expires = expires;
	}
}

/* ct_update moves e's flow on for packet p: state, lifetime and, once
 * the flow shows it is real, into ct. */
static __noinline void ct_update(const struct flow *key, struct ct_entry *e, int assured,
				      const struct packet *p, enum program prog)
{
	__u8 state, flags;
	__u32 ack_seq, peer_ack = 0;

	if (p->tcp_flags & TCP_RST) {
		struct flow partner_key;
		struct ct_entry *partner = ct_partner(key, e, assured, &partner_key);

		if (partner)
			peer_ack = partner->last_ack;
	} else if ((p->tcp_flags & TCP_ACK) && e->last_ack != p->ack_seq) {
		e->last_ack = p->ack_seq;
	}
	int real = ct_next(e, p, assured, peer_ack, &state, &flags, &ack_seq);
	__u64 expires = ct_now() + ct_lifetime(state, assured);

	if (state != e->state || flags != (e->flags & CT_FLOW_FLAGS) || ack_seq != e->ack_seq ||
	    expires > e->expires + CT_REFRESH_NS)
		ct_sync(key, e, assured, state, flags, ack_seq, expires);
	if (real)
		ct_promote(key, e, prog);
}
