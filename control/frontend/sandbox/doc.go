// Package sandbox is the frontend of the CLI's sandboxes. On the client
// side it is their user syntax: it turns docker run's -p grammar into
// structured port mappings, which is all the daemon receives. On the
// daemon side it is their runtime (Runtime): their namespaces under
// /run/netns, their hosts and resolv.conf under /etc/netns, and their
// processes, which the engine asks it to make, write and stop.
//
// It uses the store's records and the namespace package, never the
// engine: the engine reaches it through engine.Runtime, wired by cmd.
package sandbox
