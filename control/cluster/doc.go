// Package cluster keeps the records several hosts share in etcd: the hosts
// themselves, overlay networks and the addresses handed out on them. It is
// the global side of the state, as control/store is the local one, and it
// owns the layout of its keys under one prefix.
//
// Every change is one etcd transaction whose comparisons make it fail when
// another host changed what it read, so two hosts never take the same
// network name, VNI, subnet or address; the loser reads again and retries,
// or is refused. Each host holds a lease: its host record and the
// addresses it took are bound to it, and vanish for everyone when the host
// stops renewing it.
//
// cluster knows no kernel object and no local record; the engine decides
// what a global record means on this host.
package cluster
