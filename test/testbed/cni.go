package testbed

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

var (
	cniOnce sync.Once
	cniPath string // holds ebpfnet (the plugin) and cnitool
	cniErr  error
)

// CNITools builds ebpfnet's CNI plugin, named as `make install` names it,
// once per process, into one directory with cnitool (CNITool).
func CNITools(tb TB) string {
	tb.Helper()
	cniOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ebpfnet-cni-")
		if err != nil {
			cniErr = err
			return
		}
		cniPath = dir
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "ebpfnet"), "github.com/ebpfnet/ebpfnet/cmd/ebpfnet-cni")
		if out, err := cmd.CombinedOutput(); err != nil {
			cniErr = fmt.Errorf("build the CNI plugin: %v\n%s", err, out)
			return
		}
		cnitool, err := CNITool.Build()
		if err == nil {
			err = os.Symlink(cnitool, filepath.Join(dir, "cnitool"))
		}
		cniErr = err
	})
	if cniErr != nil {
		tb.Fatal(cniErr)
	}
	return cniPath
}

// ReferencePlugins is where Debian's containernetworking-plugins are.
const ReferencePlugins = "/usr/lib/cni"

// CNI runs cnitool against the network configurations in Dir, with
// ebpfnet's plugin and the reference plugins.
type CNI struct {
	tb   TB
	Path string // ebpfnet's plugin and cnitool
	Dir  string // NETCONFPATH
	In   string // the named namespace cnitool runs in, "" for the caller's own
	Spec string // the configurations' cniVersion
}

// NewCNI is cnitool with configurations in a directory of tb's own.
func NewCNI(tb TB) *CNI {
	return &CNI{tb: tb, Path: CNITools(tb), Dir: tb.TempDir(), Spec: "1.1.0"}
}

// PluginDir is a directory of ebpfnet's plugin beside the reference
// plugins, for runtimes that take a single one (containerd's CRI, which
// runs loopback for every pod, and nerdctl).
func (c *CNI) PluginDir() string {
	c.tb.Helper()
	dir := c.tb.TempDir()
	refs, _ := filepath.Glob(ReferencePlugins + "/*")
	for _, p := range append(refs, filepath.Join(c.Path, "ebpfnet")) {
		if err := os.Symlink(p, filepath.Join(dir, filepath.Base(p))); err != nil {
			c.tb.Fatal(err)
		}
	}
	return dir
}

// Conflist writes a network configuration list named name.
func (c *CNI) Conflist(name string, plugins ...map[string]any) {
	c.tb.Helper()
	data, _ := json.Marshal(map[string]any{"cniVersion": c.Spec, "name": name, "plugins": plugins})
	if err := os.WriteFile(filepath.Join(c.Dir, name+".conflist"), data, 0o644); err != nil {
		c.tb.Fatal(err)
	}
}

// Run runs `cnitool VERB NETWORK NETNS` with the environment given as
// KEY=VALUE pairs (CAP_ARGS, CNI_IFNAME).
func (c *CNI) Run(verb, network, netns string, env ...string) (string, error) {
	argv := []string{filepath.Join(c.Path, "cnitool"), verb, network, netns}
	if c.In != "" {
		argv = append([]string{"ip", "netns", "exec", c.In}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), append([]string{"CNI_PATH=" + c.Path + ":" + ReferencePlugins, "NETCONFPATH=" + c.Dir}, env...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Must is Run that fails on an error.
func (c *CNI) Must(verb, network, netns string, env ...string) string {
	c.tb.Helper()
	out, err := c.Run(verb, network, netns, env...)
	if err != nil {
		c.tb.Fatalf("cnitool %s %s %s: %v\n%s", verb, network, netns, err, out)
	}
	return out
}

// PortMappings is CAP_ARGS with portmap's portMappings, given as
// [[HOSTIP]:]HOST:CONTAINER/PROTO.
func PortMappings(m ...string) string {
	var pms []map[string]any
	for _, s := range m {
		pm := parsePortMapping(s)
		entry := map[string]any{"hostPort": pm.host, "containerPort": pm.container, "protocol": pm.proto}
		if pm.hostIP != "" {
			entry["hostIP"] = pm.hostIP
		}
		pms = append(pms, entry)
	}
	data, _ := json.Marshal(map[string]any{"portMappings": pms})
	return "CAP_ARGS=" + string(data)
}

// portMapping is a port mapping as tests write it:
// [[HOSTIP]:]HOST:CONTAINER/PROTO, the host IP bracketed as IPv6 is.
type portMapping struct {
	hostIP          string
	host, container int
	proto           string
}

func parsePortMapping(s string) portMapping {
	var pm portMapping
	if ip, rest, ok := strings.Cut(strings.TrimPrefix(s, "["), "]:"); ok {
		pm.hostIP, s = ip, rest
	}
	fmt.Sscanf(strings.ReplaceAll(strings.ReplaceAll(s, ":", " "), "/", " "), "%d %d %s", &pm.host, &pm.container, &pm.proto)
	return pm
}
