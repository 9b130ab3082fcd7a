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

/* How many flows one source address may hold in ct, the table that never
 * evicts; the loader sets the daemon's. An eighth of what ct holds
 * (262144 entries, two per flow): filling ct then takes eight clients
 * that each keep that many flows alive, while 16384 established flows is
 * more than one client (a proxy, an office behind one NAT address)
 * usually keeps open with a host's sandboxes. Its flows past that still
 * work, from ct_new, as every flow does when ct is full. */
volatile const __u32 ct_source_max = 16384;

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

/* ct_source_of gives the key that src's flows are counted under in
 * ct_sources: its address, or for an IPv6 address beyond the host's
 * networks its /64, which one client (a host, a site) holds whole and
 * picks addresses from at will. maps/conntrack.go keys them alike. The
 * key is in this CPU's ct_source_scratch, valid until the next call;
 * NULL if there is none. */
static const __u32 ct_source_scratch_slot = 0; /* a key off the stack, which is tight */

static __always_inline const union addr *ct_source_of(const union addr *src)
{
	struct subnet_key *k = bpf_map_lookup_elem(&ct_source_scratch, &ct_source_scratch_slot);

	if (!k)
		return NULL;
	k->prefixlen = 128;
	k->addr = *src;
	if (!addr_is_v4(src) && !bpf_map_lookup_elem(&subnets, k))
		k->addr.w[2] = k->addr.w[3] = 0;
	return &k->addr;
}

/* ct_source_forgot counts a flow of src that left ct: the datapath
 * removed its originator's entry. */
static __always_inline void ct_source_forgot(const union addr *src)
{
	const union addr *key = ct_source_of(src);
	struct ct_source *c = key ? bpf_map_lookup_elem(&ct_sources, key) : NULL;

	if (c)
		__sync_fetch_and_add(&c->forgotten, 1);
}

/* ct_forget removes a flow: the entry at key and, when it still belongs
 * to the same flow, its partner. A flow leaving ct is counted off its
 * source once, by whoever removes its originator's entry. */
static __always_inline void ct_forget(const struct flow *key, const struct ct_entry *e, int assured)
{
	struct flow partner_key;
	int partnered = ct_partner(key, e, assured, &partner_key) != NULL;
	int reply = e->flags & CT_REPLY;

	if (assured) {
		if (partnered && bpf_map_delete_elem(&ct, &partner_key) == 0 && reply)
			ct_source_forgot(&partner_key.saddr);
		if (bpf_map_delete_elem(&ct, key) == 0 && !reply)
			ct_source_forgot(&key->saddr);
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
	if (state == CT_TCP_SYN_SENT)
		nf->fwd.ack_seq = nf->rev.ack_seq = p->seq + 1;
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
	reverse(&nf->fwd.nat, &nf->reply);
	reverse(&nf->orig, &nf->rev.nat);
	if (ct_taken(&nf->reply))
		return -1;
	if (bpf_map_update_elem(&ct_new, &nf->reply, &nf->rev, BPF_NOEXIST) < 0)
		return -1; /* claimed by another CPU meanwhile */
	if (bpf_map_update_elem(&ct_new, &nf->orig, &nf->fwd, BPF_ANY) < 0) {
		bpf_map_delete_elem(&ct_new, &nf->reply);
		return -1;
	}
	return 0;
}

/* ct_source_counter finds the counter of a source (a key ct_source_of
 * gave), created at zero if it has none; NULL when ct_sources is full. */
static __always_inline struct ct_source *ct_source_counter(const union addr *src)
{
	struct ct_source *c = bpf_map_lookup_elem(&ct_sources, src);
	struct ct_source zero = {};

	if (c)
		return c;
	bpf_map_update_elem(&ct_sources, src, &zero, BPF_NOEXIST);
	return bpf_map_lookup_elem(&ct_sources, src);
}

/* ct_source_held is how many flows source (whose counter is c) holds in
 * ct, as far as the datapath and the daemon's corrections know. */
static __always_inline __s64 ct_source_held(const union addr *src, const struct ct_source *c)
{
	__s64 *released = bpf_map_lookup_elem(&ct_released, src);

	return (__s64)(c->promoted - c->forgotten) - (released ? *released : 0);
}

/* ct_source_admit finds the counter of the source that src counts under
 * (ct_source_of, whose key it gives in *source) when it may hold one more
 * flow in ct; NULL when it may not. */
static __always_inline struct ct_source *ct_source_admit(const union addr *src, const union addr **source)
{
	struct ct_source *c;

	*source = ct_source_of(src);
	c = *source ? ct_source_counter(*source) : NULL;
	return c && ct_source_held(*source, c) < (__s64)ct_source_max ? c : NULL;
}

/* ct_promote moves a flow that has shown it is real from ct_new to ct.
 * When ct is full, or the flow's source holds its share of it, the flow
 * stays where it is, and works, and the event is counted. */
static __always_inline void ct_promote(const struct flow *key, const struct ct_entry *e, enum program prog)
{
	struct flow partner_key;
	struct ct_entry mine = *e, *partner = ct_partner(key, e, 0, &partner_key);
	const struct flow *orig = (e->flags & CT_REPLY) ? &partner_key : key;
	struct ct_source *src;
	const union addr *source; /* its key, valid through the promotion (ct_source_of) */

	if (!partner)
		return;
	src = ct_source_admit(&orig->saddr, &source);
	if (!src) {
		count_bytes(prog, VERDICT_CT_SOURCE_FULL, 0);
		return;
	}
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
	/* Checked again once counted: other CPUs may have promoted flows of
	 * the source since the check above. The flows that find the share
	 * exceeded leave ct again, so a source never keeps more than it may. */
	__sync_fetch_and_add(&src->promoted, 1);
	if (ct_source_held(source, src) > (__s64)ct_source_max) {
		if (bpf_map_delete_elem(&ct, orig) == 0)
			__sync_fetch_and_add(&src->forgotten, 1);
		bpf_map_delete_elem(&ct, orig == key ? &partner_key : key);
		count_bytes(prog, VERDICT_CT_SOURCE_FULL, 0);
		return;
	}
	bpf_map_delete_elem(&ct_new, &partner_key);
	bpf_map_delete_elem(&ct_new, key);
}

/* A reset or a FIN counts only when its sequence number is within this
 * distance of what the other side last acknowledged, as netfilter's
 * tcp_in_window checks every segment against the window: someone who
 * only knows a flow's tuple must neither close it nor cut its lifetime
 * to a closing state's. */
#define CT_TCP_WINDOW (1U << 22)

/* ct_in_window reports whether a segment with sequence number seq may
 * close a flow whose other direction last acknowledged peer_ack (0:
 * nothing yet, so nothing to check against). */
static __always_inline int ct_in_window(__u32 seq, __u32 peer_ack)
{
	return !peer_ack || seq - peer_ack + CT_TCP_WINDOW <= 2 * CT_TCP_WINDOW;
}

/* ct_next works out where packet p takes e's flow: the next state and
 * per-flow flags; it returns 1 when the flow has just shown it is real.
 * A reset or FIN reaching it is in the window (ct_update). */
static __always_inline int ct_next(const struct ct_entry *e, const struct packet *p, int assured,
				   __u8 *state, __u8 *flags, __u32 *ack_seq)
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
		*state = CT_TCP_CLOSE;
		return 0;
	}
	if ((f & (TCP_SYN | TCP_ACK)) == TCP_SYN) {
		/* A new SYN on a closed flow reopens it, as netfilter lets it:
		 * otherwise a closed flow would hold its tuple for a TIME_WAIT
		 * lifetime, and a client reusing ports would stall. The SYN-ACK
		 * must acknowledge the latest SYN. */
		if (!reply && (e->state == CT_TCP_TIME_WAIT || e->state == CT_TCP_CLOSE)) {
			*state = CT_TCP_SYN_SENT;
			*flags = 0;
		}
		if (!reply && *state == CT_TCP_SYN_SENT)
			*ack_seq = p->seq + 1;
		return 0;
	}
	/* Only a SYN-ACK that acknowledges the SYN moves the handshake on,
	 * and only once: a forged one must not replace the responder's
	 * sequence number, which the originator's ACK is checked against. */
	if ((f & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK)) {
		if (reply && e->state == CT_TCP_SYN_SENT && p->ack_seq == e->ack_seq) {
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
 * the flow shows it is real, into ct. A reset or FIN out of the window
 * changes nothing, not even the lifetime: the packet passes, as netfilter
 * lets an invalid one through, for the endpoint to drop. */
static __noinline void ct_update(const struct flow *key, struct ct_entry *e, int assured,
				      const struct packet *p, enum program prog)
{
	__u8 state, flags;
	__u32 ack_seq;

	if (p->tcp_flags & (TCP_RST | TCP_FIN)) {
		struct flow partner_key;
		struct ct_entry *partner = ct_partner(key, e, assured, &partner_key);

		if (partner && !ct_in_window(p->seq, partner->last_ack))
			return;
	}
	if ((p->tcp_flags & (TCP_ACK | TCP_RST)) == TCP_ACK && e->last_ack != p->ack_seq)
		e->last_ack = p->ack_seq;
	int real = ct_next(e, p, assured, &state, &flags, &ack_seq);
	__u64 expires = ct_now() + ct_lifetime(state, assured);

	if (state != e->state || flags != (e->flags & CT_FLOW_FLAGS) || ack_seq != e->ack_seq ||
	    expires > e->expires + CT_REFRESH_NS)
		ct_sync(key, e, assured, state, flags, ack_seq, expires);
	if (real)
		ct_promote(key, e, prog);
}
