//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The datapath's maps and shared types, and no program. The loader creates
 * and pins the maps from this object and hands them to the program objects
 * (endpoint.c, uplink.c, sock.c), which declare the same maps. bpf2go
 * generates the Go side of the shared types from here. */

#include "lib/types.h"
#include "lib/maps.h"

/* Enums used only as values leave no BTF of their own; these pointers make
 * clang emit them so Go can read their names. */
const enum verdict *unused_verdict __attribute__((unused));
const enum program *unused_program __attribute__((unused));
const enum ct_flag *unused_ct_flag __attribute__((unused));
const enum ct_state *unused_ct_state __attribute__((unused));
const enum stats_slots *unused_stats_slots __attribute__((unused));
const enum monitor_type *unused_monitor_type __attribute__((unused));
const enum vxlan *unused_vxlan __attribute__((unused));
const enum publication_flag *unused_publication_flag __attribute__((unused));
const enum maglev_size *unused_maglev_size __attribute__((unused));
const enum egress_action *unused_egress_action __attribute__((unused));
const enum rate_direction *unused_rate_direction __attribute__((unused));
/* The events ring buffer's records, which no map declares as its value. */
const struct monitor_event *unused_monitor_event __attribute__((unused));
/* The type of a load-time variable of the program objects, for the loader. */
const struct ct_timeouts *unused_ct_timeouts __attribute__((unused));

char __license[] SEC("license") = "Dual BSD/GPL";
