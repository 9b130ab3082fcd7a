// Package enginetest starts an engine in process for the tests of the
// packages that sit on it (apiengine, Docker's plugin): an engine serving
// a host namespace of the test's own, its names prefixed so that tests run
// side by side. The engine's own tests have a harness of their own, inside
// the package.
package enginetest

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/frontend/sandbox"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// New starts an engine with the CLI's sandbox runtime, in a host
// namespace and under a name prefix (kind and six hex digits) of its own;
// the test's cleanup closes it and removes what it made.
func New(t *testing.T, kind string) (e *engine.Engine, cfg engine.Config, prefix string) {
	t.Helper()
	testenv.RequirePrivileges(t)
	prefix, dir := testenv.Prefix(kind), t.TempDir()
	cfg = engine.Config{StateDir: filepath.Join(dir, "state"), BPFFS: "/sys/fs/bpf/" + prefix, NetNS: testenv.HostNamespace(t, prefix+"-host"),
		Runtime: &sandbox.Runtime{NetnsDir: sandbox.DefaultNetnsDir, EtcDir: filepath.Join(dir, "etc")}, ResolvConf: testenv.ResolvConf(t, dir)}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := errors.Join(e.Close(), engine.Reset(cfg)); err != nil {
			t.Errorf("clean up: %v", err)
		}
	})
	return e, cfg, prefix
}
