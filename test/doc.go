// Package test holds ebpfnet's integration tests. Each test builds its own
// fake host namespace with its own daemon (see testbed), sends real traffic
// between sandboxes and never touches the machine's root namespace. They
// need root; under CI a test that cannot run fails instead of skipping.
package test
