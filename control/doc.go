// Package control holds no code; its subpackages are ebpfnet's control
// plane:
//
//   - engine: the CNM core, which turns requests into store records,
//     kernel objects and BPF map entries under one lock, one transaction
//     and one undo list per change, and wires the packages beside it. It
//     takes typed specs (netip, ports.Mapping) and knows no API request or
//     read model but its status;
//   - wiring: the kernel side of networks and endpoints (the drivers'
//     devices, the endpoint programs and their map entries, the sandbox
//     side's configuration, the conntrack flushes of removed endpoints);
//     desired: the one place where records become map entries;
//   - reconcile: moves the kernel and the maps to what the store holds, a
//     record at a time under the engine's lock, and the whole maps from a
//     plan made without it;
//   - external: the endpoints of runtimes that own their namespaces
//     (Docker, CNI), changed under the engine's lock and in its
//     transactions, which the engine hands it;
//   - publications: publishes sandboxes' ports inside the engine's
//     transactions: holds every publication's host port, writes their map
//     entries (balanced ports' backend tables too) and changes their
//     source lists;
//   - pools: chooses the networks' address pools (a subnet given, or the
//     first default pool free of routes and pools) and serves a runtime's
//     IPAM requests from the same pools; ipam keeps one pool's addresses;
//   - status: reads the status and the metrics (counters, map fill, the
//     programs on each interface, the host's settings, the cluster);
//   - clustersync: follows the cluster of hosts for overlay networks: the
//     mirrors (which the engine makes and drops when it asks), the VXLAN
//     devices' peers, other hosts' names and this host's addresses in the
//     cluster; its local part runs under the engine's lock, its requests
//     to the cluster's store after it;
//   - apiengine: api's interfaces over the engine. It decodes each
//     request's addresses once, names a runtime's attachments after its
//     container and interface, and shows records as read models;
//   - names: what the embedded DNS answers and what each sandbox's hosts
//     and resolv.conf say, kept in step with the store: the engine hands it
//     each committed change (Names.Follow) and a reconcile has it go over
//     every sandbox, one at a time under the engine's lock (Names.Resync);
//   - hostsync: the dataplane namespace's own interfaces and addresses in
//     the datapath (the uplink programs, host_addrs, other runtimes'
//     subnets), read without the engine's lock and applied under it, on
//     every change there (Syncer.Watch) and at each reconcile;
//   - monitor: the hub of the datapath's events (ebpfnet monitor), which
//     owns the ring buffer's reader and the monitor map, and names the
//     events from the store (monitor.StoreNames); the engine answers the
//     API's Events through it;
//   - driver/…: the Driver interface, the one dispatch from a driver's name
//     to its driver (driver/drivers), and one package per kind of network
//     (bridge, macvlan, overlay, chained), which build the devices of
//     networks and endpoints for wiring;
//   - frontend/…: one package per way in. A frontend owns user syntax and
//     names and reaches the engine through api. sandbox is the daemon's
//     side of the CLI's sandboxes: their namespaces, files and processes
//     (engine.Runtime); the CLI's side, docker run's -p grammar, is parsed
//     in ports. Docker's plugin (frontend/docker) runs in the daemon;
//     CNI's is a binary of its own (cmd/ebpfnet-cni), a client of the
//     API's attachments. Both hand over their runtime's namespaces by path;
//   - api: the wire types (addresses as netip types, and the parsers each
//     way in decodes them with), the read models, the server and the
//     client, and the Engine and RuntimeEngine interfaces the server calls,
//     defined here by their user and taking the request's context:
//     apiengine implements them, and api imports neither it nor the
//     engine; api/apitest is an engine that answers nothing, for the
//     tests of its callers;
//   - store: the durable state of this host; cluster: the records the hosts
//     of a cluster share in etcd (hosts and their leases, overlay networks,
//     their addresses); ipam: address pools; hostports: the host ports that
//     published ports take; ports: published ports as every frontend hands
//     them over, built one way for all of them, and the -p grammar;
//     errdefs: the kinds of failure; namespace: entering, creating and
//     removing network namespaces; dns: the embedded DNS server;
//     hostsettings: reading (never writing) the host's netfilter and
//     routing settings that status shows.
package control
