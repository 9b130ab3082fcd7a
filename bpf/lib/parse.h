/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>

/* parse_ipv4 points *ip at the packet's IPv4 header and returns 0, or
 * returns -1 when the packet is not IPv4 or too short to hold the header.
 * Callers branch on the result rather than on a possibly-NULL pointer,
 * which clang may merge into a form the verifier rejects. */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct iphdr **ip)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *hdr = (void *)(eth + 1);

	if ((void *)(hdr + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	*ip = hdr;
	return 0;
}

/* network_of returns the index of the network whose subnet holds addr. */
static __always_inline __u32 *network_of(__be32 addr)
{
	struct subnet_key key = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(&subnets, &key);
}
