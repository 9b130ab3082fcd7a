//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The fast path on XDP of the host's uplinks (`--uplink-mode xdp`): before
 * the kernel builds an skb, it takes the packets of published flows and
 * the replies of masqueraded ones straight to the endpoint's veth through
 * a devmap, translated with the same conntrack as TC, and drops what
 * cannot be valid. Everything else passes, unchanged, to uplink.c on TC,
 * which keeps every other job: ICMP and its errors, fragments, flows that
 * change family, TTLs that run out, routes, and frames whose checksums
 * the sender left to offload (a veth's, from a local stack). */

#define DATAPATH_XDP
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/types.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/verdict.h"
#include "lib/nat.h"
#include "lib/checksum.h"
#include "lib/ratelimit.h"

/* Where fast_deliverable found a packet may go. */
struct fast_path {
	struct endpoint_info *ep;
	__u16 ttl_word;
	__u8 hops;
};

/* fast_deliverable reports whether XDP can deliver the packet, translated
 * to flow to, on its own: straight into an endpoint that takes redirected
 * frames, in the family it came in, with TTL to spare, within the
 * endpoint's MTU and with a checksum an incremental update keeps right.
 * Anything else is TC's. */
static __noinline int fast_deliverable(struct xdp_md *ctx, const struct packet *p, __u32 l4_len,
				       const struct flow *to, struct fast_path *f)
{
	__u32 mtu = 0;

	f->ep = bpf_map_lookup_elem(&endpoints, &to->daddr);
	if (!f->ep || !bpf_map_lookup_elem(&xdp_targets, &f->ep->ifindex))
		return 0;
	if (addr_is_v4(&to->saddr) == p->v6 || addr_is_v4(&to->daddr) == p->v6)
		return 0;
	f->hops = hop_limit(ctx, p->v6, &f->ttl_word);
	if (f->hops <= 1)
		return 0;
	if (bpf_check_mtu(ctx, f->ep->ifindex, &mtu, 0, 0) != BPF_MTU_CHK_RET_SUCCESS)
		return 0;
	return l4_csum_complete(ctx, p, l4_len);
}

/* deliver_fast translates the packet to flow to and redirects it where
 * fast_deliverable found it may go, as forward.h's deliver does on TC. */
static __always_inline int deliver_fast(struct xdp_md *ctx, const struct packet *p, enum verdict v,
					const struct flow *to, const struct fast_path *f)
{
	if (over_rate(ctx, f->ep->ifindex, RATE_INGRESS))
		return drop(ctx, PROGRAM_UPLINK_XDP, VERDICT_DROP_RATE_LIMIT);
	if (rewrite(ctx, p, to) < 0 || dec_hop_limit(ctx, p->v6, f->hops, f->ttl_word) < 0 ||
	    endpoint_frame(ctx, f->ep) < 0)
		return drop(ctx, PROGRAM_UPLINK_XDP, VERDICT_DROP_NO_ROUTE);
	count_flow(ctx, PROGRAM_UPLINK_XDP, v, MONITOR_TRACE, &p->flow, to);
	return bpf_redirect_map(&xdp_targets, f->ep->ifindex, 0);
}

/* translate takes a TCP or UDP packet of a known flow, or of a new one to
 * a publication, when it can deliver it on its own. A new flow it cannot
 * deliver is still claimed: TC finds it in conntrack. */
static __noinline int translate(struct xdp_md *ctx, const struct packet *p, __u32 l4_len)
{
	struct fast_path f;
	struct ct_entry *e;
	struct flow to;
	int assured = 0, rc;

	/* Flows from outside are keyed to ifindex 0, as on TC. */
	e = ct_lookup_current(&p->flow, 0, &assured);
	if (e && host_owns_reply(ctx, &p->flow, e))
		return pass(ctx, PROGRAM_UPLINK_XDP);
	if (e && reopen_refused(p, e))
		return drop(ctx, PROGRAM_UPLINK_XDP, VERDICT_DROP_SOURCE_RANGE);
	if (e && reopen_moved(p, e)) {
		ct_forget(&p->flow, e, assured);
		e = NULL;
	}
	if (e) {
		to = e->nat; /* the entry may move while we use it */
		if (!fast_deliverable(ctx, p, l4_len, &to, &f))
			return pass(ctx, PROGRAM_UPLINK_XDP);
		ct_update(&p->flow, e, assured, p, PROGRAM_UPLINK_XDP);
		return deliver_fast(ctx, p, VERDICT_TRACKED, &to, &f);
	}
	if (!reachable_from_outside(&p->flow.daddr))
		return pass(ctx, PROGRAM_UPLINK_XDP);
	rc = dnat_claim(ctx, p, PROGRAM_UPLINK_XDP, 0, NULL, &to);
	if (rc < 0)
		return pass(ctx, PROGRAM_UPLINK_XDP);
	if (rc > 0)
		return drop(ctx, PROGRAM_UPLINK_XDP, rc);
	if (!fast_deliverable(ctx, p, l4_len, &to, &f))
		return pass(ctx, PROGRAM_UPLINK_XDP);
	return deliver_fast(ctx, p, VERDICT_DNAT, &to, &f);
}

SEC("xdp")
int uplink_xdp(struct xdp_md *ctx)
{
	struct packet p;
	int l3 = parse_packet(ctx, &p), headers;
	__u32 l4_len;

	if (l3 != L3_IPV4 && l3 != L3_IPV6)
		return XDP_PASS;
	headers = l4_length(ctx, &p, &l4_len);
	if (headers < 0)
		return drop(ctx, PROGRAM_UPLINK_XDP, VERDICT_DROP_MALFORMED);
	/* As on TC: v4-mapped addresses are the stack's to judge. ICMP,
	 * fragments, options and extension headers are TC's. */
	if (v4_mapped_v6(&p))
		return pass(ctx, PROGRAM_UPLINK_XDP);
	if ((p.flow.proto != IPPROTO_TCP && p.flow.proto != IPPROTO_UDP) || !p.has_ports || headers)
		return pass(ctx, PROGRAM_UPLINK_XDP);
	return translate(ctx, &p, l4_len);
}

char __license[] SEC("license") = "Dual BSD/GPL";
