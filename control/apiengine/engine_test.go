package apiengine

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/frontend/sandbox"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// testEngine is an engine in process serving a host namespace of the
// test's own, and the API over it.
type testEngine struct {
	api.RuntimeEngine
	e      *engine.Engine
	cfg    engine.Config
	prefix string
}

var ctx = context.Background()

func newTestEngine(t *testing.T) testEngine {
	t.Helper()
	testenv.RequirePrivileges(t)
	prefix, dir := testenv.Prefix("aet"), t.TempDir()
	cfg := engine.Config{StateDir: filepath.Join(dir, "state"), BPFFS: "/sys/fs/bpf/" + prefix, NetNS: testenv.HostNamespace(t, prefix+"-host"),
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
	return testEngine{New(e), e, cfg, prefix}
}

func (te testEngine) name(s string) string { return te.prefix + "-" + s }

// inHost runs fn in the engine's host namespace.
func (te testEngine) inHost(fn func() error) error { return namespace.Do(te.cfg.NetNS, fn) }

// containerNS makes a bare network namespace standing for a container.
func containerNS(t *testing.T, te testEngine, name string) string {
	return testenv.ContainerNamespace(t, te.name(name))
}
