//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* cgroup socket hooks: a process of the dataplane's namespace connecting
 * (or sending) to a published host address and port is connected straight
 * to the endpoint, with no proxy process and no per-packet NAT; it still
 * sees the address it asked for as its peer. No process of the namespace
 * may bind a published port. Attached to a cgroup2 root, the hooks see
 * every namespace, so they act only in their own. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lib/types.h"
#include "lib/maps.h"
#include "lib/maglev.h"
#include "lib/parse.h"
#include "lib/verdict.h"

/* Cookie of the dataplane's namespace, set by the loader. */
volatile const __u64 netns_cookie = 0;

/* host_published is where a connection of a host process to addr:port
 * goes: the publication on that address of the host, or on every address
 * of its family; for a balanced one, the backend its table names for the
 * socket (by its cookie, as the source port is not chosen yet), so that
 * host processes spread over the backends as clients outside do. */
static __always_inline struct publication *host_published(struct bpf_sock_addr *ctx, const union addr *addr,
							  __be16 port)
{
	struct publication_key key;
	struct publication *pub;

	if (!addr_is_loopback(addr) && !is_host_addr(addr))
		return NULL;
	pub = published_at(&key, addr, port, ctx->protocol);
	if (!pub)
		return NULL;
	return backend_of(&key, pub, cookie_hash(bpf_get_socket_cookie(ctx)));
}

/* remember records in the socket's storage that, asked for asked:asked_port,
 * it was sent to pub, so that its peer shows as what it asked for. */
static __always_inline void remember(struct bpf_sock_addr *ctx, const struct publication *pub,
				     const union addr *asked, __be16 asked_port)
{
	struct sock_peers *peers = bpf_sk_storage_get(&sk_peers, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (peers) {
		__u32 slot = peers->next % SOCK_PEERS;

		for (int i = 0; i < SOCK_PEERS; i++) {
			struct sock_peer *p = &peers->peer[i];

			if (addr_eq(&p->addr, &pub->addr) && p->port == pub->port) {
				slot = i; /* the same endpoint: what it was asked as may have changed */
				break;
			}
		}
		if (slot == peers->next % SOCK_PEERS)
			peers->next++;
		if (slot < SOCK_PEERS) {
			peers->peer[slot].addr = pub->addr;
			peers->peer[slot].port = pub->port;
			peers->peer[slot].asked_addr = *asked;
			peers->peer[slot].asked_port = asked_port;
		}
	}
}

static __always_inline int connect_published(struct bpf_sock_addr *ctx)
{
	__be16 port = (__be16)ctx->user_port;
	struct publication *pub;
	union addr addr;

	if (bpf_get_netns_cookie(ctx) != netns_cookie)
		return 1;
	addr_set_v4(&addr, ctx->user_ip4);
	pub = host_published(ctx, &addr, port);
	if (!pub || !addr_is_v4(&pub->addr))
		return 1;
	remember(ctx, pub, &addr, port);
	ctx->user_ip4 = pub->addr.w[3];
	ctx->user_port = pub->port;
	count_bytes(PROGRAM_SOCKET, VERDICT_DNAT, 0);
	return 1;
}

static __always_inline void user_addr6(struct bpf_sock_addr *ctx, union addr *a)
{
	a->w[0] = ctx->user_ip6[0];
	a->w[1] = ctx->user_ip6[1];
	a->w[2] = ctx->user_ip6[2];
	a->w[3] = ctx->user_ip6[3];
}

static __always_inline void set_user_addr6(struct bpf_sock_addr *ctx, const union addr *a)
{
	ctx->user_ip6[0] = a->w[0];
	ctx->user_ip6[1] = a->w[1];
	ctx->user_ip6[2] = a->w[2];
	ctx->user_ip6[3] = a->w[3];
}

/* connect6_published serves an IPv6 socket of a host process connecting
 * to a published port, as Docker's proxy serves [::]: through ::1 (where
 * localhost resolves first for many clients) or a host IPv6 address, or
 * through an IPv4 address written v4-mapped (::ffff:127.0.0.1, as Java's
 * sockets do). The socket is sent to the endpoint, v4-mapped when the
 * endpoint is IPv4, which the kernel connects over IPv4. An unconnected
 * UDP socket can only be sent on within IPv6: the kernel refuses a
 * sendmsg6 rewritten to a v4-mapped address. */
static __always_inline int connect6_published(struct bpf_sock_addr *ctx, int connecting)
{
	__be16 port = (__be16)ctx->user_port;
	struct publication *pub;
	union addr asked;

	if (bpf_get_netns_cookie(ctx) != netns_cookie)
		return 1;
	user_addr6(ctx, &asked);
	pub = host_published(ctx, &asked, port);
	if (!pub || (!connecting && addr_is_v4(&pub->addr)))
		return 1;
	remember(ctx, pub, &asked, port);
	set_user_addr6(ctx, &pub->addr);
	ctx->user_port = pub->port;
	count_bytes(PROGRAM_SOCKET, VERDICT_DNAT, 0);
	return 1;
}

/* peer_sent_to finds, in the socket's storage, the publication it was sent
 * to at addr:port (the endpoint), if a connect hook sent it there. */
static __always_inline struct sock_peer *peer_sent_to(struct bpf_sock_addr *ctx, const union addr *addr,
						      __be16 port)
{
	struct sock_peers *peers;

	if (bpf_get_netns_cookie(ctx) != netns_cookie)
		return NULL;
	peers = bpf_sk_storage_get(&sk_peers, ctx->sk, 0, 0);
	if (!peers)
		return NULL;
	for (int i = 0; i < SOCK_PEERS; i++) {
		struct sock_peer *p = &peers->peer[i];

		if (addr_eq(&p->addr, addr) && p->port == port)
			return p;
	}
	return NULL;
}

/* show_published makes a peer address an earlier connect_published
 * rewrote look like the address the socket asked for. */
static __always_inline int show_published(struct bpf_sock_addr *ctx)
{
	struct sock_peer *p;
	union addr addr;

	addr_set_v4(&addr, ctx->user_ip4);
	p = peer_sent_to(ctx, &addr, (__be16)ctx->user_port);
	if (p && addr_is_v4(&p->asked_addr)) {
		ctx->user_ip4 = p->asked_addr.w[3];
		ctx->user_port = p->asked_port;
	}
	return 1;
}

/* show_published6 is show_published for IPv6 sockets. */
static __always_inline int show_published6(struct bpf_sock_addr *ctx)
{
	struct sock_peer *p;
	union addr addr;

	user_addr6(ctx, &addr);
	p = peer_sent_to(ctx, &addr, (__be16)ctx->user_port);
	if (p) {
		set_user_addr6(ctx, &p->asked_addr);
		ctx->user_port = p->asked_port;
	}
	return 1;
}

/* refuse_held refuses a bind of a published host port. The datapath takes
 * the port's traffic without any socket, so without this any local user
 * could bind it: a connection made from it would own its flow ahead of the
 * publication, and the port would be theirs the moment the publication
 * went. Being a pinned program rather than a socket per port, the hold
 * costs no open file and lasts while the daemon is down. Port 0 lets the
 * kernel choose: a socket it gives a published port may connect from it,
 * and its own flows come first, as any host connection's do, but it takes
 * nothing from the publication. */
static __always_inline int refuse_held(struct bpf_sock_addr *ctx, const union addr *addr)
{
	__be16 port = (__be16)ctx->user_port;
	__u8 proto = ctx->protocol;

	if (bpf_get_netns_cookie(ctx) != netns_cookie)
		return 1;
	if (!port || (proto != IPPROTO_TCP && proto != IPPROTO_UDP))
		return 1;
	/* Root binds it: root could take the port from the hook anyway, and
	 * runtimes that reserve the host ports they publish (Podman binds them
	 * after its CNI plugins ran) do so as root. The hold keeps the port
	 * from every other user. */
	if ((__u32)bpf_get_current_uid_gid() == 0)
		return 1;
	if (addr) {
		/* Its own address: a publication there, or on every address
		 * of its family. */
		if (!published(addr, port, proto))
			return 1;
	} else {
		/* Every address: a publication on any of them. */
		struct held_port_key key = { .port = port, .proto = proto };

		if (!bpf_map_lookup_elem(&held_ports, &key))
			return 1;
	}
	count_bytes(PROGRAM_SOCKET, VERDICT_DROP_PORT_HELD, 0);
	return 0; /* EPERM */
}

SEC("cgroup/bind4")
int sock_bind4(struct bpf_sock_addr *ctx)
{
	union addr addr;

	addr_set_v4(&addr, ctx->user_ip4);
	return refuse_held(ctx, addr.w[3] ? &addr : NULL);
}

/* An IPv6 socket bound to [::] takes the port of both families (unless it
 * asked not to be dual-stack, which a bind cannot tell yet), and one bound
 * to [::ffff:0.0.0.0] every IPv4 address, as a bind of 0.0.0.0 does: a
 * publication on any address holds it. Otherwise the address says. */
SEC("cgroup/bind6")
int sock_bind6(struct bpf_sock_addr *ctx)
{
	union addr addr;

	user_addr6(ctx, &addr);
	return refuse_held(ctx, addr_is_zero(&addr) || (addr_is_v4(&addr) && !addr.w[3]) ? NULL : &addr);
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx) { return connect_published(ctx); }

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx) { return connect_published(ctx); }

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx) { return show_published(ctx); }

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx) { return show_published(ctx); }

SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx) { return connect6_published(ctx, 1); }

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx) { return connect6_published(ctx, 0); }

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx) { return show_published6(ctx); }

SEC("cgroup/getpeername6")
int sock_getpeername6(struct bpf_sock_addr *ctx) { return show_published6(ctx); }

char __license[] SEC("license") = "Dual BSD/GPL";
