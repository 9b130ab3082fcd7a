package apiengine

import (
	"context"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/enginetest"
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
	e, cfg, prefix := enginetest.New(t, "aet")
	return testEngine{New(e), e, cfg, prefix}
}

func (te testEngine) name(s string) string { return te.prefix + "-" + s }

// inHost runs fn in the engine's host namespace.
func (te testEngine) inHost(fn func() error) error { return namespace.Do(te.cfg.NetNS, fn) }

// containerNS makes a bare network namespace standing for a container.
func containerNS(t *testing.T, te testEngine, name string) string {
	return testenv.ContainerNamespace(t, te.name(name))
}
