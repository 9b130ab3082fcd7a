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

/* masquerade sends a new flow to the outside from the address of the
 * uplink it leaves through. Flows not leaving through an uplink are the
 * stack's business. */
static __always_inline int masquerade(struct __sk_buff *skb, const struct packet *p)
{
	struct bpf_fib_lookup fib;
	struct uplink_info *up;
	struct flow nat;
	__u32 out;
	int rc;

	rc = fib_route(skb, p->flow.saddr, p->flow.daddr, &fib);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return pass(skb, PROGRAM_FROM_CONTAINER);
	out = fib.ifindex;
	up = bpf_map_lookup_elem(&uplinks, &out);
	if (!up)
		return pass(skb, PROGRAM_FROM_CONTAINER);
	nat = p->flow;
	nat.saddr = up->addr;
	if (claim_nat_port(&p->flow, &nat, 0, PROGRAM_FROM_CONTAINER) < 0)
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_NO_NAT_PORT);
	if (rewrite(skb, p, &nat) < 0)
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_NO_ROUTE);
	count(skb, PROGRAM_FROM_CONTAINER, VERDICT_SNAT);
	return redirect_routed(skb, rc, &fib);
}

/* Packets a sandbox sends (TC ingress of the host-side veth). */
SEC("tc")
int from_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface_info *src = bpf_map_lookup_elem(&ifaces, &ifindex);
	struct network_info *net;
	struct packet p;
	__u32 *dst_net;
	int to_host, verdict;

	if (!src)
		return TC_ACT_UNSPEC;
	net = bpf_map_lookup_elem(&networks, &src->network);
	if (!net || parse_packet(skb, &p) < 0)
		return pass(skb, PROGRAM_FROM_CONTAINER);

	/* Replies of published flows, hairpins and established flows. */
	if (translate_known(skb, &p, PROGRAM_FROM_CONTAINER, &verdict) == 0)
		return verdict;
	/* A published port on a host address, from any network but an
	 * internal one (which leads nowhere, not even to the host's ports). */
	to_host = is_host_addr(p.flow.daddr);
	if (to_host && !(net->flags & NETWORK_INTERNAL) &&
	    dnat_published(skb, &p, PROGRAM_FROM_CONTAINER, net->gateway, &verdict) == 0)
		return verdict;

	dst_net = network_of(p.flow.daddr);
	if (dst_net) {
		if (*dst_net != src->network)
			return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_CROSS_NETWORK);
		/* The gateway is the host itself, which icc=false does not fence off. */
		if ((net->flags & NETWORK_ICC_DISABLED) && p.flow.daddr != net->gateway)
			return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_ICC);
		return pass(skb, PROGRAM_FROM_CONTAINER);
	}
	if (net->flags & NETWORK_INTERNAL)
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_INTERNAL);
	if (to_host || !(net->flags & NETWORK_MASQUERADE) || !p.has_ports)
		return pass(skb, PROGRAM_FROM_CONTAINER);
	return masquerade(skb, &p);
}

/* Packets about to reach a sandbox through the bridge (TC egress of the
 * host-side veth): routed in from elsewhere, or bridged from a neighbour.
 * Internal networks take nothing from outside; flows routed in from
 * outside are tracked so their replies are not masqueraded. Translated
 * packets never pass here: they are put into the sandbox directly. */
SEC("tc")
int to_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface_info *dst = bpf_map_lookup_elem(&ifaces, &ifindex);
	struct network_info *net;
	struct packet p;
	__u32 *src_net;

	if (!dst)
		return TC_ACT_UNSPEC;
	net = bpf_map_lookup_elem(&networks, &dst->network);
	if (!net || parse_packet(skb, &p) < 0)
		return pass(skb, PROGRAM_TO_CONTAINER);
	if (net->flags & NETWORK_INTERNAL) {
		src_net = network_of(p.flow.saddr);
		if (!src_net || *src_net != dst->network)
			return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_INTERNAL);
		return pass(skb, PROGRAM_TO_CONTAINER);
	}
	remember_inbound(&p);
	return pass(skb, PROGRAM_TO_CONTAINER);
}

char __license[] SEC("license") = "Dual BSD/GPL";
