//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Programs on the host side of every bridge endpoint's veth. They replace
 * Docker's DOCKER-ISOLATION chains: the source network of a packet is the
 * network of the veth it came in on, never its (spoofable) source address. */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/verdict.h"

/* Packets a sandbox sends (TC ingress of the host-side veth). */
SEC("tc")
int from_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface_info *src = bpf_map_lookup_elem(&ifaces, &ifindex);
	struct network_info *net;
	struct iphdr *ip;
	__u32 *dst_net;

	if (!src)
		return TC_ACT_UNSPEC;
	net = bpf_map_lookup_elem(&networks, &src->network);
	if (!net || parse_ipv4(skb, &ip) < 0)
		return pass(skb);

	dst_net = network_of(ip->daddr);
	if (!dst_net)
		return net->flags & NETWORK_INTERNAL ? drop(skb, VERDICT_DROP_INTERNAL) : pass(skb);
	if (*dst_net != src->network)
		return drop(skb, VERDICT_DROP_CROSS_NETWORK);
	/* The gateway is the host itself, which icc=false does not fence off. */
	if ((net->flags & NETWORK_ICC_DISABLED) && ip->daddr != net->gateway)
		return drop(skb, VERDICT_DROP_ICC);
	return pass(skb);
}

/* Packets about to reach a sandbox (TC egress of the host-side veth). Only
 * internal networks filter here: everything else was checked where it entered. */
SEC("tc")
int to_container(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct iface_info *dst = bpf_map_lookup_elem(&ifaces, &ifindex);
	struct network_info *net;
	struct iphdr *ip;
	__u32 *src_net;

	if (!dst)
		return TC_ACT_UNSPEC;
	net = bpf_map_lookup_elem(&networks, &dst->network);
	if (!net || !(net->flags & NETWORK_INTERNAL) || parse_ipv4(skb, &ip) < 0)
		return pass(skb);

	src_net = network_of(ip->saddr);
	if (!src_net || *src_net != dst->network)
		return drop(skb, VERDICT_DROP_INTERNAL);
	return pass(skb);
}

char __license[] SEC("license") = "Dual BSD/GPL";
