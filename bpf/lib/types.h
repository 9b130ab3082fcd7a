/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Types shared by the BPF programs and the Go control plane. Go gets them
 * through bpf2go -type (on datapath.c), so this file is their only
 * declaration. */
#pragma once

#include <linux/types.h>
#include <linux/bpf.h> /* struct bpf_spin_lock */

/* An address of either family: IPv6, or IPv4 written v4-mapped
 * (::ffff:a.b.c.d, RFC 4291), so that one key, one lookup and one
 * conntrack serve both families: a flow may even change family on its
 * way through the host. Each map pays 12 bytes more per IPv4 address
 * for that; a lookup is still one hash. */
union addr {
	__u8 b[16];
	__be32 w[4];
};

/* What happened to a packet. With the program that saw it, it indexes the
 * stats map and labels the counters. NAT_PORT_COLLISION counts NAT ports
 * found taken while allocating, and CT_FULL and CT_SOURCE_FULL flows that
 * could not be promoted: events, not packets. */
enum verdict {
	VERDICT_PASS = 0,
	VERDICT_DROP_CROSS_NETWORK = 1, /* to an address of a network the sender is not on */
	VERDICT_DROP_ICC = 2,           /* between sandboxes of a network with icc disabled */
	VERDICT_DROP_INTERNAL = 3,      /* to or from outside an internal network */
	VERDICT_DNAT = 4,               /* first packet of a flow to a published port */
	VERDICT_SNAT = 5,               /* first packet of a masqueraded flow */
	VERDICT_TRACKED = 6,            /* later packet of a tracked flow, either way */
	VERDICT_DROP_NO_NAT_PORT = 7,   /* no free NAT port for a new flow */
	VERDICT_DROP_NO_ROUTE = 8,      /* a translated packet has nowhere to go */
	VERDICT_NAT_PORT_COLLISION = 9,
	VERDICT_DROP_SPOOFED = 10,      /* a sandbox sent from an address (IP or MAC) that is not its own */
	VERDICT_DROP_MARTIAN = 11,      /* a sandbox sent to a loopback address, or IPv6 to a v4-mapped one */
	VERDICT_DROP_UNPUBLISHED = 12,  /* from outside straight to a sandbox port the gateway mode keeps shut */
	VERDICT_DROP_NO_IPV6 = 13,      /* IPv6 on a network that has none */
	VERDICT_DROP_CT_INVALID = 14,   /* a TCP reset or stray segment of no tracked flow */
	VERDICT_CT_FULL = 15,           /* an established flow found the table of established flows full */
	VERDICT_DROP_TTL_EXCEEDED = 16, /* its TTL ran out on a hop we route (answered with ICMP time exceeded) */
	VERDICT_DROP_TOO_BIG = 17,      /* too big for the interface it would leave by (answered with ICMP frag needed) */
	VERDICT_FRAG_NO_FIRST = 18,     /* a fragment seen before (or without) its first: not translated */
	VERDICT_DROP_PORT_HELD = 19,    /* a host process tried to bind a published port (a bind, not a packet) */
	VERDICT_DROP_UNTRANSLATABLE = 20, /* would leave a masquerading network untranslated: no ports to translate by */
	VERDICT_MONITOR_LOST = 21,      /* a monitor event not written: over the rate limit, or the ring buffer full */
	VERDICT_DROP_MALFORMED = 22,    /* an IP packet whose headers contradict each other or the frame (XDP) */
	VERDICT_DROP_MARTIAN_SOURCE = 23, /* from outside to a published port, from an address no neighbour has */
	VERDICT_DROP_UNKNOWN_VTEP = 24, /* VXLAN to an overlay network's VNI, or hiding its VNI in a later fragment, from an address that is no host of the cluster */
	VERDICT_TO_NEIGHBOUR = 25,      /* to a sandbox of the sender's network: delivered past the bridge and the host's netfilter */
	VERDICT_NEIGHBOUR_ANSWERED = 26, /* a neighbour solicitation for a sandbox of the sender's network, answered in its name */
	VERDICT_CT_SOURCE_FULL = 27,    /* an established flow whose source holds its share of the table of established flows: it stays in ct_new */
	VERDICT_DROP_VLAN_TAGGED = 28,  /* a sandbox sent a VLAN-tagged frame, whose tags would hide what it carries */
	VERDICT_DROP_MISDELIVERED = 29, /* a unicast packet for another endpoint at this one's veth (the bridge flooded it) */
	VERDICT_DROP_SOURCE_RANGE = 30, /* a new flow to a published port from an address its source lists refuse */
	VERDICT_DROP_EGRESS_POLICY = 31, /* a sandbox with an egress list sent to a destination it does not allow */
	VERDICT_DROP_RATE_LIMIT = 32,   /* to or from a sandbox over its bandwidth limit in that direction */
	VERDICT_MAX,
};

/* Which program counted. */
enum program {
	PROGRAM_FROM_CONTAINER = 0,
	PROGRAM_TO_CONTAINER = 1,
	PROGRAM_UPLINK = 2,
	PROGRAM_SOCKET = 3,
	PROGRAM_UPLINK_XDP = 4,
	PROGRAM_FROM_TUNNEL = 5,
	PROGRAM_MAX,
};

/* The stats map has room for more verdicts and programs than there are,
 * so that adding one keeps the map's layout, and an upgrade keeps the
 * counters. */
enum stats_slots {
	STATS_VERDICT_SLOTS = 64,
	STATS_PROGRAM_SLOTS = 8,
};
_Static_assert(VERDICT_MAX <= STATS_VERDICT_SLOTS, "more verdicts than stats slots");
_Static_assert(PROGRAM_MAX <= STATS_PROGRAM_SLOTS, "more programs than stats slots");

/* VXLAN as overlay networks use it: IANA's port, and the header after
 * UDP's, whose I flag says the VNI (24 bits) is valid. */
enum vxlan {
	VXLAN_PORT = 4789,
	VXLAN_FLAG_VNI = 0x08,
};

struct vxlan_header {
	__u8 flags;
	__u8 reserved[3];
	__u8 vni[3];
	__u8 reserved2;
};

enum network_flag {
	NETWORK_ICC_DISABLED = 1 << 0,
	NETWORK_INTERNAL = 1 << 1,
	NETWORK_MASQUERADE = 1 << 2,
	/* Gateway modes: who outside the host may reach sandbox ports
	 * directly, by routing to the sandbox's address. Neither bit is
	 * Docker's "nat": only published host ports lead in. */
	NETWORK_DIRECT_ALL = 1 << 3,       /* "nat-unprotected": every port */
	NETWORK_DIRECT_PUBLISHED = 1 << 4, /* "routed": the published sandbox ports */
	/* The host's stack routes the flows ebpfnet does not translate, and
	 * may translate them itself: a chained network, whose plugin's
	 * netfilter rules masquerade. Neither tracked nor delivered by
	 * ebpfnet, they always go through the stack. */
	NETWORK_STACK_ROUTES = 1 << 5,
};

/* Value of the networks map, keyed by the network's index. Masquerade
 * and the gateway mode are chosen per family (Docker's gateway_mode_ipv4
 * and gateway_mode_ipv6), so each family has its own set of flags; the
 * others are the same in both. */
struct network_info {
	enum network_flag flags;  /* a set of bits, for IPv4 */
	enum network_flag flags6; /* for IPv6 */
	union addr gateway;       /* the host's IPv4 address on the network */
	union addr gateway6;      /* its IPv6 address; zero: the network has no IPv6 */
	__u8 gateway_mac[6];      /* the bridge's MAC: the source of frames we deliver */
	__u8 pad[2];
	/* An overlay network's VXLAN device (ifindex), where frames for its
	 * endpoints on other hosts go; 0: a network of this host alone. */
	__u32 tunnel;
};

/* Value of the ifaces map, keyed by the ifindex of an endpoint's host-side
 * interface in the dataplane's namespace. */
struct iface_info {
	__u32 network;    /* index of the network the endpoint is on */
	union addr addr;  /* the endpoint's IPv4 address */
	union addr addr6; /* its IPv6 address; zero: none */
	/* The hardware address the endpoint sends from, when ebpfnet made its
	 * veth (zero: another's, or a VXLAN device): a frame from any other
	 * would teach the bridge that someone else's MAC lives behind it. */
	__u8 mac[6];
	__u8 pad[2];
};

/* Which way a bandwidth limit applies, as the sandbox sees it. */
enum rate_direction {
	RATE_EGRESS = 0,  /* what the sandbox sends */
	RATE_INGRESS = 1, /* what reaches it, by any path */
};

/* Key of the rate_limits and rate_buckets maps: an endpoint's host side
 * (the ifindex of the ifaces map) and a direction. */
struct rate_key {
	__u32 ifindex;
	__u32 direction; /* enum rate_direction */
};

/* Value of the rate_limits map: a sandbox's limit in one direction, the
 * daemon's to write. */
struct rate_limit {
	__u64 rate;  /* bytes per second; never 0 */
	__u64 burst; /* bytes the bucket holds */
};

/* Value of the rate_buckets map: the bucket of a rate_limits entry, the
 * datapath's alone. It holds when the bucket will be full again (its
 * theoretical arrival time), not a count of tokens: one word, updated
 * with no clock of its own to refill. */
struct rate_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 full_at; /* bpf_ktime_get_ns() */
};

/* Value of the endpoints map, keyed by each of the endpoint's addresses. */
struct endpoint_info {
	__u32 ifindex; /* host side of its veth: the peer is the endpoint */
	__u32 network;
	__u8 mac[6];
	__u8 pad[2];
};

/* Key of the subnets LPM trie; its value is the network's index, or
 * NETWORK_FOREIGN for the subnet of another runtime's bridge on the host
 * (Docker's docker0 and br-…): a network of its own, which no ebpfnet
 * network reaches and which reaches none, as Docker isolates its bridges
 * from each other. */
#define NETWORK_FOREIGN 0xffffffffu
/* An IPv4 subnet is keyed in its v4-mapped form: prefix length 96 + its
 * own. */
struct subnet_key {
	__u32 prefixlen;
	union addr addr;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

/* Key of the publications map: a host address, port and protocol. Every
 * address of the host is each family's unspecified address: :: for
 * IPv6, ::ffff:0.0.0.0 for IPv4 (Docker's -p 8080:80 publishes on both). */
struct publication_key {
	union addr addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* Key of source_ranges: a prefix of the client addresses of one
 * publication (its key in publications), or of the daemon's default for
 * publications without lists of their own (the key of every address of the
 * family, with port and protocol 0). The prefix length counts the
 * publication's key too: an entry matches its own publication's clients
 * alone, and the family of the publication's address keeps IPv4 and IPv6
 * prefixes apart. */
struct source_key {
	__u32 prefixlen;
	struct publication_key pub;
	union addr addr;
};

/* Key of egress_allow: a prefix of the destinations one address of a
 * sandbox with an egress list may reach. The prefix length counts the
 * sandbox's address (128 bits) too, so an entry holds for that source
 * alone; an IPv4 destination prefix counts the 96 bits that map it into
 * IPv6, which keeps the families apart. The entry of length 128 (every
 * destination) marks the source as listed: EGRESS_LISTED. */
struct egress_key {
	__u32 prefixlen;
	union addr src;
	union addr dst;
};

/* Value of egress_allow. */
enum egress_action {
	EGRESS_LISTED = 1, /* the source has a list: what no longer prefix allows is refused */
	EGRESS_ALLOW = 2,
};

/* Key of egress_names: an address the embedded DNS answered for a name
 * a sandbox's list allows, as one of the sandbox's addresses may reach
 * it. The value is when that lapses (CLOCK_BOOTTIME, in ns). */
struct egress_name_key {
	union addr src;
	union addr dst;
};

/* Value of source_ranges. */
enum source_action {
	SOURCE_ALLOW = 1,
	SOURCE_DENY = 2,
};

/* Marks of a publication. */
enum publication_flag {
	/* Several sandboxes share the port (publish --balance): the maglev
	 * map's table for the publication's key says which one a new flow
	 * goes to, and addr and port are unused. */
	PUBLICATION_BALANCED = 1 << 0,
};

/* Value of the publications map: where the port leads. A balanced
 * publication's backends are of this type too, in its maglev table. */
struct publication {
	union addr addr;
	__be16 port;
	__u8 flags; /* enum publication_flag bits */
	__u8 pad;
};

/* The size of a balanced publication's table: MAGLEV_SLOTS slots (a
 * prime, as Maglev asks), each naming one of at most MAGLEV_BACKENDS
 * backends. Slots are a hundred times the backends of a publication of
 * up to 40, so that each backend's share is within 1% of its due, and
 * removing one moves few flows of the others (Eisenbud et al., NSDI
 * 2016). */
enum maglev_size {
	MAGLEV_SLOTS = 4093,
	MAGLEV_BACKENDS = 64,
};

/* Value of the maglev map, keyed by a balanced publication's key: its
 * backends (a backend that left is zero, and no slot names it) and the
 * lookup table, from a hash of a new flow's tuple (flow_hash) modulo
 * MAGLEV_SLOTS to the index of its backend. The control plane builds the
 * table; the datapath only reads it. */
struct maglev_table {
	struct publication backend[MAGLEV_BACKENDS];
	__u8 slot[MAGLEV_SLOTS];
	__u8 pad[3];
};
_Static_assert(MAGLEV_BACKENDS <= 256, "a slot is one byte");

/* Value of the uplinks map, keyed by ifindex: the addresses flows leaving
 * through the uplink are masqueraded to, per family (zero: none). */
struct uplink_info {
	union addr addr;
	union addr addr6;
};

/* Marks of a conntrack entry whose translation a publication made. The
 * datapath checks, packet by packet, that the publication still leads
 * where the entry does, so removing a publication ends its flows at once
 * without anyone walking conntrack. */
enum ct_flag {
	CT_PUBLISHED_IN = 1 << 0,  /* to the published port: the key's daddr:dport was the publication's */
	CT_PUBLISHED_OUT = 1 << 1, /* the endpoint's reply: the value's saddr:sport is */
	CT_REPLY = 1 << 2,         /* the entry of the reply direction */
	CT_FIN_ORIG = 1 << 3,      /* TCP: the originator has sent a FIN */
	CT_FIN_REPLY = 1 << 4,     /* TCP: the responder has sent a FIN */
	CT_BALANCED = 1 << 5,      /* made by a balanced publication: holds while the publication is balanced */
};

/* Where a flow is in its life; each state has its own lifetime (struct
 * ct_timeouts), as netfilter's conntrack has. */
enum ct_state {
	CT_TCP_SYN_SENT = 0,    /* the originator's SYN */
	CT_TCP_SYN_RECV = 1,    /* and the responder's SYN-ACK */
	CT_TCP_ESTABLISHED = 2, /* the handshake completed (or a flow picked up mid-stream) */
	CT_TCP_FIN_WAIT = 3,    /* one side has closed */
	CT_TCP_TIME_WAIT = 4,   /* both sides have closed */
	CT_TCP_CLOSE = 5,       /* reset */
	CT_UDP_UNREPLIED = 6,
	CT_UDP_REPLIED = 7,     /* answered: a "stream" once answered back, as netfilter says */
	CT_ICMP = 8,
	CT_STATE_MAX,
};

/* Lifetimes in seconds, per state, set by the loader (the daemon's
 * --ct-timeout flags); an entry not refreshed within its state's lifetime
 * is gone for every lookup, and its NAT port is free. */
struct ct_timeouts {
	__u32 tcp_syn_sent;
	__u32 tcp_syn_recv;
	__u32 tcp_established;
	__u32 tcp_unacknowledged; /* established, not yet answered (a flow picked up mid-stream) */
	__u32 tcp_fin_wait;
	__u32 tcp_time_wait;
	__u32 tcp_close;
	__u32 udp;        /* until answered back */
	__u32 udp_stream; /* answered and answered back */
	__u32 icmp;
};

/* A flow as a packet shows it: the key of the conntrack maps. For ICMP
 * echo the identifier stands in for the port: the source port of a
 * request, the destination port of a reply. */
struct flow {
	union addr saddr;
	union addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Value of the conntrack maps: one entry per direction of a flow. Both
 * entries carry the flow's state and lifetime, and are updated together. */
struct ct_entry {
	struct flow nat; /* the flow the packet is rewritten to (itself when untranslated) */
	__u64 expires;   /* CLOCK_BOOTTIME, in ns: the entry is gone from then on */
	/* Where packets of this direction must come in: the host side of an
	 * endpoint's veth, or 0 for the outside and the host itself. Nobody
	 * else can match the entry, so no sandbox can forge its way into
	 * another's flow. */
	__u32 ifindex;
	/* TCP: what the handshake's next segment must acknowledge: in
	 * SYN_SENT the SYN (for the SYN-ACK), from SYN_RECV on the SYN-ACK
	 * (for the originator's ACK) */
	__u32 ack_seq;
	__u32 last_ack; /* TCP: the acknowledgment number this direction last sent */
	__u8 state;     /* enum ct_state */
	__u8 flags;     /* enum ct_flag bits */
	__u8 pad[2];
};

/* Value of ct_sources, keyed by the source address of flows (their
 * originator's): what the datapath counted of the source's flows in ct.
 * Both only grow, so the daemon can bound, from two readings, what
 * changed in between (maps/conntrack.go). The source holds promoted -
 * forgotten - its entry of ct_released flows. */
struct ct_source {
	__u64 promoted;  /* flows moved into ct */
	__u64 forgotten; /* of those, the ones whose originator's entry the datapath removed */
};

/* A flow being created: its first packet's direction and the other. */
struct ct_new_flow {
	struct flow orig;      /* key of the first packet's direction */
	struct ct_entry fwd;   /* its entry: fwd.nat is what orig is rewritten to */
	struct ct_entry rev;   /* the reply direction's entry, less what ct_claim fills in */
	struct flow reply;     /* ct_claim's: the reply direction's key (off the tight stack) */
};

/* Value of new_flow_scratch: a flow being created, and for one to a
 * publication, the publication's key, the key source_refused looks the
 * client up by in source_ranges and the backend chosen (off the tight
 * stack too). */
struct new_flow_scratch {
	struct ct_new_flow nf;
	struct source_key source;
	struct publication backend;
};

/* The per-CPU budget of ICMP errors the datapath sends, a token bucket
 * like the kernel's icmp_msgs_per_sec: forged packets must not turn the
 * host into a reflector. */
struct icmp_budget {
	__u64 last; /* CLOCK_BOOTTIME, in ns, of the last refill */
	__u32 tokens;
	__u32 pad;
};

/* Key of frags: a fragmented datagram, as its fragments show it. */
struct frag_key {
	union addr saddr;
	union addr daddr;
	__be32 id; /* IPv4's 16 bits, or IPv6's 32 */
	__u8 proto;
	__u8 pad[3];
	__u32 ifindex; /* where the fragments come in: nobody else can feed them ports */
};

/* Value of frags: the ports (or echo identifier) of the datagram's first
 * fragment, which the fragments after it do not carry. */
struct frag_ports {
	__u64 expires; /* CLOCK_BOOTTIME, in ns */
	__be16 sport;
	__be16 dport;
	__u8 icmp_request;
	__u8 pad[3];
};

/* Key of published_ports: a sandbox port that a publication leads to. The
 * value counts the publications that do. */
struct target_key {
	union addr addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* A published address a socket asked for, and the endpoint it talks to
 * instead. */
struct sock_peer {
	union addr addr; /* the endpoint */
	union addr asked_addr;
	__be16 port;
	__be16 asked_port;
};

/* Value of sk_peers, a socket's own storage: the published addresses it
 * was sent to. A connected socket has one; an unconnected UDP socket may
 * use several, the latest SOCK_PEERS of which it remembers. The kernel
 * frees it with the socket. */
#define SOCK_PEERS 4
struct sock_peers {
	struct sock_peer peer[SOCK_PEERS];
	__u32 next; /* the slot a new address takes */
};

/* Key of held_ports: a published host port, whatever its address. The
 * value counts the publications that have it, so a bind to the wildcard
 * address, which would take the port on every address, is refused in one
 * lookup however many addresses the port is published on. */
struct held_port_key {
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* What `ebpfnet monitor` asks to see: events of packets a program
 * dropped (answered with an ICMP error included), and traces of the
 * others. */
enum monitor_type {
	MONITOR_DROP = 1 << 0,
	MONITOR_TRACE = 1 << 1,
};

/* Value of the monitor map's one entry, set by the daemon while a monitor
 * client listens: with no type asked for, the datapath writes nothing,
 * and the flag's lookup is all that monitoring costs a packet. */
struct monitor_config {
	__u32 types; /* enum monitor_type bits */
	__u32 pad;
};

/* The per-CPU budget of monitor events, a token bucket as icmp_budget is:
 * a flood must neither fill the ring buffer for everyone nor keep the
 * daemon decoding. */
struct monitor_budget {
	__u64 last; /* CLOCK_BOOTTIME, in ns, of the last refill */
	__u32 tokens;
	__u32 pad;
};

/* One record of the events ring buffer: what a program did to a packet. */
struct monitor_event {
	__u64 time;     /* CLOCK_BOOTTIME, in ns */
	__u32 ifindex;  /* where the program ran */
	__u32 len;      /* the packet's length */
	__u8 program;   /* enum program */
	__u8 verdict;   /* enum verdict */
	__u8 type;      /* enum monitor_type: one bit */
	__u8 has_after; /* after holds the flow the packet was translated to */
	__u32 pad;
	struct flow before; /* as the packet came in (ports zero where it has none) */
	struct flow after;
};
