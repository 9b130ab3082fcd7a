package engine

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// TestCreateRefusedAtFileLimit: a create that the limit on open files
// would stop half-way is refused before it starts, with one line naming
// the limit, and changes nothing: no record, no namespace.
func TestCreateRefusedAtFileLimit(t *testing.T) {
	te := newTestEngine(t)
	web := te.name("web")
	before := te.snapshot(t)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	tight := lim
	tight.Cur = uint64(len(open) + descriptorHeadroom/2)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &tight); err != nil {
		t.Fatal(err)
	}
	_, err = te.CreateSandbox(SandboxSpec{Name: web, Publish: []ports.Mapping{{Proto: ports.TCP, HostPort: 18081, Port: 80}}})
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, errTooManyFiles) || !strings.Contains(err.Error(), "RLIMIT_NOFILE") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("create at the limit: %v, want one line naming RLIMIT_NOFILE", err)
	}
	if after := te.snapshot(t); after != before {
		t.Errorf("a refused create changed the state:\n%s\nwant\n%s", after, before)
	}
	if namespace.IsNamespace(te.cfg.Runtime.NamespacePath(web)) {
		t.Errorf("a refused create left namespace %s", te.cfg.Runtime.NamespacePath(web))
	}
	if _, err := te.CreateSandbox(SandboxSpec{Name: web}); err != nil {
		t.Errorf("create below the limit again: %v", err)
	}
}
