// Package clustersync keeps this host in line with the cluster of hosts it
// joined (package cluster): the local copies ("mirrors") of the overlay
// networks, the peers of their VXLAN devices, the names of other hosts'
// endpoints, and this host's addresses in the cluster, given back when
// their endpoints go and taken again when a lapsed lease lost them.
//
// A Syncer follows the cluster's watch on a goroutine of its own and
// applies each newest state. The local part runs under the engine's lock,
// which the engine hands it (Config.Locked), and makes the mirrors through
// the engine (Config.Mirror, Config.DropMirror); the requests to the
// cluster's store come after, without the lock, so a store out of reach
// keeps them waiting, not every local change. What failed is tried again,
// later each time; a conflict with the cluster's state (an address or a
// subnet another host has) is kept for the status until a change
// resolves it.
//
// It never changes a sandbox or an endpoint, and reads the store only for
// the overlay networks and their endpoints.
package clustersync
