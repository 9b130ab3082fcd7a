/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The packet a program works on, whether it runs on TC (an skb) or XDP (a
 * frame before any skb exists): the headers that parse, track and
 * translate packets are written once against this. A program built for
 * XDP defines DATAPATH_XDP before any include. */
#pragma once

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

/* __verified_alone marks a function the verifier checks once, on its own,
 * taking its arguments at their types (a BPF global function): a static
 * one it walks again at every call, in each caller's state, and the
 * rewrites, ICMP errors and monitor events every path of from_container
 * shares took it half a million instructions and three seconds of a
 * daemon's start. It takes at most five arguments, returns a scalar, and
 * checks its pointer arguments, which may be NULL as far as the verifier
 * knows. */
#define __verified_alone __noinline

/* csum_fold folds a 32-bit ones' complement sum to 16 bits and
 * complements it: the form a checksum field holds. */
static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

#ifdef DATAPATH_XDP

#define ctx_buff xdp_md
#define CTX_PASS XDP_PASS
#define CTX_DROP XDP_DROP

static __always_inline __u32 ctx_ifindex(struct xdp_md *ctx)
{
	return ctx->ingress_ifindex;
}

static __always_inline __u32 ctx_len(struct xdp_md *ctx)
{
	return ctx->data_end - ctx->data;
}

static __always_inline long ctx_load_bytes(struct xdp_md *ctx, __u32 off, void *to, __u32 len)
{
	return bpf_xdp_load_bytes(ctx, off, to, len);
}

static __always_inline long ctx_store_bytes(struct xdp_md *ctx, __u32 off, const void *from, __u32 len,
					    __u64 flags __attribute__((unused)))
{
	return bpf_xdp_store_bytes(ctx, off, (void *)from, len);
}

static __always_inline __be16 ctx_protocol(struct xdp_md *ctx)
{
	__be16 proto = 0;

	ctx_load_bytes(ctx, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto));
	return proto;
}

/* csum_replace updates the checksum at off for a change of from to to,
 * as the skb helpers do for a frame whose checksums are complete, which
 * is all XDP receives (uplink_xdp.c checks): size 2 or 4 for a field of
 * that size, 0 for to being a bpf_csum_diff of the change. With
 * BPF_F_MARK_MANGLED_0 (UDP) a zero checksum, meaning none, stays zero,
 * and a computed zero is written as 0xffff. */
static __always_inline long csum_replace(struct xdp_md *ctx, __u32 off, __u64 from, __u64 to, __u64 flags)
{
	__u16 old;
	__u64 sum;
	__u32 size = flags & BPF_F_HDR_FIELD_MASK;

	if (ctx_load_bytes(ctx, off, &old, sizeof(old)) < 0)
		return -1;
	if ((flags & BPF_F_MARK_MANGLED_0) && !old)
		return 0;
	sum = (__u16)~old;
	if (size)
		sum += (__u32)~from;
	sum += (__u32)to;
	sum = (sum & 0xffffffff) + (sum >> 32);
	__u16 csum = csum_fold((sum & 0xffffffff) + (sum >> 32));
	if ((flags & BPF_F_MARK_MANGLED_0) && !csum)
		csum = 0xffff;
	return ctx_store_bytes(ctx, off, &csum, sizeof(csum), 0);
}

static __always_inline long ctx_l3_csum_replace(struct xdp_md *ctx, __u32 off, __u64 from, __u64 to, __u64 size)
{
	return csum_replace(ctx, off, from, to, size);
}

static __always_inline long ctx_l4_csum_replace(struct xdp_md *ctx, __u32 off, __u64 from, __u64 to, __u64 flags)
{
	return csum_replace(ctx, off, from, to, flags);
}

#else /* TC */

#define ctx_buff __sk_buff
/* TC_ACT_UNSPEC hands the packet to the next program or filter, so ebpfnet
 * never ends a chain it shares with others; TC_ACT_OK would. */
#define CTX_PASS TC_ACT_UNSPEC
#define CTX_DROP TC_ACT_SHOT

static __always_inline __u32 ctx_ifindex(struct __sk_buff *ctx)
{
	return ctx->ifindex;
}

static __always_inline __u32 ctx_len(struct __sk_buff *ctx)
{
	return ctx->len;
}

static __always_inline long ctx_load_bytes(struct __sk_buff *ctx, __u32 off, void *to, __u32 len)
{
	return bpf_skb_load_bytes(ctx, off, to, len);
}

static __always_inline long ctx_store_bytes(struct __sk_buff *ctx, __u32 off, const void *from, __u32 len,
					    __u64 flags)
{
	return bpf_skb_store_bytes(ctx, off, from, len, flags);
}

static __always_inline __be16 ctx_protocol(struct __sk_buff *ctx)
{
	return ctx->protocol;
}

/* The kernel's helpers also keep an skb's checksum state (a checksum
 * left to offload, or one the device computed) right. */
static __always_inline long ctx_l3_csum_replace(struct __sk_buff *ctx, __u32 off, __u64 from, __u64 to, __u64 size)
{
	return bpf_l3_csum_replace(ctx, off, from, to, size);
}

static __always_inline long ctx_l4_csum_replace(struct __sk_buff *ctx, __u32 off, __u64 from, __u64 to, __u64 flags)
{
	return bpf_l4_csum_replace(ctx, off, from, to, flags);
}

#endif
