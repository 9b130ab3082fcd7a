/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Egress lists: where a sandbox with a list may send. Its packets leave
 * for the allowed prefixes (egress_allow), the addresses the embedded DNS
 * answered for allowed names while their answers live (egress_names), its
 * own network and the groups that never leave the link, and nowhere
 * else. The embedded DNS listens inside the sandbox, so its queries never
 * come here; a query to any other resolver is refused as any other
 * destination is. The check is the sender's address's, which the caller
 * has validated, and comes before conntrack may let a packet through:
 * only flows conntrack already holds for the sender's own interface (the
 * replies of flows opened to it, flows opened while allowed), and ICMP
 * errors about their packets, go on past a refusal. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"
#include "maps.h"
#include "addr.h"
#include "parse.h"
#include "conntrack.h"
#include "icmp.h"

/* egress_named reports whether the DNS answered dst for a name src's list
 * allows, and the answer still lives. */
static __always_inline int egress_named(const union addr *src, const union addr *dst)
{
	struct egress_name_key key = { .src = *src, .dst = *dst };
	__u64 *lapses = bpf_map_lookup_elem(&egress_names, &key);

	return lapses && *lapses > bpf_ktime_get_boot_ns();
}

/* egress_error_of_known_flow reports whether p, an ICMP error from a
 * sandbox, is about a packet sent to it in a flow conntrack holds for its
 * interface ifindex (path MTU discovery, a closed port of a published
 * flow): its quote is then that packet's, not what the sandbox chose. */
static __noinline int egress_error_of_known_flow(struct __sk_buff *skb, const struct packet *p, __u32 ifindex)
{
	struct icmp_quote q;
	struct flow key;
	int assured;

	if (icmp_error_quote(skb, p, &q) < 0 || !addr_eq(&q.flow.daddr, &p->flow.saddr))
		return 0;
	reverse(&q.flow, &key);
	return ct_lookup(&key, ifindex, &assured) != NULL;
}

/* egress_refused reports whether a packet p that a sandbox sent from its
 * own address, through its interface ifindex on network (dst_net: the
 * network of the destination, NULL outside every network), goes where
 * the sandbox's egress list refuses. A sandbox without a list is refused
 * nothing, at the cost of one lookup. ICMP leaves only as echo requests,
 * and as errors about flows conntrack holds: any other message could
 * carry what the list keeps in. */
static __noinline int egress_refused(struct __sk_buff *skb, const struct packet *p, __u32 ifindex, const __u32 *dst_net,
				     __u32 network)
{
	struct egress_key key = { .prefixlen = 8 * (sizeof(key) - sizeof(key.prefixlen)) };
	enum egress_action *action;
	int assured;

	if ((dst_net && *dst_net == network) || addr_is_link_scope_group(&p->flow.daddr))
		return 0;
	key.src = p->flow.saddr;
	key.dst = p->flow.daddr;
	action = bpf_map_lookup_elem(&egress_allow, &key);
	if (!action)
		return 0;
	if (!is_icmp(p->flow.proto) || p->icmp_request) {
		if (*action == EGRESS_ALLOW || egress_named(&p->flow.saddr, &p->flow.daddr))
			return 0;
	}
	if (is_icmp_error(p))
		return !egress_error_of_known_flow(skb, p, ifindex);
	/* A later fragment whose first was not seen has no ports to look its
	 * flow up by: refused, as its first would have been. */
	return !p->has_ports || !ct_lookup(&p->flow, ifindex, &assured);
}
