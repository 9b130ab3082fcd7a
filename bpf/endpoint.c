//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Programs on the host side of every bridge endpoint's veth. They replace
 * Docker's DOCKER-ISOLATION chains and the DNAT and MASQUERADE rules for
 * traffic leaving sandboxes. The source network of a packet is the network
 * of the veth it came in on, never its (spoofable) source address. */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/verdict.h"
#include "lib/nat.h"

/* uplink_source returns the address a flow from saddr to daddr leaves the
 * host with: the address of the uplink it is routed through, or 0 when
 * it does not leave through an uplink. */
static __noinline __be32 uplink_source(struct __sk_buff *skb, __be32 saddr, __be32 daddr)
{
	struct bpf_fib_lookup fib;
	struct uplink_info *up;
	__u32 out;
	int rc;

	rc = fib_route(skb, saddr, daddr, &fib);
	/* Too big for the uplink still says which uplink: deliver answers it. */
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return 0;
	out = fib.ifindex;
	up = bpf_map_lookup_elem(&uplinks, &out);
	return up ? up->addr : 0;
}

/* masquerade sends a new flow to the outside from the address of the
 * uplink it leaves through. Flows not leaving through an uplink are the
 * stack's business. */
static __noinline int masquerade(struct __sk_buff *skb, const struct packet *p, __be32 gateway)
{
	struct port_search s;
	__be32 src = uplink_source(skb, p->flow.saddr, p->flow.daddr);

	if (!src)
		return pass(skb, PROGRAM_FROM_CONTAINER);
	/* A reset of no flow would leave with the sandbox's own address. */
	if (ct_prepare(&s.nf, p, skb->ifindex, 0, 0, 0) < 0)
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_CT_INVALID);
	s.prog = PROGRAM_FROM_CONTAINER;
	s.nf.fwd.nat.saddr = src;
	if (claim_nat_port(skb, &s, 1) < 0)
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_NO_NAT_PORT);
	return deliver(skb, p, PROGRAM_FROM_CONTAINER, VERDICT_SNAT, &s.nf.fwd.nat, gateway);
}

/* Packets a sandbox sends (TC ingress of the host-side veth). Every check
 * that the sender could dodge by forging comes first: its source address,
 * then what its network may reach at all; only then may conntrack match,
 * and an entry matches only for the interface its flow came in on. */
SEC("tc")
int from_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface_info *src = bpf_map_lookup_elem(&ifaces, &ifindex);
	struct network_info *net;
	struct packet p;
	__u32 *dst_net;
	__be32 sender;
	int l3, to_host, verdict;

	if (!src)
		return TC_ACT_UNSPEC;
	net = bpf_map_lookup_elem(&networks, &src->network);
	if (!net)
		return pass(skb, PROGRAM_FROM_CONTAINER);
	l3 = parse_packet(skb, &p);
	switch (l3) {
	case L3_ARP:
		/* Answering for another's address would take its traffic. */
		sender = arp_sender(skb);
		if (sender && sender != src->addr)
			return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
		return pass(skb, PROGRAM_FROM_CONTAINER);
	case L3_IPV6:
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_NO_IPV6);
	case L3_OTHER:
		return pass(skb, PROGRAM_FROM_CONTAINER);
	}
	if (p.flow.saddr != src->addr)
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
	/* Loopback is the host's own: a port published on 127.0.0.1 is for
	 * host processes alone. */
	if (is_loopback(p.flow.daddr))
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_MARTIAN);
	dst_net = network_of(p.flow.daddr);
	/* An internal network leads nowhere but to itself (its gateway
	 * included), not even to the host's published ports. */
	if ((net->flags & NETWORK_INTERNAL) && (!dst_net || *dst_net != src->network))
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_INTERNAL);

	/* Replies of published flows, hairpins and established flows, and
	 * the sandbox's ICMP errors about them. */
	if (translate_known(skb, &p, ifindex, PROGRAM_FROM_CONTAINER, net->gateway, &verdict) == 0 ||
	    translate_icmp_error(skb, &p, ifindex, PROGRAM_FROM_CONTAINER, &verdict) == 0)
		return verdict;
	/* A published port on a host address, from any network but an
	 * internal one, whose gateway leads nowhere either. */
	to_host = is_host_addr(p.flow.daddr);
	if (to_host && !(net->flags & NETWORK_INTERNAL) &&
	    dnat_published(skb, &p, PROGRAM_FROM_CONTAINER, ifindex, net->gateway, &verdict) == 0)
		return verdict;

	if (dst_net) {
		if (*dst_net != src->network)
			return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_CROSS_NETWORK);
		/* The gateway is the host itself, which icc=false does not fence off. */
		if ((net->flags & NETWORK_ICC_DISABLED) && p.flow.daddr != net->gateway)
			return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_ICC);
		return pass(skb, PROGRAM_FROM_CONTAINER);
	}
	if (to_host || is_multicast_or_broadcast(p.flow.daddr))
		return pass(skb, PROGRAM_FROM_CONTAINER);
	if (!p.has_ports) {
		/* Nothing to translate it by (a fragment without its first,
		 * another protocol, a header cut short): it would leave with the
		 * sandbox's own address. */
		if (!(net->flags & NETWORK_MASQUERADE))
			return pass(skb, PROGRAM_FROM_CONTAINER);
		return drop(skb, PROGRAM_FROM_CONTAINER,
			    p.later_fragment ? VERDICT_FRAG_NO_FIRST : VERDICT_DROP_UNTRANSLATABLE);
	}
	if (!(net->flags & NETWORK_MASQUERADE)) {
		if (!(net->flags & NETWORK_STACK_ROUTES))
			track_untranslated(&p, ifindex, 0);
		return pass(skb, PROGRAM_FROM_CONTAINER);
	}
	return masquerade(skb, &p, net->gateway);
}

/* is_published_target reports whether a publication leads to the
 * packet's destination port. */
static __always_inline int is_published_target(const struct packet *p)
{
	struct target_key key = { .addr = p->flow.daddr, .port = p->flow.dport, .proto = p->flow.proto };

	return p->has_ports && bpf_map_lookup_elem(&published_ports, &key) != NULL;
}

/* Packets about to reach a sandbox through the bridge (TC egress of the
 * host-side veth): bridged from a neighbour, from the host itself, or
 * routed in from elsewhere. Where a packet came in says which, not its
 * source address, which anyone outside can forge. Internal networks take
 * nothing from elsewhere; for the others the gateway mode says what may
 * come straight in, and such flows are tracked so their replies leave as
 * they are. Translated packets never pass here: they are put into the
 * sandbox directly. */
SEC("tc")
int to_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex, in = skb->ingress_ifindex;
	struct iface_info *dst = bpf_map_lookup_elem(&ifaces, &ifindex);
	struct iface_info *from;
	struct network_info *net;
	struct ct_entry *e;
	struct packet p;
	__u32 *src_net;
	int l3, assured = 0;

	if (!dst)
		return TC_ACT_UNSPEC;
	net = bpf_map_lookup_elem(&networks, &dst->network);
	if (!net)
		return pass(skb, PROGRAM_TO_CONTAINER);
	l3 = parse_packet(skb, &p);
	if (l3 == L3_IPV6)
		return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_NO_IPV6);
	if (l3 != L3_IPV4)
		return pass(skb, PROGRAM_TO_CONTAINER);
	src_net = network_of(p.flow.saddr);
	if (in == 0) {
		/* From the host itself, which reaches the sandboxes of every
		 * network but an internal one from outside its subnet. */
		if ((net->flags & NETWORK_INTERNAL) && (!src_net || *src_net != dst->network))
			return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_INTERNAL);
		return pass(skb, PROGRAM_TO_CONTAINER);
	}
	from = bpf_map_lookup_elem(&ifaces, &in);
	if (from) {
		/* Bridged from a neighbour's veth, whose program checked it. */
		if (from->network != dst->network)
			return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_CROSS_NETWORK);
		return pass(skb, PROGRAM_TO_CONTAINER);
	}
	/* From elsewhere: an uplink, or another device of the host. */
	if (net->flags & NETWORK_INTERNAL)
		return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_INTERNAL);
	/* Another runtime's network is another network; any other local
	 * network's address can only be forged out there. */
	if (src_net)
		return drop(skb, PROGRAM_TO_CONTAINER,
			    *src_net == NETWORK_FOREIGN ? VERDICT_DROP_CROSS_NETWORK : VERDICT_DROP_SPOOFED);
	/* A flow already known (a reply to one the sandbox started
	 * untranslated), or what the gateway mode lets in. */
	if (p.has_ports && (e = ct_lookup(&p.flow, 0, &assured))) {
		ct_update(&p.flow, e, assured, &p, PROGRAM_TO_CONTAINER);
		return pass(skb, PROGRAM_TO_CONTAINER);
	}
	if (icmp_error_of_known_flow(skb, &p))
		return pass(skb, PROGRAM_TO_CONTAINER);
	if (!(net->flags & NETWORK_DIRECT_ALL) &&
	    !((net->flags & NETWORK_DIRECT_PUBLISHED) && is_published_target(&p)))
		return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_UNPUBLISHED);
	if (!(net->flags & NETWORK_STACK_ROUTES))
		track_untranslated(&p, 0, ifindex);
	return pass(skb, PROGRAM_TO_CONTAINER);
}

char __license[] SEC("license") = "Dual BSD/GPL";
