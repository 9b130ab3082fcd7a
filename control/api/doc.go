// Package api is the daemon's HTTP+JSON interface on a unix socket (mode
// 0600 by default) and the client the CLI and plugins use. Requests carry
// structured values (port mappings, not -p strings): user syntax is parsed
// by the frontends. The api checks a request's strings into control's
// typed specs, answers failures by kind (400 invalid, 404 not found, 409
// conflict, 500 the daemon's own), shapes the answers like Docker's inspect
// output, and exports the datapath counters for Prometheus.
//
// The api never touches the kernel or the store itself; control does.
package api
