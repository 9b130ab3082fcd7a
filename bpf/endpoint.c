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
#include "lib/forward.h"
#include "lib/neighbour.h"
#include "lib/egress.h"
#include "lib/ratelimit.h"

/* link_scope_source reports whether an IPv6 packet comes from a
 * link-local or the unspecified address, which never cross a router. */
static __always_inline int link_scope_source(const struct packet *p)
{
	return p->v6 && (addr_is_link_local(&p->flow.saddr) || addr_is_zero(&p->flow.saddr));
}

/* is_ndp reports whether p is a neighbour solicitation or advertisement. */
static __always_inline int is_ndp(const struct packet *p)
{
	return p->flow.proto == IPPROTO_ICMPV6 &&
	       (p->icmp_type == NDISC_NEIGHBOUR_SOLICITATION || p->icmp_type == NDISC_NEIGHBOUR_ADVERTISEMENT);
}

/* from_link judges what a sandbox sends on its link alone: IPv6 from a
 * link-local or the unspecified address (neighbour discovery, duplicate
 * address detection), which never leaves the bridge, so no network
 * isolation applies; it may go to link-local or multicast addresses only.
 * A neighbour advertisement is the sandbox's claim to an address, as an
 * ARP reply is, and may claim only its own. It returns -1 for packets
 * from a routable address to a routable or multicast one, which the rest
 * of from_container judges. */
static __always_inline int from_link(struct __sk_buff *skb, const struct packet *p, const struct iface_info *src,
				     int *verdict)
{
	union addr target;

	/* A header chain too long to walk may hide an advertisement whose
	 * claim goes unchecked: the receiver's kernel walks it all. */
	if (!p->l4_off && !p->later_fragment) {
		*verdict = drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
		return 0;
	}
	/* A sandbox is no router: its router advertisements and redirects
	 * would lead its neighbours' traffic through it, icc=false or not. */
	if (p->flow.proto == IPPROTO_ICMPV6 &&
	    (p->icmp_type == NDISC_ROUTER_ADVERTISEMENT || p->icmp_type == NDISC_REDIRECT)) {
		*verdict = drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
		return 0;
	}
	if (p->flow.proto == IPPROTO_ICMPV6 && p->icmp_type == NDISC_NEIGHBOUR_ADVERTISEMENT) {
		/* The target address follows the 4 bytes after the header. */
		if (bpf_skb_load_bytes(skb, p->l4_off + 8, target.b, sizeof(target)) < 0 ||
		    !(addr_eq(&target, &src->addr6) || addr_is_link_local(&target))) {
			*verdict = drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
			return 0;
		}
	}
	int own = addr_eq(&p->flow.saddr, &src->addr6);
	int on_link = link_scope_source(p);

	/* To a link-local address the packet stays on the link, from the
	 * sandbox's own address too: its advertisement answering the
	 * bridge's solicitation comes from the address it advertises. */
	if (addr_is_link_local(&p->flow.daddr)) {
		*verdict = own || on_link ? pass(skb, PROGRAM_FROM_CONTAINER)
					  : drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
		return 0;
	}
	if (!on_link)
		return -1;
	if (!addr_is_multicast_or_broadcast(&p->flow.daddr))
		*verdict = drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
	else
		*verdict = pass(skb, PROGRAM_FROM_CONTAINER);
	return 0;
}

/* publication_leads_to reports whether a publication leads to a
 * sandbox's addr:port of protocol proto. */
static __always_inline int publication_leads_to(const union addr *addr, __be16 port, __u8 proto)
{
	struct target_key key = { .addr = *addr, .port = port, .proto = proto };

	return bpf_map_lookup_elem(&published_ports, &key) != NULL;
}

/* is_published_target reports whether a publication leads to the
 * packet's destination port. */
static __always_inline int is_published_target(const struct packet *p)
{
	return p->has_ports && publication_leads_to(&p->flow.daddr, p->flow.dport, p->flow.proto);
}

/* untracked_neighbour reports whether a packet from a sandbox (on network,
 * with gateway) goes to a neighbour on that network in a flow no
 * conntrack entry names: a neighbour's flows are untranslated, but for a
 * published flow's replies (a hairpin's, which go to the client
 * sandbox's own address: only a sandbox reaching itself is seen as from
 * the gateway), whose source port a publication leads to. ICMP errors,
 * which carry no ports, are asked about as ever. Such packets skip
 * conntrack and the host's addresses. */
static __always_inline int untracked_neighbour(const struct packet *p, const __u32 *dst_net, __u32 network,
					       const union addr *gateway)
{
	return dst_net && *dst_net == network && p->has_ports && !addr_eq(&p->flow.daddr, gateway) &&
	       !publication_leads_to(&p->flow.saddr, p->flow.sport, p->flow.proto);
}

/* vlan_tagged reports whether a frame carries a VLAN tag: the one a
 * driver moved into the skb, or one in the frame (a second tag, once the
 * first was moved). No sandbox has a VLAN, and what a tag hides from the
 * checks here the receiver's kernel would take untagged. */
static __always_inline int vlan_tagged(struct __sk_buff *skb)
{
	__be16 proto = 0;

	if (skb->vlan_present)
		return 1;
	bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto));
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* from_own_mac reports whether a frame comes from the hardware address of
 * the endpoint src, where the datapath knows it; an ARP packet's sender
 * too, which the host's neighbour table would learn. */
static __always_inline int from_own_mac(struct __sk_buff *skb, const struct iface_info *src, int arp)
{
	__u8 mac[ETH_ALEN];

	if (!(src->mac[0] | src->mac[1] | src->mac[2] | src->mac[3] | src->mac[4] | src->mac[5]))
		return 1;
	if (bpf_skb_load_bytes(skb, ETH_ALEN, mac, sizeof(mac)) < 0 || !mac_eq(mac, src->mac))
		return 0;
	if (arp && (bpf_skb_load_bytes(skb, ETH_HLEN + 8, mac, sizeof(mac)) < 0 || !mac_eq(mac, src->mac)))
		return 0;
	return 1;
}

/* Packets a sandbox sends (TC ingress of the host-side veth). Every check
 * that the sender could dodge by forging comes first: its source address,
 * then what its network may reach at all; only then may conntrack match,
 * and an entry matches only for the interface its flow came in on. Both
 * families take the same path, each with its own address, gateway and
 * flags. */
SEC("tc")
int from_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface_info *src = bpf_map_lookup_elem(&ifaces, &ifindex);
	struct network_info *net;
	const union addr *own, *gateway;
	struct packet p;
	__u32 *dst_net, flags;
	__be32 sender;
	int l3, to_host, neighbour, verdict;

	if (!src)
		return TC_ACT_UNSPEC;
	net = bpf_map_lookup_elem(&networks, &src->network);
	if (!net)
		return pass(skb, PROGRAM_FROM_CONTAINER);
	if (vlan_tagged(skb))
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_VLAN_TAGGED);
	l3 = parse_packet(skb, &p);
	if (!from_own_mac(skb, src, l3 == L3_ARP))
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
	switch (l3) {
	case L3_ARP:
		/* Answering for another's address would take its traffic. */
		sender = arp_sender(skb);
		if (sender && sender != src->addr.w[3])
			return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
		return pass(skb, PROGRAM_FROM_CONTAINER);
	case L3_OTHER:
		return pass(skb, PROGRAM_FROM_CONTAINER);
	case L3_IPV6:
		if (addr_is_zero(&src->addr6))
			return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_NO_IPV6);
		/* From an address of the sender's own; what it forges would
		 * only come back to itself. */
		if (!(net->flags6 & NETWORK_STACK_ROUTES) &&
		    (addr_eq(&p.flow.saddr, &src->addr6) || addr_is_link_local(&p.flow.saddr)) &&
		    answer_solicitation(skb, &p, src->network, &verdict) == 0)
			return verdict;
		if (from_link(skb, &p, src, &verdict) == 0)
			return verdict;
		own = &src->addr6;
		gateway = &net->gateway6;
		flags = net->flags6;
		break;
	default:
		own = &src->addr;
		gateway = &net->gateway;
		flags = net->flags;
	}
	/* What stays on the link (ARP, neighbour discovery) is not limited:
	 * a sandbox at its limit must still find its neighbours. */
	if (over_rate(skb, ifindex, RATE_EGRESS))
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_RATE_LIMIT);
	if (!addr_eq(&p.flow.saddr, own))
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_SPOOFED);
	/* Loopback is the host's own: a port published on 127.0.0.1 is for
	 * host processes alone. An IPv4 address written v4-mapped into IPv6
	 * never appears on the wire (RFC 4291 2.5.5.2): taken for IPv4, it
	 * would reach IPv4 destinations by IPv6's flags, translated. */
	if (addr_is_loopback(&p.flow.daddr) || (p.v6 && addr_is_v4(&p.flow.daddr)))
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_MARTIAN);
	dst_net = network_of(&p.flow.daddr);
	/* An internal network leads nowhere but to itself (its gateway
	 * included, and the groups that never leave its link), not even to
	 * the host's published ports. */
	if ((flags & NETWORK_INTERNAL) && (!dst_net || *dst_net != src->network) &&
	    !addr_is_link_scope_group(&p.flow.daddr))
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_INTERNAL);
	if (egress_refused(skb, &p, ifindex, dst_net, src->network))
		return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_EGRESS_POLICY);

	neighbour = untracked_neighbour(&p, dst_net, src->network, gateway);
	/* Replies of published flows, hairpins and established flows, and
	 * the sandbox's ICMP errors about them. */
	if (!neighbour && (translate_known(skb, &p, ifindex, PROGRAM_FROM_CONTAINER, gateway, &verdict) == 0 ||
			   translate_icmp_error(skb, &p, ifindex, PROGRAM_FROM_CONTAINER, &verdict) == 0))
		return verdict;
	/* A published port on a host address, from any network but an
	 * internal one, whose gateway leads nowhere either. */
	to_host = !neighbour && is_host_addr(&p.flow.daddr);
	if (to_host && !(flags & NETWORK_INTERNAL) &&
	    dnat_published(skb, &p, PROGRAM_FROM_CONTAINER, ifindex, gateway, &verdict) == 0)
		return verdict;

	if (dst_net) {
		if (*dst_net != src->network)
			return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_CROSS_NETWORK);
		/* The gateway is the host itself, which icc=false does not fence off. */
		if ((flags & NETWORK_ICC_DISABLED) && !addr_eq(&p.flow.daddr, gateway))
			return drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_ICC);
		/* A chained network's neighbours are its plugin's to connect. */
		if (!(flags & NETWORK_STACK_ROUTES) && to_neighbour(skb, &p, src->network, net, &verdict) == 0)
			return verdict;
		return pass(skb, PROGRAM_FROM_CONTAINER);
	}
	if (to_host || addr_is_multicast_or_broadcast(&p.flow.daddr))
		return pass(skb, PROGRAM_FROM_CONTAINER);
	if (!p.has_ports) {
		/* Nothing to translate it by (a fragment without its first,
		 * another protocol, a header cut short): it would leave with the
		 * sandbox's own address. */
		if (!(flags & NETWORK_MASQUERADE))
			return pass(skb, PROGRAM_FROM_CONTAINER);
		return drop(skb, PROGRAM_FROM_CONTAINER,
			    p.later_fragment ? VERDICT_FRAG_NO_FIRST : VERDICT_DROP_UNTRANSLATABLE);
	}
	if (!(flags & NETWORK_MASQUERADE)) {
		if (!(flags & NETWORK_STACK_ROUTES))
			track_untranslated(&p, ifindex, 0);
		return pass(skb, PROGRAM_FROM_CONTAINER);
	}
	return masquerade(skb, &p, gateway);
}

/* misdelivered reports whether a unicast frame at the veth ifindex is for
 * another endpoint: the bridge floods a frame whose MAC it has not
 * learnt to every port, and a sandbox listening with a raw socket would
 * read its neighbour's traffic. */
static __always_inline int misdelivered(struct __sk_buff *skb, const struct packet *p, __u32 ifindex)
{
	const struct endpoint_info *ep;
	__u8 dst[ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, dst, sizeof(dst)) < 0 || (dst[0] & 1))
		return 0;
	ep = bpf_map_lookup_elem(&endpoints, &p->flow.daddr);
	return ep && ep->ifindex != ifindex;
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
	__u32 *src_net, flags;
	int l3, assured = 0, on_link;

	if (!dst)
		return TC_ACT_UNSPEC;
	net = bpf_map_lookup_elem(&networks, &dst->network);
	if (!net)
		return pass(skb, PROGRAM_TO_CONTAINER);
	l3 = parse_packet(skb, &p);
	if (l3 == L3_IPV6 && addr_is_zero(&dst->addr6))
		return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_NO_IPV6);
	if (l3 != L3_IPV4 && l3 != L3_IPV6)
		return pass(skb, PROGRAM_TO_CONTAINER);
	if (misdelivered(skb, &p, ifindex))
		return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_MISDELIVERED);
	flags = p.v6 ? net->flags6 : net->flags;
	on_link = link_scope_source(&p);
	src_net = network_of(&p.flow.saddr);
	if (in == 0) {
		/* From the host itself, which reaches the sandboxes of every
		 * network but an internal one from outside its subnet. */
		if (!on_link && (flags & NETWORK_INTERNAL) && (!src_net || *src_net != dst->network))
			return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_INTERNAL);
		return pass_in(skb, PROGRAM_TO_CONTAINER, ifindex);
	}
	from = bpf_map_lookup_elem(&ifaces, &in);
	if (from) {
		/* Bridged from a neighbour's veth, whose program checked it. */
		if (from->network != dst->network)
			return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_CROSS_NETWORK);
		/* Its program judged a link-local destination by nothing but
		 * the link: icc=false leaves a neighbour only neighbour
		 * discovery and multicast. */
		if (on_link && (flags & NETWORK_ICC_DISABLED) && !is_ndp(&p) &&
		    !addr_is_multicast_or_broadcast(&p.flow.daddr))
			return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_ICC);
		return pass_in(skb, PROGRAM_TO_CONTAINER, ifindex);
	}
	/* From elsewhere: an uplink, or another device of the host. */
	if (on_link)
		return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_SPOOFED);
	if (flags & NETWORK_INTERNAL)
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
		return pass_in(skb, PROGRAM_TO_CONTAINER, ifindex);
	}
	if (icmp_error_of_known_flow(skb, &p, dst))
		return pass_in(skb, PROGRAM_TO_CONTAINER, ifindex);
	if (!(flags & NETWORK_DIRECT_ALL) &&
	    !((flags & NETWORK_DIRECT_PUBLISHED) && is_published_target(&p)))
		return drop(skb, PROGRAM_TO_CONTAINER, VERDICT_DROP_UNPUBLISHED);
	if (!(flags & NETWORK_STACK_ROUTES))
		track_untranslated(&p, 0, ifindex);
	return pass_in(skb, PROGRAM_TO_CONTAINER, ifindex);
}

/* Frames from other hosts' endpoints of an overlay network, as its VXLAN
 * device decapsulated them (TC ingress of the device). Bridged, they would
 * meet the host's netfilter as frames between local endpoints would
 * (lib/neighbour.h): unicast to an endpoint here goes straight into its
 * namespace instead. */
SEC("tc")
int from_tunnel(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface_info *tunnel = bpf_map_lookup_elem(&ifaces, &ifindex);
	struct packet p;
	int l3, rc;

	if (!tunnel)
		return TC_ACT_UNSPEC;
	l3 = parse_packet(skb, &p);
	if (l3 != L3_IPV4 && l3 != L3_IPV6)
		return pass(skb, PROGRAM_FROM_TUNNEL);
	/* Peers' endpoints send from the network's subnet (or, neighbour
	 * discovery, from a link-local address). Anything else a peer host
	 * routed onto the overlay from outside, where no endpoint program
	 * asked the gateway mode or --internal. */
	if (!link_scope_source(&p)) {
		__u32 *src_net = network_of(&p.flow.saddr);

		if (!src_net || *src_net != tunnel->network)
			return drop(skb, PROGRAM_FROM_TUNNEL, VERDICT_DROP_SPOOFED);
	}
	rc = from_tunnel_to_neighbour(skb, &p, ifindex, tunnel->network);
	return rc < 0 ? pass(skb, PROGRAM_FROM_TUNNEL) : rc;
}

char __license[] SEC("license") = "Dual BSD/GPL";
