//go:build failpoints

package failpoint

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A failpoint fires at the hit it names, once, counted from when its file
// last changed; the trace lists every hit.
func TestFailpointsFromTheirFile(t *testing.T) {
	dir := t.TempDir()
	file, trace := filepath.Join(dir, "points"), filepath.Join(dir, "trace")
	t.Setenv(FileEnv, file)
	t.Setenv(TraceEnv, trace)
	if err := Hit("a"); err != nil {
		t.Fatalf("no file: %v", err)
	}
	os.WriteFile(file, []byte("a@2=ENOSPC\nb=EEXIST"), 0o644)
	if err := Hit("a"); err != nil {
		t.Errorf("a's first hit since the file: %v", err)
	}
	if err := Hit("a"); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("a's second hit: %v, want ENOSPC", err)
	}
	if err := Hit("a"); err != nil {
		t.Errorf("a's third hit: %v, want none: a failpoint fires once", err)
	}
	if err := Hit("b"); !errors.Is(err, syscall.EEXIST) || err.Error() != "failpoint b: file exists" {
		t.Errorf("b's first hit: %v, want EEXIST", err)
	}
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(file, []byte("a=EIO"), 0o644) // counted afresh
	if err := Hit("a"); !errors.Is(err, syscall.EIO) {
		t.Errorf("a's first hit after the file changed: %v, want EIO", err)
	}
	if got, _ := os.ReadFile(trace); string(got) != "a\na\na\na\nb\na\n" {
		t.Errorf("trace %q", got)
	}
}

// A fault fires as a step's failpoint does, and the trace, which lists a
// change's steps, leaves it out.
func TestFaultsAreNotSteps(t *testing.T) {
	dir := t.TempDir()
	file, trace := filepath.Join(dir, "points"), filepath.Join(dir, "trace")
	t.Setenv(FileEnv, file)
	t.Setenv(TraceEnv, trace)
	os.WriteFile(file, []byte("w@2=ENOBUFS"), 0o644)
	if err := Fault("w"); err != nil {
		t.Errorf("w's first hit: %v", err)
	}
	if err := Fault("w"); !errors.Is(err, syscall.ENOBUFS) {
		t.Errorf("w's second hit: %v, want ENOBUFS", err)
	}
	Hit("s")
	if got, _ := os.ReadFile(trace); string(got) != "s\n" {
		t.Errorf("trace %q, want the step alone", got)
	}
}
