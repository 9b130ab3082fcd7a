package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// Runtime keeps the namespaces, processes and files of the CLI's sandboxes,
// where `ip netns` expects them: sandbox NAME's namespace is bound at
// NetnsDir/NAME and its hosts and resolv.conf are in EtcDir/NAME, which
// `ip netns exec` and `ebpfnet exec` mount over /etc. The engine calls it
// (engine.Runtime) and decides when; the runtime decides where and how.
type Runtime struct {
	NetnsDir string
	EtcDir   string
}

// Defaults for a daemon serving the host.
const (
	DefaultNetnsDir = "/run/netns"
	DefaultEtcDir   = "/etc/netns"
)

// NewRuntime places the sandboxes' namespaces and files. It refuses a
// namespace directory whose binds no other process would see.
func NewRuntime(netnsDir, etcDir string) (*Runtime, error) {
	if err := namespace.ShareDir(netnsDir); err != nil {
		return nil, err
	}
	return &Runtime{NetnsDir: netnsDir, EtcDir: etcDir}, nil
}

// NamespacePath is where sandbox name's namespace is bound.
func (r *Runtime) NamespacePath(name string) string { return filepath.Join(r.NetnsDir, name) }

// CreateNamespace binds sb's namespace at sb.NetNS: the namespace at shares
// (host and container mode), or a new one with lo up and IPv6 off.
func (r *Runtime) CreateNamespace(sb store.Sandbox, shares string) error {
	if _, err := os.Lstat(sb.NetNS); err == nil {
		return errdefs.Conflictf("namespace %s already exists and is not an ebpfnet sandbox", sb.NetNS)
	}
	if shares != "" {
		return namespace.Bind(shares, sb.NetNS)
	}
	if err := namespace.Create(sb.NetNS); err != nil {
		return err
	}
	err := namespace.Do(sb.NetNS, func() error {
		// Before any interface arrives, so none ever has an IPv6 address.
		// Never for the shared namespaces above: those are someone else's.
		if err := namespace.DisableIPv6(); err != nil {
			return fmt.Errorf("sandbox %s: %w", sb.Name, err)
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			return fmt.Errorf("bring lo up in sandbox %s: %w", sb.Name, err)
		}
		return nil
	})
	if err != nil {
		namespace.Remove(sb.NetNS)
	}
	return err
}

// RemoveNamespace unbinds sb's namespace and removes its files; what is
// already gone is fine.
func (r *Runtime) RemoveNamespace(sb store.Sandbox) error {
	if err := namespace.Remove(sb.NetNS); err != nil {
		return err
	}
	return os.RemoveAll(r.filesDir(sb.Name))
}

// StopProcesses refuses, or with force kills, the processes inside a
// sandbox that owns its namespace. Host and container-mode sandboxes share
// theirs, so their processes are not theirs to kill.
func (r *Runtime) StopProcesses(sb store.Sandbox, force bool) error {
	if sb.Mode != store.ModeNetworks {
		return nil
	}
	id, err := namespace.IDOf(sb.NetNS)
	if err != nil {
		return nil // the namespace is already gone: nothing runs in it
	}
	pids := namespace.Processes(id)
	if len(pids) == 0 {
		return nil
	}
	if !force {
		return errdefs.Conflictf("sandbox %s has running processes (pids %v): stop them or remove it by force", sb.Name, pids)
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(namespace.Processes(id)) > 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("sandbox %s: processes %v survive SIGKILL", sb.Name, namespace.Processes(id))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// FilesDir is where sb's hosts and resolv.conf are; "" for a host-mode
// sandbox, which uses the host's own.
func (r *Runtime) FilesDir(sb store.Sandbox) string {
	if sb.Mode == store.ModeHost {
		return ""
	}
	return r.filesDir(sb.Name)
}

func (r *Runtime) filesDir(name string) string { return filepath.Join(r.EtcDir, name) }

// WriteFiles writes sb's hosts and resolv.conf, when it has files of its own.
func (r *Runtime) WriteFiles(sb store.Sandbox, hosts, resolvConf string) error {
	dir := r.FilesDir(sb)
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for name, content := range map[string]string{"hosts": hosts, "resolv.conf": resolvConf} {
		path := filepath.Join(dir, name)
		// Rewritten in place (processes inside have them bind-mounted), so
		// a reader may catch one truncated: only when the content changes.
		if old, err := os.ReadFile(path); err == nil && string(old) == content {
			continue
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s of sandbox %s: %w", name, sb.Name, err)
		}
	}
	return nil
}
