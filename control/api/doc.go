// Package api is the daemon's HTTP+JSON interface on a unix socket (mode
// 0600 by default) and the client the CLI and plugins use. It owns the wire
// types: requests with structured values (port mappings, not -p strings),
// the names requests carry (predefined networks, drivers, gateway modes),
// which the daemon's packages declare theirs from, and the read models the
// engine answers with, shaped like Docker's inspect output. Failures are
// answered by kind: 400 invalid, 404 not found, 409 conflict, 500 the
// daemon's own.
//
// The server calls an Engine interface and nothing else: the api imports
// neither the engine, nor the store, nor the maps, so a plugin binary that
// links only the client stays small.
package api
