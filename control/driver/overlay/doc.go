// Package overlay is the driver of networks that span the hosts of a
// cluster. On each host an overlay network is a bridge network (package
// bridge) with one more port: a VXLAN device that carries frames for
// endpoints on the other hosts to their VTEPs, over UDP 4789.
//
// The device learns nothing and floods nothing: the engine tells it, from
// the cluster store, each remote endpoint's MAC and the VTEP behind it
// (FDB) and each remote address's MAC (neighbours, which the device's ARP
// proxy answers from). A bridge's broadcast never leaves the host, so the
// gateway address, the same on every host, stays each host's own.
package overlay
