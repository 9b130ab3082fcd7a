/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Address translation: rewriting packets with correct checksums and hop
 * limits, NAT port allocation and claiming new flows to publications.
 * Written once for TC and XDP (ctx.h); forwarding is forward.h's. */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parse.h"
#include "verdict.h"
#include "conntrack.h"
#include "ctx.h"
#include "maglev.h"

/* The NAT port range, set by the loader. It sits above the kernel's default
 * ephemeral range (the daemon refuses one that overlaps the host's), so
 * masqueraded flows do not collide with the host's own. */
volatile const __u16 nat_port_min = 61000;
volatile const __u16 nat_port_max = 65535;

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

/* rewrite_addr changes the address at off from from to to, both of the
 * packet's family, keeping the checksums right. */
static __always_inline int rewrite_addr(struct ctx_buff *ctx, const struct packet *p,
					__u32 off, const union addr *from, const union addr *to)
{
	__u64 flags = BPF_F_PSEUDO_HDR;
	/* ICMP's checksum does not cover the IP header (ICMPv6's does); a
	 * later fragment has no L4 header (the first fragment's rewrite
	 * fixed the checksum). */
	int l4 = p->flow.proto != IPPROTO_ICMP && !p->later_fragment && p->l4_off;

	if (addr_eq(from, to))
		return 0;
	if (p->flow.proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0; /* a zero UDP checksum means none: keep it */
	if (p->v6) {
		__s64 diff = bpf_csum_diff((__be32 *)from->w, sizeof(*from), (__be32 *)to->w, sizeof(*to), 0);

		if (diff < 0 || (l4 && ctx_l4_csum_replace(ctx, l4_csum_off(p), 0, diff, flags) < 0))
			return -1;
		return ctx_store_bytes(ctx, off, to->b, sizeof(*to), 0);
	}
	__be32 f4 = from->w[3], t4 = to->w[3];

	if (l4 && ctx_l4_csum_replace(ctx, l4_csum_off(p), f4, t4, flags | sizeof(t4)) < 0)
		return -1;
	if (ctx_l3_csum_replace(ctx, IP_CSUM_OFF, f4, t4, sizeof(t4)) < 0)
		return -1;
	return ctx_store_bytes(ctx, off, &t4, sizeof(t4), 0);
}

/* store_port changes the port at off of an L4 header of protocol proto
 * whose checksum is at csum_off. */
static __always_inline int store_port(struct ctx_buff *ctx, __u8 proto, __u32 csum_off, __u32 off, __be16 from,
				      __be16 to)
{
	__u64 flags = sizeof(to);

	if (from == to)
		return 0;
	if (proto == IPPROTO_UDP)
		flags |= BPF_F_MARK_MANGLED_0;
	if (ctx_l4_csum_replace(ctx, csum_off, from, to, flags) < 0)
		return -1;
	return ctx_store_bytes(ctx, off, &to, sizeof(to), 0);
}

static __always_inline int rewrite_port(struct ctx_buff *ctx, const struct packet *p,
					__u32 off, __be16 from, __be16 to)
{
	return store_port(ctx, p->flow.proto, l4_csum_off(p), off, from, to);
}

/* rewrite turns the packet's flow p->flow into to, of the same family. */
__verified_alone int rewrite(struct ctx_buff *ctx, const struct packet *p, const struct flow *to)
{
	if (!p || !to)
		return -1;
	if (addr_is_v4(&to->saddr) == p->v6 || addr_is_v4(&to->daddr) == p->v6)
		return -1; /* no flow changes family yet */
	if (rewrite_addr(ctx, p, ip_saddr_off(p), &p->flow.saddr, &to->saddr) < 0 ||
	    rewrite_addr(ctx, p, ip_daddr_off(p), &p->flow.daddr, &to->daddr) < 0)
		return -1;
	if (p->later_fragment)
		return 0;
	if (is_icmp(p->flow.proto)) {
		__u32 off = p->l4_off + offsetof(struct icmp_echo, id);

		return p->icmp_request ? rewrite_port(ctx, p, off, p->flow.sport, to->sport)
				       : rewrite_port(ctx, p, off, p->flow.dport, to->dport);
	}
	if (rewrite_port(ctx, p, p->l4_off, p->flow.sport, to->sport) < 0)
		return -1;
	return rewrite_port(ctx, p, p->l4_off + 2, p->flow.dport, to->dport);
}

/* leads_to reports whether the publication of host:port still leads to
 * addr:to_port, for an entry it made (balanced: the entry was a balanced
 * publication's, CT_BALANCED): a balanced one leads to every backend it
 * had, so that a backend taken out of its table (for new flows) keeps its
 * flows until they end; its endpoint's removal flushes them. It does not
 * lead to the flows of a publication it replaced. */
static __always_inline int leads_to(const union addr *host, __be16 port, __u8 proto, const union addr *addr,
				    __be16 to_port, int balanced)
{
	struct publication *pub = published(host, port, proto);

	if (!pub)
		return 0;
	if (pub->flags & PUBLICATION_BALANCED)
		return balanced;
	return addr_eq(&pub->addr, addr) && pub->port == to_port;
}

/* ct_current reports whether conntrack entry e (key f) still holds: an
 * entry a publication made holds while that publication leads where it
 * did (leads_to). When it does not, the flow goes, and its packets are
 * treated as new. */
static __always_inline int ct_current(const struct flow *f, const struct ct_entry *e, int assured)
{
	int balanced = e->flags & CT_BALANCED;

	if ((e->flags & CT_PUBLISHED_IN) &&
	    !leads_to(&f->daddr, f->dport, f->proto, &e->nat.daddr, e->nat.dport, balanced))
		goto stale;
	if ((e->flags & CT_PUBLISHED_OUT) &&
	    !leads_to(&e->nat.saddr, e->nat.sport, f->proto, &f->saddr, f->sport, balanced))
		goto stale;
	return 1;
stale:
	ct_forget(f, e, assured);
	return 0;
}

/* flow_refused reports whether the source of flow f, new to a published
 * port, may not open it (source_refused), with this CPU's scratch for
 * the lookups. */
static __noinline int flow_refused(const struct flow *f)
{
	struct new_flow_scratch *sc;
	__u32 zero = 0;

	sc = bpf_map_lookup_elem(&new_flow_scratch, &zero);
	if (!sc || !published_at(&sc->source.pub, &f->daddr, f->dport, f->proto))
		return 0;
	return source_refused(&sc->source, &f->saddr);
}

/* reopens reports whether packet p is a new connection on the tuple of a
 * closed one to a published port: a SYN on its entry in TIME_WAIT or
 * CLOSE (e), which conntrack reopens. */
static __always_inline int reopens(const struct packet *p, const struct ct_entry *e)
{
	return (e->flags & CT_PUBLISHED_IN) && !(e->flags & CT_REPLY) && p->flow.proto == IPPROTO_TCP &&
	       (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
	       (e->state == CT_TCP_TIME_WAIT || e->state == CT_TCP_CLOSE);
}

/* reopen_refused reports whether packet p, a new connection on the tuple
 * of a closed one (reopens), comes from a source the publication's lists
 * refuse now: a new connection meets them as any new flow does, however
 * it reuses a tuple. */
static __always_inline int reopen_refused(const struct packet *p, const struct ct_entry *e)
{
	return reopens(p, e) && flow_refused(&p->flow);
}

/* backend_moved reports whether flow f, to a balanced publication, goes
 * elsewhere than its entry e leads now: its table names another backend
 * for it, or none (the one it had left). */
static __noinline int backend_moved(const struct flow *f, const struct ct_entry *e)
{
	struct new_flow_scratch *sc;
	struct publication *pub;
	__u32 zero = 0;

	sc = bpf_map_lookup_elem(&new_flow_scratch, &zero);
	if (!sc)
		return 0;
	pub = published_at(&sc->source.pub, &f->daddr, f->dport, f->proto);
	if (!pub || !(pub->flags & PUBLICATION_BALANCED))
		return 0;
	pub = backend_of(&sc->source.pub, pub, flow_hash(f));
	return !pub || !addr_eq(&pub->addr, &e->nat.daddr) || pub->port != e->nat.dport;
}

/* reopen_moved reports whether packet p, a new connection on the tuple of
 * a closed one (reopens) to a balanced publication, must go to another
 * backend than the closed one went to: a backend that left the table
 * takes no new connection, however a client reuses a tuple. The caller
 * forgets the closed flow, and the packet starts a new one. */
static __always_inline int reopen_moved(const struct packet *p, const struct ct_entry *e)
{
	return reopens(p, e) && backend_moved(&p->flow, e);
}

/* ct_lookup_current finds the entry of a flow (key) conntrack knows and
 * that still holds (ct_current), or NULL. */
static __always_inline struct ct_entry *ct_lookup_current(const struct flow *key, __u32 ifindex, int *assured)
{
	struct ct_entry *e = ct_lookup(key, ifindex, assured);

	return e && ct_current(key, e, *assured) ? e : NULL;
}

/* reachable_from_outside reports whether a packet from an uplink to daddr
 * may be to a publication: to a host address, never a loopback one, which
 * no packet from the wire carries (a port published on 127.0.0.1 must stay
 * out of the neighbours' reach). */
static __always_inline int reachable_from_outside(const union addr *daddr)
{
	return !addr_is_loopback(daddr) && is_host_addr(daddr);
}

/* note_host_echo remembers an echo request that the host itself sends
 * (flow out, from a host address), for host_socket. */
static __always_inline __attribute__((unused)) void note_host_echo(const struct flow *out)
{
	__u64 expires = ct_now() + ct_lifetime(CT_ICMP, 0);
	struct flow reply;

	reverse(out, &reply);
	bpf_map_update_elem(&host_echoes, &reply, &expires, BPF_ANY);
}

/* host_socket reports whether a socket of the host receives the packets
 * of flow in (as they arrive): any socket, or with connections_only a
 * host process's connection alone, not a listener nor an unconnected UDP
 * socket. For an ICMP echo flow, whether the host sent a request it
 * answers lately (note_host_echo), from whatever socket. */
static __always_inline int host_socket(struct ctx_buff *ctx, const struct flow *in, int connections_only)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;
	int found;

	if (addr_is_v4(&in->saddr)) {
		t.ipv4.saddr = in->saddr.w[3];
		t.ipv4.daddr = in->daddr.w[3];
		t.ipv4.sport = in->sport;
		t.ipv4.dport = in->dport;
		size = sizeof(t.ipv4);
	} else {
		__builtin_memcpy(t.ipv6.saddr, in->saddr.w, sizeof(t.ipv6.saddr));
		__builtin_memcpy(t.ipv6.daddr, in->daddr.w, sizeof(t.ipv6.daddr));
		t.ipv6.sport = in->sport;
		t.ipv6.dport = in->dport;
		size = sizeof(t.ipv6);
	}
	if (in->proto == IPPROTO_TCP) {
		sk = bpf_skc_lookup_tcp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return 0;
		found = !connections_only || sk->state != BPF_TCP_LISTEN;
	} else if (in->proto == IPPROTO_UDP) {
		sk = bpf_sk_lookup_udp(ctx, &t, size, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			return 0;
		found = !connections_only || sk->dst_port != 0;
	} else if (is_icmp(in->proto)) {
		__u64 *expires = bpf_map_lookup_elem(&host_echoes, in);

		return expires && *expires > ct_now();
	} else {
		return 0;
	}
	bpf_sk_release(sk);
	return found;
}

/* host_owns_reply reports whether a packet from outside that conntrack
 * takes for a reply of a masqueraded flow (entry e) belongs to a host
 * process's connection instead: the flow kept its sandbox's source port,
 * and the host's stack picked the same one later for a connection to the
 * same server. The host's connection wins, as a host socket does when a
 * flow begins (claim_nat_port); the sandbox's flow has lost its tuple.
 * Only masqueraded replies pay for the socket lookup: published flows
 * answer to their own rule (host_socket_owns). */
static __always_inline int host_owns_reply(struct ctx_buff *ctx, const struct flow *in, const struct ct_entry *e)
{
	return (e->flags & CT_REPLY) && !(e->flags & (CT_PUBLISHED_IN | CT_PUBLISHED_OUT)) && is_host_addr(&in->daddr) &&
	       host_socket(ctx, in, 1);
}

/* host_tuple_in_use reports whether a socket of the host already owns the
 * reply direction of translated flow nat (whose source is a host
 * address): a translation must never take a host connection's tuple. */
static __noinline int host_tuple_in_use(struct ctx_buff *ctx, const struct flow *nat)
{
	struct flow reply;

	reverse(nat, &reply);
	return host_socket(ctx, &reply, 0);
}

/* The NAT port search's bound per packet, as netfilter's
 * nf_nat_l4proto_unique_tuple has it: it runs in softirq, so a range full
 * towards one destination must not cost a packet a walk through every
 * port. A window of NAT_SEARCH_FIRST ports from a random one, then
 * windows of half as many from other random ones, down to
 * NAT_SEARCH_LAST: 128 + 64 + 32 + 16 + 8 = 248 ports at most. A range of
 * up to NAT_SEARCH_FIRST ports is searched whole, once. */
#define NAT_SEARCH_FIRST 128
#define NAT_SEARCH_LAST 8
#define NAT_SEARCH_MAX (2 * NAT_SEARCH_FIRST - NAT_SEARCH_LAST)

/* A NAT port search in progress: the flow being created, the window it
 * is in and whether it found a port. */
struct port_search {
	struct ct_new_flow *nf; /* this CPU's new_flow_scratch */
	struct ctx_buff *ctx;
	__u32 range;  /* ports in the NAT range */
	__u32 off;    /* the next port's offset in the range (mod range) */
	__u32 window; /* ports of the current window */
	__u32 left;   /* ports of the current window not yet tried */
	int claimed;
	int host_side; /* the new source is a host address: mind the host's sockets and publications */
	enum program prog;
};

/* port_search_init starts a search in this CPU's scratch space, which
 * it returns (NULL: none). */
static __always_inline struct new_flow_scratch *port_search_init(struct port_search *s, enum program prog)
{
	struct new_flow_scratch *sc;
	__u32 zero = 0;

	sc = bpf_map_lookup_elem(&new_flow_scratch, &zero);
	if (!sc)
		return NULL;
	s->nf = &sc->nf;
	s->prog = prog;
	return sc;
}

/* port_held reports whether a publication has the translated flow's
 * source port, on any address. held_ports rather than publications: one
 * lookup instead of two (the address and its family's every-address
 * entry), and it refuses a superset (a port published on another host
 * address only) that costs a masqueraded flow nothing but that port. */
static __always_inline int port_held(const struct flow *nat)
{
	struct held_port_key key = { .port = nat->sport, .proto = nat->proto };

	return bpf_map_lookup_elem(&held_ports, &key) != NULL;
}

/* claim_tuple creates the flow s->nf with its translation as it stands,
 * unless another holds the reply tuple: a flow in conntrack, or, for a
 * host-side source, a host socket or a publication (whose clients' next
 * flows would otherwise be translated into this one). The cheap lookups
 * go first; ct_claim, which takes the tuple, last. */
static __always_inline int claim_tuple(struct port_search *s)
{
	if (s->host_side && (port_held(&s->nf->fwd.nat) || host_tuple_in_use(s->ctx, &s->nf->fwd.nat)))
		return -1;
	return ct_claim(s->nf);
}

static long try_nat_port(__u32 i, void *arg)
{
	struct port_search *s = arg;

	if (s->range == 0)
		return 1;
	if (s->left == 0) {
		/* A window found nothing: another, half as wide, elsewhere. */
		if (s->window >= s->range || s->window <= NAT_SEARCH_LAST)
			return 1;
		s->window /= 2;
		s->left = s->window;
		s->off = bpf_get_prandom_u32();
	}
	s->left--;
	s->nf->fwd.nat.sport = bpf_htons(nat_port_min + s->off++ % s->range);
	if (claim_tuple(s) == 0) {
		s->claimed = 1;
		return 1;
	}
	count_bytes(s->prog, VERDICT_NAT_PORT_COLLISION, 0);
	return 0;
}

/* claim_nat_port creates the flow s->nf, translated to s->nf->fwd.nat,
 * with a source port that makes the reply tuple unique. Like netfilter it
 * keeps the port the flow has whenever that is free (no flow, host socket
 * or publication has it), and else takes one of the NAT range, searched
 * within the bound above; the search fails when that finds nothing, which
 * with a range of more than NAT_SEARCH_FIRST ports may happen before every
 * port is taken. A kept port may be one the host's stack picks later for
 * a connection of its own to the same server: host_owns_reply then gives
 * that tuple's replies to the host. */
static __noinline int claim_nat_port(struct ctx_buff *ctx, struct port_search *s, int host_side)
{
	if (ct_taken(&s->nf->orig))
		return -1; /* a live flow of another interface holds the packet's tuple */
	s->ctx = ctx;
	s->host_side = host_side;
	if (claim_tuple(s) == 0)
		return 0;
	count_bytes(s->prog, VERDICT_NAT_PORT_COLLISION, 0);
	s->range = (__u32)nat_port_max - nat_port_min + 1;
	s->window = s->range < NAT_SEARCH_FIRST ? s->range : NAT_SEARCH_FIRST;
	s->left = s->window;
	s->off = bpf_get_prandom_u32();
	s->claimed = 0;
	bpf_loop(NAT_SEARCH_MAX, try_nat_port, s, 0);
	return s->claimed ? 0 : -1;
}

/* hop_limit reads a packet's TTL (IPv4) or hop limit (IPv6), and with
 * IPv4 the 16-bit word of the header it is in, as the checksum counts it. */
static __always_inline __u8 hop_limit(struct ctx_buff *ctx, int v6, __u16 *ttl_word)
{
	__u8 hops = 0;

	*ttl_word = 0;
	if (v6) {
		ctx_load_bytes(ctx, IP6_HOP_LIMIT_OFF, &hops, sizeof(hops));
		return hops;
	}
	ctx_load_bytes(ctx, IP_TTL_OFF, ttl_word, sizeof(*ttl_word));
	return ((__u8 *)ttl_word)[0];
}

/* dec_hop_limit takes one off the TTL or hop limit, as a router does. */
static __always_inline int dec_hop_limit(struct ctx_buff *ctx, int v6, __u8 hops, __u16 ttl_word)
{
	__u16 after = ttl_word;

	if (v6) {
		hops--;
		return ctx_store_bytes(ctx, IP6_HOP_LIMIT_OFF, &hops, sizeof(hops), 0);
	}
	((__u8 *)&after)[0]--;
	if (ctx_l3_csum_replace(ctx, IP_CSUM_OFF, ttl_word, after, sizeof(after)) < 0)
		return -1;
	return ctx_store_bytes(ctx, IP_TTL_OFF, &after, sizeof(after), 0);
}

/* endpoint_frame addresses the frame to an endpoint, from its network's
 * bridge, as if the bridge had forwarded it. */
static __always_inline int endpoint_frame(struct ctx_buff *ctx, const struct endpoint_info *ep)
{
	struct network_info *net = bpf_map_lookup_elem(&networks, &ep->network);

	if (!net)
		return -1;
	if (ctx_store_bytes(ctx, 0, ep->mac, ETH_ALEN, 0) < 0 ||
	    ctx_store_bytes(ctx, ETH_ALEN, net->gateway_mac, ETH_ALEN, 0) < 0)
		return -1;
	return 0;
}

/* host_socket_owns reports whether a host process's own connection owns
 * the packet's flow (its peer may answer from a port number that is also
 * published): connections a host process had before the publication
 * come first, as a conntrack entry would in netfilter. Listeners and
 * unconnected UDP sockets never do: the port is the publication's, and
 * the bind socket hooks keep every other process from binding it. */
static __always_inline int host_socket_owns(struct ctx_buff *ctx, const struct packet *p)
{
	return host_socket(ctx, &p->flow, 1);
}

/* dnat_backend finds where p, a new flow to a published host address
 * and port, goes when it is one, into sc->backend: the publication's
 * sandbox, or for a balanced one the backend its table names for the
 * flow's tuple (backend_of), with the publication's flags. ifindex is
 * where it came in (0: outside).
 * It returns 0 when found, -1 when the packet is no new flow to a
 * publication, or the verdict to drop it with. A frame of its own, off
 * the NAT port search's path. */
static __noinline int dnat_backend(struct ctx_buff *ctx, const struct packet *p, __u32 ifindex,
				   struct new_flow_scratch *sc)
{
	struct publication *pub;
	__u8 flags;

	if (!p->has_ports || is_icmp(p->flow.proto))
		return -1;
	pub = published_at(&sc->source.pub, &p->flow.daddr, p->flow.dport, p->flow.proto);
	if (!pub || host_socket_owns(ctx, p))
		return -1;
	/* No neighbour beyond an uplink sends from these: a reply to one would
	 * go to the host itself, or to many, or nowhere, or into one of the
	 * datapath's own networks (a sandbox's or another runtime's, whose
	 * addresses only their bridges have), or stay on the uplink's link
	 * (an IPv6 link-local source, which no router forwards). */
	if (!ifindex && (addr_is_martian_source(&p->flow.saddr) || is_host_addr(&p->flow.saddr) ||
			 network_of(&p->flow.saddr) || (p->v6 && addr_is_link_local(&p->flow.saddr))))
		return VERDICT_DROP_MARTIAN_SOURCE;
	/* The backend before the lists, which leave the key the lists'. */
	flags = pub->flags;
	pub = backend_of(&sc->source.pub, pub, flow_hash(&p->flow));
	if (!pub)
		return VERDICT_DROP_NO_ROUTE;
	sc->backend = *pub;
	sc->backend.flags = flags;
	if (source_refused(&sc->source, &p->flow.saddr))
		return VERDICT_DROP_SOURCE_RANGE;
	return 0;
}

/* dnat_claim creates the conntrack entries of a new flow to a published
 * host address and port, when it is one, and gives the flow it is
 * translated to, to the backend dnat_backend finds; ifindex is where it
 * came in. snat_to, when given, also masquerades the source (for a
 * sandbox reaching its own published port). When the reply tuple is
 * taken (two publications lead to one sandbox port, and one client port
 * reaches both), the client's port is translated too, as netfilter does.
 * It returns 0 when claimed, -1 when the packet is no new flow to a
 * publication, or the verdict to drop it with. Claiming and delivering
 * are two frames, so that the search's state is off the stack by the
 * time deliver needs it. */
static __noinline int dnat_claim(struct ctx_buff *ctx, const struct packet *p, enum program prog, __u32 ifindex,
				 const union addr *snat_to, struct flow *to)
{
	struct new_flow_scratch *sc;
	struct publication *pub;
	struct endpoint_info *ep;
	struct port_search s;
	int host_side = 0, rc;

	sc = port_search_init(&s, prog);
	if (!sc)
		return -1;
	rc = dnat_backend(ctx, p, ifindex, sc);
	if (rc)
		return rc;
	pub = &sc->backend;
	ep = bpf_map_lookup_elem(&endpoints, &pub->addr);
	if (!ep)
		return VERDICT_DROP_NO_ROUTE;
	if (ct_prepare(s.nf, p, ifindex, ep->ifindex, CT_PUBLISHED_IN, CT_PUBLISHED_OUT) < 0)
		return -1; /* a reset of no flow: the host's to answer */
	if (pub->flags & PUBLICATION_BALANCED) {
		s.nf->fwd.flags |= CT_BALANCED;
		s.nf->rev.flags |= CT_BALANCED;
	}
	s.nf->fwd.nat.daddr = pub->addr;
	s.nf->fwd.nat.dport = pub->port;
	if (snat_to && addr_eq(&pub->addr, &p->flow.saddr)) {
		/* A sandbox reaching itself: its reply must come back through us. */
		s.nf->fwd.nat.saddr = *snat_to;
		host_side = 1;
	} else if (addr_is_v4(&pub->addr) == p->v6) {
		/* An IPv6 client of an IPv4-only sandbox (a publication on [::]
		 * leads to its IPv4 address): the flow is translated to IPv4,
		 * from the sandbox's gateway, as Docker's proxy connects from
		 * it. No IPv4 client reaches an IPv6 address this way. */
		struct network_info *net = bpf_map_lookup_elem(&networks, &ep->network);

		if (!p->v6 || !net || !addr_is_v4(&net->gateway) || !net->gateway.w[3])
			return VERDICT_DROP_NO_ROUTE;
		s.nf->fwd.nat.saddr = net->gateway;
		host_side = 1;
	}
	if (claim_nat_port(ctx, &s, host_side) < 0)
		return VERDICT_DROP_NO_NAT_PORT;
	/* Counted once the flow is: a packet that starts none (a reset)
	 * counts for nothing, and XDP's flow is TC's. */
	count_backend_flow();
	*to = s.nf->fwd.nat;
	return 0;
}

/* track_untranslated remembers a flow that crosses the host untranslated
 * (routed in from outside where the gateway mode lets it, or out of a
 * network that does not masquerade), so its later packets, either way,
 * are known: replies are neither masqueraded nor refused. fwd_ifindex is
 * where the packet came in, rev_ifindex where its replies will. */
static __noinline __attribute__((unused)) void track_untranslated(const struct packet *p, __u32 fwd_ifindex, __u32 rev_ifindex)
{
	struct ct_new_flow nf;

	if (!p->has_ports || ct_prepare(&nf, p, fwd_ifindex, rev_ifindex, 0, 0) < 0)
		return;
	ct_claim(&nf);
}
