package engine

import (
	"github.com/ebpfnet/ebpfnet/control/api"
)

// Events opens a stream of the datapath's events that f picks (package
// monitor). While a stream is open, the datapath writes events; Close it
// when done.
func (e *Engine) Events(f api.EventFilter) (api.EventStream, error) { return e.monitor.Events(f) }
