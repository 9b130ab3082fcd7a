package engine

import "github.com/ebpfnet/ebpfnet/control/store"

// Runtime is the frontend that owns the namespaces, processes and files of
// the sandboxes CreateSandbox makes (the CLI's: frontend/sandbox.Runtime).
// The engine decides when a namespace is made or removed and what the files
// say; the runtime decides where they live and how. The engine itself only
// enters a sandbox's namespace, at the path its record holds (Sandbox.NetNS).
type Runtime interface {
	// NamespacePath is where the namespace of a new sandbox named name goes.
	NamespacePath(name string) string
	// CreateNamespace makes sb's namespace at sb.NetNS: a binding of the
	// namespace at shares when it is not "" (host and container mode), or
	// a new namespace with lo up and IPv6 off. It refuses a path in use.
	CreateNamespace(sb store.Sandbox, shares string) error
	// RemoveNamespace removes sb's namespace and files; what is gone is fine.
	RemoveNamespace(sb store.Sandbox) error
	// StopProcesses refuses (errdefs.Conflict) to remove a sandbox that
	// still runs processes, or with force kills them.
	StopProcesses(sb store.Sandbox, force bool) error
	// FilesDir is where sb's hosts and resolv.conf are, "" for none.
	FilesDir(sb store.Sandbox) string
	// WriteFiles writes sb's hosts and resolv.conf.
	WriteFiles(sb store.Sandbox, hosts, resolvConf string) error
}

// namespaceOf is the path of sb's namespace; records from before paths
// were stored have it where the runtime puts a sandbox of that name.
func namespaceOf(rt Runtime, sb store.Sandbox) string {
	if sb.NetNS == "" {
		return rt.NamespacePath(sb.Name)
	}
	return sb.NetNS
}
