// Package testenv holds what every privileged ebpfnet test needs to know
// about the machine it runs on.
package testenv

import (
	"os"
	"testing"
)

// RequirePrivileges skips a test that needs root, except in CI (CI set),
// where a privileged test that does not run is a failure.
func RequirePrivileges(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		tb.Fatal("this test needs root, and CI must run it: run the suite as root")
	}
	tb.Skip("needs root")
}
