//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The program on TC ingress of the host's uplinks. It replaces Docker's
 * DNAT rules for published ports (and the docker-proxy that serves them)
 * and reverse-translates the replies of masqueraded flows. The client's
 * address is kept: the sandbox sees who connected. */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/verdict.h"
#include "lib/forward.h"

/* to_this_host reports whether the kernel would deliver a packet here
 * rather than route it on: to an address of the host, to a broadcast
 * address (the limited one, or a subnet's, which only the FIB knows) or
 * to a multicast group. A VXLAN socket listens on every address, so all
 * of them reach the overlay's VXLAN devices. */
static __always_inline int to_this_host(struct __sk_buff *skb, const struct packet *p)
{
	struct bpf_fib_lookup *fib;
	__u32 zero = 0;

	if (is_host_addr(&p->flow.daddr) || addr_is_multicast_or_broadcast(&p->flow.daddr))
		return 1;
	fib = bpf_map_lookup_elem(&fib_scratch, &zero);
	/* NOT_FWDED is also "no route", which the kernel drops anyway. */
	return !fib || fib_route(skb, &p->flow.saddr, &p->flow.daddr, fib) == BPF_FIB_LKUP_RET_NOT_FWDED;
}

/* forged_vxlan reports whether a packet to the host is VXLAN for an
 * overlay network's VNI from an address that is no host of the cluster:
 * anyone on the underlay could otherwise put frames into the overlay,
 * from any sandbox's address. Other VNIs are another user's of VXLAN. */
static __always_inline int forged_vxlan(struct __sk_buff *skb, const struct packet *p)
{
	struct vxlan_header h;
	struct iphdr ip;
	__u32 vni;

	if (p->flow.proto != IPPROTO_UDP || !p->l4_off || p->later_fragment ||
	    p->flow.dport != bpf_htons(VXLAN_PORT) || !to_this_host(skb, p) ||
	    bpf_map_lookup_elem(&overlay_peers, &p->flow.saddr))
		return 0;
	/* The overlays' VXLAN devices are IPv4's. A first fragment that
	 * ends before the VXLAN header (Ethernet's padding after it is no
	 * header) hides the VNI in a later fragment, which carries no port
	 * to be judged by, and the kernel would take the datagram whole: no
	 * VTEP splits the header off, so it is dropped. */
	if (!p->v6) {
		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return 0;
		/* A GSO packet longer than 64 KiB (BIG TCP) says 0: its length is the skb's. */
		__u32 len = ip.tot_len ? bpf_ntohs(ip.tot_len) : skb->len - ETH_HLEN;
		if (p->l4_off + sizeof(struct udphdr) + sizeof(h) > ETH_HLEN + len)
			return !!(ip.frag_off & bpf_htons(IP_MF));
	}
	if (bpf_skb_load_bytes(skb, p->l4_off + sizeof(struct udphdr), &h, sizeof(h)) < 0 ||
	    !(h.flags & VXLAN_FLAG_VNI))
		return 0; /* not VXLAN the kernel would take */
	vni = (__u32)h.vni[0] << 16 | (__u32)h.vni[1] << 8 | h.vni[2];
	return bpf_map_lookup_elem(&overlay_vnis, &vni) != NULL;
}

SEC("tc")
int uplink_ingress(struct __sk_buff *skb)
{
	struct packet p;
	int l3 = parse_packet(skb, &p), verdict;

	if (l3 != L3_IPV4 && l3 != L3_IPV6)
		return TC_ACT_UNSPEC;
	/* The host's stack judges these. */
	if (v4_mapped_v6(&p))
		return pass(skb, PROGRAM_UPLINK);
	if (forged_vxlan(skb, &p))
		return drop(skb, PROGRAM_UPLINK, VERDICT_DROP_UNKNOWN_VTEP);
	/* Conntrack entries of flows from outside are keyed to ifindex 0:
	 * whatever uplink a flow's packets take, they match. */
	if (translate_known(skb, &p, 0, PROGRAM_UPLINK, &p.flow.daddr, &verdict) == 0 ||
	    translate_icmp_error(skb, &p, 0, PROGRAM_UPLINK, &verdict) == 0)
		return verdict;
	if (p.later_fragment && !p.has_ports)
		count(skb, PROGRAM_UPLINK, VERDICT_FRAG_NO_FIRST); /* the host's, or out of order: passed as it is */
	if (!reachable_from_outside(&p.flow.daddr))
		return pass(skb, PROGRAM_UPLINK);
	if (dnat_published(skb, &p, PROGRAM_UPLINK, 0, NULL, &verdict) == 0)
		return verdict;
	return pass(skb, PROGRAM_UPLINK);
}

/* icmp_of reports whether a frame is ICMP or ICMPv6 (without extension
 * headers, as the host's pings are), from one byte: most of what leaves
 * is not, and needs no parsing. */
static __always_inline int icmp_of(struct __sk_buff *skb)
{
	__u8 proto = 0;

	if (skb->protocol == bpf_htons(ETH_P_IP))
		bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, sizeof(proto));
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &proto, sizeof(proto));
	return is_icmp(proto);
}

/* The program on TC egress of the host's uplinks. It notes the host's own
 * echo requests (note_host_echo), whose replies no sandbox's masqueraded
 * ping may take. What the host forwards (a sandbox's translated packets)
 * came in on an interface; what it sends itself did not. */
SEC("tc")
int uplink_egress(struct __sk_buff *skb)
{
	struct packet p;

	if (skb->ingress_ifindex || !icmp_of(skb))
		return TC_ACT_UNSPEC;
	int l3 = parse_packet(skb, &p);

	if ((l3 == L3_IPV4 || l3 == L3_IPV6) && p.icmp_request && !p.later_fragment && is_host_addr(&p.flow.saddr))
		note_host_echo(&p.flow);
	return TC_ACT_UNSPEC;
}

char __license[] SEC("license") = "Dual BSD/GPL";
