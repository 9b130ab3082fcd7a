// Package sandbox is the runtime of the CLI's sandboxes, on the daemon's
// side (Runtime): their namespaces under /run/netns, their hosts and
// resolv.conf under /etc/netns, and their processes, which the engine
// asks it to make, write and stop. The CLI's side of them, docker run's
// -p grammar, is in the ports package: the CLI parses -p there and the
// daemon receives only structured port mappings.
//
// It uses the store's records and the namespace package, never the
// engine: the engine reaches it through engine.Runtime, wired by cmd.
package sandbox
