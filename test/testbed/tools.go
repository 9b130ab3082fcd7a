package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// A Tool is a program the tests drive that Debian does not package, built
// from the module proxy at a fixed version.
type Tool struct {
	Name    string
	Module  string // the module, at Version
	Package string // the command's package in it
	Version string
	// Standalone tools are built in a module of their own: go install
	// refuses a module with replace directives (nerdctl's).
	Standalone bool
}

// The tools the tests build.
var (
	CNITool = Tool{Name: "cnitool", Module: "github.com/containernetworking/cni", Package: "github.com/containernetworking/cni/cnitool", Version: "v1.3.1"}
	CRICtl  = Tool{Name: "crictl", Module: "sigs.k8s.io/cri-tools", Package: "sigs.k8s.io/cri-tools/cmd/crictl", Version: "v1.37.0"}
	Nerdctl = Tool{Name: "nerdctl", Module: "github.com/containerd/nerdctl/v2", Package: "github.com/containerd/nerdctl/v2/cmd/nerdctl", Version: "v2.0.0", Standalone: true}
)

// Tools are every tool the tests build: make test-tools builds them all
// before the tests, for their build not to count in the tests' time.
var Tools = []Tool{CNITool, CRICtl, Nerdctl}

// ToolsDir keeps the built tools from one run to the next, one file per
// version: EBPFNET_TEST_TOOLS, or the user's cache.
func ToolsDir() (string, error) {
	if dir := os.Getenv("EBPFNET_TEST_TOOLS"); dir != "" {
		return dir, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "ebpfnet-test-tools"), nil
}

var toolBuilds sync.Mutex

// Build is the path of the tool, built unless an earlier run built it.
// It builds into a temporary name and renames, so that a build cut short
// leaves nothing a later run would take for the tool.
func (t Tool) Build() (string, error) {
	toolBuilds.Lock()
	defer toolBuilds.Unlock()
	dir, err := ToolsDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, t.Name+"-"+t.Version)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	script := fmt.Sprintf("GOBIN=%s go install %s@%s", work, t.Package, t.Version)
	if t.Standalone {
		script = fmt.Sprintf("cd %s && go mod init toolbuild >/dev/null 2>&1 && go get %s@%s && go build -o %s %s",
			work, t.Module, t.Version, filepath.Join(work, t.Name), t.Package)
	}
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = os.Environ()
	if t.Standalone {
		cmd.Env = append(cmd.Env, "GOFLAGS=-mod=mod", "GONOSUMDB=*", "GOSUMDB=off")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s %s: %v\n%s", t.Name, t.Version, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(filepath.Join(work, t.Name), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// MustBuild is Build, failing tb when it cannot.
func (t Tool) MustBuild(tb TB) string {
	tb.Helper()
	bin, err := t.Build()
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}
