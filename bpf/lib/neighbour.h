/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Delivery between the endpoints of one network, past the bridge.
 *
 * A bridge forwards between its ports through the host's netfilter
 * whenever br_netfilter is loaded with bridge-nf-call-iptables set, as
 * Docker, ufw and firewalld hosts have it, and their FORWARD policy is
 * DROP. So every unicast packet the endpoint program accepts for a
 * neighbour is put into the neighbour's namespace here, as Cilium does
 * between pods; ARP never meets iptables and keeps using the bridge, and
 * the neighbour solicitations that would meet ip6tables are answered here
 * for the network's endpoints. */
#pragma once

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "parse.h"
#include "verdict.h"
#include "ratelimit.h"

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5];
}

/* is_neighbour reports whether ep, the endpoint of a frame's destination
 * address, is that frame's neighbour on network: a local endpoint of the
 * network, other than the one the frame came from (ifindex), with the
 * frame's destination hardware address mac. A frame addressed to another
 * hardware address (the gateway's, say, as a sandbox routing through the
 * host addresses it) is not a neighbour's. */
static __always_inline int is_neighbour(const struct endpoint_info *ep, __u32 network, __u32 ifindex, const __u8 *mac)
{
	return ep->network == network && ep->ifindex != ifindex && mac_eq(ep->mac, mac);
}

/* to_neighbour delivers a unicast packet from one endpoint to another of
 * its network (the caller has judged it allowed), unchanged, as the
 * bridge would have: a hop on one link, so the TTL stays. A local
 * endpoint gets it in its namespace; on an overlay network, a frame to
 * any other unicast hardware address but the gateway's is for an
 * endpoint on another host, and goes out of the network's VXLAN device,
 * whose forwarding table knows that address's host. It returns -1 when
 * the frame is for none of these: the bridge's business. */
static __always_inline int to_neighbour(struct __sk_buff *skb, const struct packet *p, __u32 network,
					const struct network_info *net, int *verdict)
{
	const struct endpoint_info *ep;
	__u8 dst[ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, dst, sizeof(dst)) < 0)
		return -1;
	ep = bpf_map_lookup_elem(&endpoints, &p->flow.daddr);
	if (ep) {
		if (!is_neighbour(ep, network, skb->ifindex, dst))
			return -1;
		if (over_rate(skb, ep->ifindex, RATE_INGRESS)) {
			*verdict = drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_RATE_LIMIT);
			return 0;
		}
		count(skb, PROGRAM_FROM_CONTAINER, VERDICT_TO_NEIGHBOUR);
		*verdict = bpf_redirect_peer(ep->ifindex, 0);
		return 0;
	}
	if (!net->tunnel || (dst[0] & 1) || mac_eq(dst, net->gateway_mac))
		return -1;
	count(skb, PROGRAM_FROM_CONTAINER, VERDICT_TO_NEIGHBOUR);
	*verdict = bpf_redirect(net->tunnel, 0);
	return 0;
}

/* from_tunnel_to_neighbour delivers a unicast packet that an overlay
 * network's VXLAN device (ifindex, on network) decapsulated into the
 * local endpoint it is addressed to. The sending host's endpoint program
 * judged it, as it judges what it delivers to its own neighbours. It
 * returns -1 for anything else (ARP, broadcast, multicast), which the
 * bridge floods as before. */
static __always_inline int from_tunnel_to_neighbour(struct __sk_buff *skb, const struct packet *p, __u32 ifindex,
						    __u32 network)
{
	const struct endpoint_info *ep;
	__u8 dst[ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, dst, sizeof(dst)) < 0)
		return -1;
	ep = bpf_map_lookup_elem(&endpoints, &p->flow.daddr);
	if (!ep || !is_neighbour(ep, network, ifindex, dst))
		return -1;
	if (over_rate(skb, ep->ifindex, RATE_INGRESS))
		return drop(skb, PROGRAM_FROM_TUNNEL, VERDICT_DROP_RATE_LIMIT);
	count(skb, PROGRAM_FROM_TUNNEL, VERDICT_TO_NEIGHBOUR);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/* A neighbour advertisement (RFC 4861 4.4) with its target link-layer
 * address option, as answer_solicitation writes it after the IPv6 header. */
struct neighbour_advert {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 flags; /* R, S, O in the top bits */
	union addr target;
	__u8 opt_type; /* 2: target link-layer address */
	__u8 opt_len;  /* in units of 8 bytes */
	__u8 mac[ETH_ALEN];
};

/* The IPv6 pseudo-header an ICMPv6 checksum covers (RFC 8200 8.1). */
struct ipv6_pseudo {
	union addr saddr;
	union addr daddr;
	__be32 len;
	__be32 next;
};

#define NDISC_FLAG_SOLICITED 0x40000000
#define NDISC_FLAG_OVERRIDE 0x20000000
#define NDISC_OPT_TARGET_LLADDR 2

/* answer_solicitation answers a neighbour solicitation from an endpoint
 * (p, from the host side ifindex) for the address of another endpoint of
 * its network, in that endpoint's name: the advertisement goes back into
 * the sender's namespace, and the solicitation goes nowhere else. It
 * returns -1 when the solicitation is not one to answer: duplicate
 * address detection (from ::), whose answer would claim a conflict, or
 * a target that is no local endpoint of the network, or a solicitation
 * that is not valid (RFC 4861 7.1.1: hop limit 255, code 0). */
static __noinline int answer_solicitation(struct __sk_buff *skb, const struct packet *p, __u32 network,
				     int *verdict)
{
	struct ethhdr eth;
	struct ipv6hdr ip6;
	struct neighbour_advert na = {};
	struct ipv6_pseudo ph = {};
	const struct endpoint_info *ep;
	__u8 code;
	__s64 sum;

	if (p->flow.proto != IPPROTO_ICMPV6 || p->icmp_type != NDISC_NEIGHBOUR_SOLICITATION || !p->l4_off ||
	    addr_is_zero(&p->flow.saddr))
		return -1;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0 ||
	    bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)) < 0 ||
	    bpf_skb_load_bytes(skb, p->l4_off + 1, &code, sizeof(code)) < 0 ||
	    bpf_skb_load_bytes(skb, p->l4_off + 8, &na.target, sizeof(na.target)) < 0)
		return -1;
	/* An IPv4 address written v4-mapped is the key of an endpoint's IPv4
	 * entry, never an IPv6 address of anyone's. */
	if (ip6.hop_limit != 255 || code != 0 || addr_is_v4(&na.target))
		return -1;
	ep = bpf_map_lookup_elem(&endpoints, &na.target);
	if (!ep || ep->network != network || ep->ifindex == skb->ifindex)
		return -1;

	na.type = NDISC_NEIGHBOUR_ADVERTISEMENT;
	na.flags = bpf_htonl(NDISC_FLAG_SOLICITED | NDISC_FLAG_OVERRIDE);
	na.opt_type = NDISC_OPT_TARGET_LLADDR;
	na.opt_len = 1;
	__builtin_memcpy(na.mac, ep->mac, ETH_ALEN);
	ph.saddr = na.target;
	ph.daddr = p->flow.saddr;
	ph.len = bpf_htonl(sizeof(na));
	ph.next = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	if (sum >= 0)
		sum = bpf_csum_diff(0, 0, (__be32 *)&na, sizeof(na), sum);
	if (sum < 0)
		return -1;
	na.checksum = csum_fold(sum);

	__builtin_memcpy(eth.h_dest, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, ep->mac, ETH_ALEN);
	ip6.priority = 0;
	__builtin_memset(ip6.flow_lbl, 0, sizeof(ip6.flow_lbl));
	ip6.payload_len = bpf_htons(sizeof(na));
	ip6.nexthdr = IPPROTO_ICMPV6;
	__builtin_memcpy(&ip6.saddr, na.target.b, sizeof(ip6.saddr));
	__builtin_memcpy(&ip6.daddr, p->flow.saddr.b, sizeof(ip6.daddr));
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(ip6) + sizeof(na), 0) < 0 ||
	    bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6), 0) < 0 ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(ip6), &na, sizeof(na), 0) < 0) {
		*verdict = drop(skb, PROGRAM_FROM_CONTAINER, VERDICT_DROP_NO_ROUTE);
		return 0;
	}
	count(skb, PROGRAM_FROM_CONTAINER, VERDICT_NEIGHBOUR_ANSWERED);
	*verdict = bpf_redirect(skb->ifindex, 0);
	return 0;
}
