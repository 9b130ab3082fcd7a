// Package test holds ebpfnet's integration tests. Each test builds its own
// fake host namespace with its own daemon (see testbed), sends real traffic
// between sandboxes and never touches the machine's root namespace. They
// need root; under CI a test that cannot run fails instead of skipping.
//
// A test that mostly waits (on daemons, etcd leases, dockerd) calls
// t.Parallel() first thing, and runs beside the others; one that floods,
// measures or times its probes does not, and runs alone (make test runs
// those first, by that rule). Tests running side by side share nothing
// but what testbed counts (sharePath): every name starts with a random
// prefix, every file is in a directory of the test's own.
package test
