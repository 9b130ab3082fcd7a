/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Events for `ebpfnet monitor`: what a program did to a packet, written
 * to the events ring buffer while the daemon has a monitor client (the
 * monitor map says which types it wants), at most MONITOR_RATE a second
 * per CPU. Every verdict is counted in verdict.h, which asks here. */
#pragma once

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "ctx.h"

/* The budget: MONITOR_RATE events a second per CPU, MONITOR_BURST at
 * once. Past it, events are counted as lost (VERDICT_MONITOR_LOST). */
#define MONITOR_RATE 10000
#define MONITOR_BURST 1000
#define MONITOR_INTERVAL_NS (1000000000ULL / MONITOR_RATE)

/* monitor_parse reads the flow of the packet as it is now, into f (zeroed
 * by the caller): addresses, protocol, and the ports, or for ICMP echo the
 * identifier where conntrack puts it. It walks no IPv6 extension header:
 * an event is a report, and parse.h's full walk would cost stack here. */
static __always_inline void monitor_parse(struct ctx_buff *ctx, struct flow *f)
{
	__be16 proto = ctx_protocol(ctx);
	__u32 l4;
	__u16 frag = 0;
	__u8 b = 0;

	if (proto == bpf_htons(ETH_P_IP)) {
		if (ctx_load_bytes(ctx, ETH_HLEN, &b, sizeof(b)) < 0)
			return;
		l4 = ETH_HLEN + (b & 0xf) * 4;
		ctx_load_bytes(ctx, ETH_HLEN + offsetof(struct iphdr, frag_off), &frag, sizeof(frag));
		ctx_load_bytes(ctx, ETH_HLEN + offsetof(struct iphdr, protocol), &f->proto, sizeof(f->proto));
		ctx_load_bytes(ctx, ETH_HLEN + offsetof(struct iphdr, saddr), &f->saddr.w[3], sizeof(__be32));
		ctx_load_bytes(ctx, ETH_HLEN + offsetof(struct iphdr, daddr), &f->daddr.w[3], sizeof(__be32));
		f->saddr.w[2] = bpf_htonl(0xffff);
		f->daddr.w[2] = bpf_htonl(0xffff);
		if (frag & bpf_htons(0x1fff)) /* a later fragment: no L4 header */
			return;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		l4 = ETH_HLEN + sizeof(struct ipv6hdr);
		ctx_load_bytes(ctx, ETH_HLEN + offsetof(struct ipv6hdr, nexthdr), &f->proto, sizeof(f->proto));
		ctx_load_bytes(ctx, ETH_HLEN + offsetof(struct ipv6hdr, saddr), f->saddr.b, sizeof(f->saddr));
		ctx_load_bytes(ctx, ETH_HLEN + offsetof(struct ipv6hdr, daddr), f->daddr.b, sizeof(f->daddr));
	} else {
		return;
	}
	if (f->proto == IPPROTO_TCP || f->proto == IPPROTO_UDP) {
		ctx_load_bytes(ctx, l4, &f->sport, 2 * sizeof(__be16));
	} else if (f->proto == IPPROTO_ICMP || f->proto == IPPROTO_ICMPV6) {
		if (ctx_load_bytes(ctx, l4, &b, sizeof(b)) < 0)
			return;
		/* Echo requests (8, 128) carry the identifier as a source
		 * port, replies (0, 129) as a destination port. */
		if (b == 8 || b == 128)
			ctx_load_bytes(ctx, l4 + 4, &f->sport, sizeof(f->sport));
		else if (b == 0 || b == 129)
			ctx_load_bytes(ctx, l4 + 4, &f->dport, sizeof(f->dport));
	}
}

/* monitor_emit writes the event of a packet to the ring buffer, within
 * the budget; key is its stats key (program * STATS_VERDICT_SLOTS +
 * verdict), before the flow it came in as (NULL: read it from the packet,
 * not yet rewritten), after the flow it was translated to (NULL: none).
 * The event is built in the ring buffer itself: from the deepest chains
 * of from_container the BPF stack has little to spare. */
__verified_alone int monitor_emit(struct ctx_buff *ctx, __u32 key, __u32 type,
				 const struct flow *before, const struct flow *after)
{
	__u32 zero = 0, lost = key - key % STATS_VERDICT_SLOTS + VERDICT_MONITOR_LOST;
	struct monitor_budget *b = bpf_map_lookup_elem(&monitor_budget, &zero);
	struct monitor_event *e;
	struct counter *c;
	__u64 now = bpf_ktime_get_boot_ns();

	if (!b)
		return 0;
	if (now - b->last >= MONITOR_INTERVAL_NS) {
		__u64 refill = (now - b->last) / MONITOR_INTERVAL_NS;

		b->tokens = refill + b->tokens > MONITOR_BURST ? MONITOR_BURST : b->tokens + refill;
		b->last = now;
	}
	if (b->tokens == 0)
		goto lost;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		goto lost;
	b->tokens--;
	__builtin_memset(e, 0, sizeof(*e));
	e->time = now;
	e->ifindex = ctx_ifindex(ctx);
	e->len = ctx_len(ctx);
	e->program = key / STATS_VERDICT_SLOTS;
	e->verdict = key % STATS_VERDICT_SLOTS;
	e->type = type;
	if (before)
		e->before = *before;
	else
		monitor_parse(ctx, &e->before);
	if (after) {
		e->after = *after;
		e->has_after = 1;
	}
	bpf_ringbuf_submit(e, 0);
	return 0;
lost:
	c = bpf_map_lookup_elem(&stats, &lost);
	if (c)
		c->packets++;
	return 0;
}

/* monitor_packet hands a counted packet to monitor_emit when a monitor client
 * wants its type: with none listening, one array lookup and a branch. */
static __always_inline void monitor_packet(struct ctx_buff *ctx, __u32 key, __u32 type, const struct flow *before,
				    const struct flow *after)
{
	__u32 zero = 0;
	struct monitor_config *cfg = bpf_map_lookup_elem(&monitor, &zero);

	if (cfg && (cfg->types & type))
		monitor_emit(ctx, key, type, before, after);
}
