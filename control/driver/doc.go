// Package driver is the seam between the engine and the kinds of network:
// the Driver interface, one package per driver below it (bridge, macvlan,
// overlay: a bridge with a VXLAN port, and chained: a bridge another CNI
// plugin made), the driver options by their Docker names and the reading
// of them (each driver lists the options it owns and refuses the rest),
// and the netlink helpers the drivers share (ownership aliases, MACs,
// link removal).
//
// A driver does netlink work only. It never writes a BPF map or attaches
// a program (the engine does, around it) and never reads the store. It
// runs in the dataplane's namespace, where the engine puts it, and enters
// only the sandbox namespace it is handed.
package driver
