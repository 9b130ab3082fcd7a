// Package loader loads ebpfnet's BPF objects into the kernel and attaches
// them.
//
// Maps are pinned by name under the daemon's bpffs directory and TCX links
// under its links/ subdirectory, so the datapath keeps running when the
// daemon exits and a restarted daemon picks up the same maps. A pinned map
// whose type, sizes, flags or key and value layout differ from this
// binary's (an upgrade changed it) is replaced by an empty one and
// reported, not refused: the control plane refills what it owns, and
// conntrack starts afresh. Programs are attached with TCX, falling back to
// a clsact qdisc with a direct-action cls_bpf filter where the kernel has
// no TCX. TCX links go to the head of the chain, and back there whenever
// they are re-attached and found behind another program, so no other
// program decides first what ebpfnet sees.
//
// Interfaces are named by ifindex, which the kernel resolves in the calling
// thread's network namespace: callers switch to the dataplane's namespace
// first. The loader never decides what to attach where; the control plane
// does.
package loader
