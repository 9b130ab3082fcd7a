// Package api is the daemon's HTTP+JSON interface on a unix socket (mode
// 0600 by default) and the client the CLI and plugins use. It parses and
// checks request strings into control's typed specs, shapes the answers like
// Docker's inspect output, and exports the datapath counters for Prometheus.
//
// The api never touches the kernel or the store itself; control does.
package api
