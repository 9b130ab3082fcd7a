/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The L4 bytes of a frame on XDP: whether its headers agree on their
 * length (l4_length), and whether its TCP or UDP checksum is complete
 * (l4_csum_complete), which XDP must sum to know where TC's skb is told.
 * They take an XDP frame alone: uplink_xdp.c is their one user. */
#pragma once

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"
#include "ctx.h"
#include "parse.h"

/* As many chunks as a 9216-byte jumbo frame's L4 bytes fill; a longer
 * frame is left to TC. */
#define CSUM_CHUNKS 18

/* l4_length checks that the packet's IP header agrees with itself and
 * with the frame, and its TCP or UDP header with the IP header, and gives
 * the length of its L4 bytes (0 when it has no L4 header). It returns -1
 * for a packet no host would accept, 1 for one with IPv4 options, IPv6
 * extension headers or fragments (TC's), else 0. */
static __always_inline int l4_length(struct xdp_md *ctx, const struct packet *p, __u32 *len)
{
	__u32 l3_len;
	int plain;

	if (p->v6) {
		__be16 payload;

		if (ctx_load_bytes(ctx, ETH_HLEN + offsetof(struct ipv6hdr, payload_len), &payload, sizeof(payload)) < 0)
			return -1;
		l3_len = sizeof(struct ipv6hdr) + bpf_ntohs(payload);
		plain = p->l4_off == ETH_HLEN + sizeof(struct ipv6hdr);
	} else {
		struct iphdr ip;

		if (ctx_load_bytes(ctx, ETH_HLEN, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.version != 4 || ip.ihl < 5 || bpf_ntohs(ip.tot_len) < ip.ihl * 4)
			return -1;
		l3_len = bpf_ntohs(ip.tot_len);
		plain = ip.ihl == 5 && !(ip.frag_off & bpf_htons(IP_MF | IP_OFFSET));
	}
	/* Shorter is padding, which Ethernet adds to small frames. */
	if (ETH_HLEN + l3_len > ctx_len(ctx))
		return -1;
	*len = 0;
	/* A fragment's L4 header (a first fragment's) covers the whole
	 * datagram, not what the fragment carries: TC's, unchecked, as are
	 * IPv4 options and IPv6 extension headers. */
	if (!p->l4_off || !plain)
		return !plain;
	if (p->l4_off > ETH_HLEN + l3_len)
		return -1;
	*len = ETH_HLEN + l3_len - p->l4_off;
	if (p->flow.proto == IPPROTO_TCP) {
		__u8 doff;

		if (*len < sizeof(struct tcphdr) || ctx_load_bytes(ctx, p->l4_off + 12, &doff, sizeof(doff)) < 0)
			return -1;
		if ((doff >> 4) < 5 || (doff >> 4) * 4 > *len)
			return -1;
	} else if (p->flow.proto == IPPROTO_UDP) {
		__be16 ulen;

		if (*len < sizeof(struct udphdr) ||
		    ctx_load_bytes(ctx, p->l4_off + offsetof(struct udphdr, len), &ulen, sizeof(ulen)) < 0)
			return -1;
		if (bpf_ntohs(ulen) < sizeof(struct udphdr) || bpf_ntohs(ulen) > *len)
			return -1;
	}
	return !plain;
}

/* A checksum being summed a chunk at a time (sum_chunk). */
struct csum_walk {
	struct xdp_md *ctx;
	__u8 *buf;    /* this CPU's csum_scratch */
	__u32 l4_off; /* where the L4 bytes start */
	__u32 len;    /* how many there are */
	__s64 sum;    /* so far; negative: failed */
};

/* sum_chunk adds the i-th CSUM_CHUNK bytes to w->sum (a bpf_loop
 * callback: verified once, not once per chunk). */
static long sum_chunk(__u32 i, void *arg)
{
	struct csum_walk *w = arg;
	__u64 off = (__u64)i * CSUM_CHUNK, n, words, tail;

	if (off >= w->len || w->sum < 0)
		return 1;
	n = w->len - off;
	if (n > CSUM_CHUNK)
		n = CSUM_CHUNK;
	/* Hidden from clang, which knows the bound but would write code the
	 * verifier cannot see it in. */
	asm volatile("" : "+r"(n));
	if (n > CSUM_CHUNK)
		return 1;
	words = n & ~3;
	if (words) {
		if (ctx_load_bytes(w->ctx, w->l4_off + off, w->buf, words) < 0)
			goto fail;
		w->sum = bpf_csum_diff(NULL, 0, (__be32 *)w->buf, words, w->sum);
	}
	/* Only a last chunk has a tail: a word with zeros after it. */
	tail = n & 3;
	if (tail) {
		__be32 word = 0;

		if (ctx_load_bytes(w->ctx, w->l4_off + off + words, &word, tail) < 0)
			goto fail;
		w->sum = bpf_csum_diff(NULL, 0, &word, sizeof(word), w->sum);
	}
	return 0;
fail:
	w->sum = -1;
	return 1;
}

/* l4_csum_complete reports whether a TCP or UDP packet's checksum covers
 * its len L4 bytes. The incremental updates of a translation keep a
 * complete checksum right, but not one a sender left for offload to
 * finish: XDP cannot tell the two apart, as TC's skb can, so it sums the
 * packet. A NIC's frames are complete; a veth's from a local stack are
 * often not, and pass to TC. */
static __noinline int l4_csum_complete(struct xdp_md *ctx, const struct packet *p, __u32 len)
{
	__u32 zero = 0;
	struct csum_walk w = { .ctx = ctx, .l4_off = p->l4_off, .len = len };

	w.buf = bpf_map_lookup_elem(&csum_scratch, &zero);
	if (!w.buf || len > CSUM_CHUNKS * CSUM_CHUNK)
		return 0;
	if (p->flow.proto == IPPROTO_UDP && !p->v6) {
		__u16 check;

		if (ctx_load_bytes(ctx, p->l4_off + offsetof(struct udphdr, check), &check, sizeof(check)) < 0)
			return 0;
		if (!check)
			return 1; /* an IPv4 datagram without a checksum */
	}
	if (p->v6) {
		struct {
			union addr saddr, daddr;
			__be32 len, proto;
		} pseudo = { p->flow.saddr, p->flow.daddr, bpf_htonl(len), bpf_htonl(p->flow.proto) };

		w.sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
	} else {
		__be32 pseudo[3] = { p->flow.saddr.w[3], p->flow.daddr.w[3], bpf_htonl((p->flow.proto << 16) | len) };

		w.sum = bpf_csum_diff(NULL, 0, pseudo, sizeof(pseudo), 0);
	}
	bpf_loop(CSUM_CHUNKS, sum_chunk, &w, 0);
	return w.sum >= 0 && csum_fold(w.sum) == 0;
}
