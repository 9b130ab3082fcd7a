/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Addresses of either family (union addr, types.h): IPv4 is written
 * v4-mapped, so every map and conntrack key holds both families alike;
 * only the code that reads and writes headers tells them apart. */
#pragma once

#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include "types.h"

static __always_inline int addr_eq(const union addr *a, const union addr *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] && a->w[3] == b->w[3];
}

static __always_inline int addr_is_zero(const union addr *a)
{
	return !(a->w[0] | a->w[1] | a->w[2] | a->w[3]);
}

/* addr_is_v4 reports whether a is an IPv4 address (v4-mapped). */
static __always_inline int addr_is_v4(const union addr *a)
{
	return !a->w[0] && !a->w[1] && a->w[2] == bpf_htonl(0xffff);
}

static __always_inline void addr_set_v4(union addr *a, __be32 v4)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = bpf_htonl(0xffff);
	a->w[3] = v4;
}

/* addr_is_loopback: 127.0.0.0/8 and ::1, the host's own. */
static __always_inline int addr_is_loopback(const union addr *a)
{
	if (addr_is_v4(a))
		return (bpf_ntohl(a->w[3]) >> 24) == 127;
	return !a->w[0] && !a->w[1] && !a->w[2] && a->w[3] == bpf_htonl(1);
}

/* addr_is_multicast_or_broadcast: 224.0.0.0/4, 255.255.255.255 and
 * ff00::/8, which no router forwards and which must never be
 * masqueraded. */
static __always_inline int addr_is_multicast_or_broadcast(const union addr *a)
{
	if (addr_is_v4(a))
		return (bpf_ntohl(a->w[3]) >> 28) == 0xe || a->w[3] == 0xffffffff;
	return (bpf_ntohl(a->w[0]) >> 24) == 0xff;
}

/* addr_is_link_scope_group: the groups no router forwards off the link:
 * 224.0.0.0/24 (RFC 5771's local network control block), the limited
 * broadcast 255.255.255.255, and IPv6's link- and interface-local scopes
 * (ff02::/16, ff01::/16: neighbour discovery's solicited-node groups
 * among them). */
static __always_inline int addr_is_link_scope_group(const union addr *a)
{
	__u32 first = bpf_ntohl(addr_is_v4(a) ? a->w[3] : a->w[0]);

	if (addr_is_v4(a))
		return (first >> 8) == 0xe00000 || first == 0xffffffff;
	return (first >> 16) == 0xff02 || (first >> 16) == 0xff01;
}

/* addr_is_link_local: fe80::/10, which never leaves the link (NDP's
 * sources, among others). IPv4's 169.254/16 is left to the routes, as
 * the kernel leaves it. */
static __always_inline int addr_is_link_local(const union addr *a)
{
	return (bpf_ntohl(a->w[0]) >> 22) == (0xfe80 >> 6);
}

/* addr_is_martian_source: addresses no packet from a neighbour can come
 * from (RFC 1122, RFC 4291), as the kernel judges them: unspecified and
 * "this network" (0.0.0.0/8, ::), loopback, multicast and broadcast.
 * IPv4's class E (240.0.0.0/4) is unicast to Linux, and some networks
 * use it. */
static __always_inline int addr_is_martian_source(const union addr *a)
{
	if (addr_is_v4(a)) {
		if ((bpf_ntohl(a->w[3]) >> 24) == 0)
			return 1;
	} else if (addr_is_zero(a)) {
		return 1;
	}
	return addr_is_loopback(a) || addr_is_multicast_or_broadcast(a);
}
