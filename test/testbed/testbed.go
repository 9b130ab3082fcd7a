// Package testbed builds isolated ebpfnet "hosts" for integration tests and
// benchmarks: a network namespace standing in for the host, a daemon
// instance serving it with its own socket, state, pins and files, and
// helpers that send real traffic between namespaces.
//
// Nothing here touches the machine's root network namespace; everything a
// Host creates is removed in the test's cleanup, also when the test fails.
package testbed

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// builds are the ebpfnet binaries built once per process, by build tags
// ("": the plain one).
var builds struct {
	mu   sync.Mutex
	bins map[string]string
}

// TB is what the testbed needs of its caller: a *testing.T or *testing.B,
// or the benchmark program's runner.
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Failed() bool
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
}

// RemoveBuilds removes what Binary, FailpointBinary and CNITools built
// (the tools stay in ToolsDir for the next run); a test binary's TestMain
// calls it once its tests are done.
func RemoveBuilds() {
	builds.mu.Lock()
	for _, bin := range builds.bins {
		os.RemoveAll(filepath.Dir(bin))
	}
	builds.mu.Unlock()
	if cniPath != "" {
		os.RemoveAll(cniPath)
	}
}

// Binary builds the ebpfnet command once per process; EBPFNET_BINARY names
// a built one instead (the bench compares two versions of the datapath so).
func Binary(tb TB) string {
	tb.Helper()
	if b := os.Getenv("EBPFNET_BINARY"); b != "" {
		return b
	}
	return build(tb, "")
}

// FailpointBinary is ebpfnet built with the failpoints tag, whose daemon
// dies or fails at the steps its environment names (package
// control/failpoint), built once per process.
func FailpointBinary(tb TB) string {
	tb.Helper()
	return build(tb, "failpoints")
}

// build builds ebpfnet with tags once per process.
func build(tb TB, tags string) string {
	tb.Helper()
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if bin, ok := builds.bins[tags]; ok {
		return bin
	}
	dir, err := os.MkdirTemp("", "ebpfnet-bin-")
	if err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, "ebpfnet")
	if out, err := exec.Command("go", "build", "-tags", tags, "-o", bin, "github.com/ebpfnet/ebpfnet/cmd/ebpfnet").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		tb.Fatalf("build ebpfnet (tags %q): %v\n%s", tags, err, out)
	}
	if builds.bins == nil {
		builds.bins = map[string]string{}
	}
	builds.bins[tags] = bin
	return bin
}

// Host is one fake host: a namespace and the daemon that serves it.
type Host struct {
	tb     TB
	Prefix string // names of everything this host makes start with it
	NetNS  string // the host namespace's path
	dir    string
	bin    string
	env    []string // the daemon's environment beside the test's
	flags  []string // placement flags shared by daemon and reset
	extra  []string
	daemon *exec.Cmd
	exited chan struct{}
	Client *api.Client
}

// BPFFS is the directory of the daemon's pinned maps and links.
func (h *Host) BPFFS() string { return "/sys/fs/bpf/" + h.Prefix }

// Socket is the daemon's API socket.
func (h *Host) Socket() string { return filepath.Join(h.dir, "ebpfnet.sock") }

// NewHost creates a host namespace and starts a daemon in it; extra flags
// go to the daemon.
func NewHost(tb TB, extra ...string) *Host {
	tb.Helper()
	return NewHostWith(tb, nil, extra...)
}

// NewHostWith is NewHost with setup run on the new host namespace before
// the daemon starts (to give the host routes or interfaces).
func NewHostWith(tb TB, setup func(h *Host), extra ...string) *Host {
	tb.Helper()
	h := newHost(tb, setup, extra...)
	h.Start()
	return h
}

// newHost is NewHostWith without starting the daemon.
func newHost(tb TB, setup func(h *Host), extra ...string) *Host {
	tb.Helper()
	if t, ok := tb.(testing.TB); ok {
		testenv.RequirePrivileges(t)
	}
	bin := Binary(tb)
	id := make([]byte, 3)
	rand.Read(id)
	prefix := "ebt" + hex.EncodeToString(id)
	h := &Host{tb: tb, Prefix: prefix, NetNS: "/run/netns/" + prefix + "-host", dir: tb.TempDir(), bin: bin, extra: extra}
	h.flags = []string{
		"--netns", h.NetNS,
		"--state-dir", filepath.Join(h.dir, "state"),
		"--bpffs", h.BPFFS(),
		"--etc-dir", filepath.Join(h.dir, "etc"),
	}
	h.Client = api.NewClient(h.Socket())
	if err := os.WriteFile(h.ResolvConf(), []byte("nameserver "+UpstreamDNS+"\nsearch test.example\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	// The plugin directory, and /run/docker, when nothing else lives
	// there once the last host of the process is gone: removed before,
	// they could go between another host's daemon making them and
	// listening there.
	plugins := filepath.Dir(h.DockerPlugin())
	sharePath(tb, filepath.Dir(plugins), false, plugins, filepath.Dir(plugins))
	tb.Cleanup(h.destroy)
	h.MustRun("ip", "netns", "add", filepath.Base(h.NetNS))
	h.MustRun("ip", "-n", filepath.Base(h.NetNS), "link", "set", "lo", "up")
	if setup != nil {
		setup(h)
	}
	return h
}

// UpstreamDNS is where the host's resolv.conf points: the outside
// namespace's address, where a test may run a DNS server (ServeDNS).
const UpstreamDNS = "10.99.0.2"

// ResolvConf is the host's resolv.conf as the daemon reads it, so no test
// ever forwards a query to the machine's own resolver.
func (h *Host) ResolvConf() string { return filepath.Join(h.dir, "resolv.conf") }

// Name returns a name unique to this host, for sandboxes and networks.
func (h *Host) Name(s string) string { return h.Prefix + "-" + s }

// DaemonFlags replaces the extra flags of the daemons started from now on.
func (h *Host) DaemonFlags(extra ...string) { h.extra = extra }

// Failpoints makes the daemons started from now on FailpointBinary's, with
// env (EBPFNET_FAILPOINTS=…, EBPFNET_FAILPOINTS_TRACE=…) beside the
// test's own environment.
func (h *Host) Failpoints(env ...string) { h.bin, h.env = FailpointBinary(h.tb), env }

// DaemonEnv replaces the environment (KEY=VALUE) the daemons started from
// now on have beside the test's own.
func (h *Host) DaemonEnv(env ...string) { h.env = env }

func (h *Host) daemonArgs() []string {
	return append(append([]string{"daemon", "--socket", h.Socket(), "--resolv-conf", h.ResolvConf(),
		"--docker-plugin", h.DockerPlugin()}, h.flags...), h.extra...)
}

// DockerPlugin is the socket of the daemon's Docker plugin, which Docker
// knows as driver and IPAM driver Prefix.
func (h *Host) DockerPlugin() string { return "/run/docker/plugins/" + h.Prefix + ".sock" }

// StartFails starts the daemon expecting it to refuse to start, and
// returns what it printed. The test fails if it serves instead.
func (h *Host) StartFails() string {
	h.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startWithin)
	defer cancel()
	out, err := exec.CommandContext(ctx, h.bin, h.daemonArgs()...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		h.tb.Fatalf("the daemon started, want it refused: %v\n%s", err, out)
	}
	return string(out)
}

// startWithin bounds a daemon's start, and a refusal to start.
const startWithin = time.Minute

// Start starts the daemon and waits until it answers.
func (h *Host) Start() {
	h.tb.Helper()
	cmd := exec.Command(h.bin, h.daemonArgs()...)
	cmd.Env = append(os.Environ(), h.env...)
	logf, err := os.OpenFile(filepath.Join(h.dir, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		h.tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		h.tb.Fatalf("start daemon: %v", err)
	}
	logf.Close()
	h.daemon, h.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(h.exited)
	// A daemon starts in a second or two alone, and much later beside
	// the kernel's verifier busy with other tests' daemons on two cores.
	deadline := time.Now().Add(startWithin)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := h.Client.Networks(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-h.exited:
			h.tb.Fatalf("daemon exited on start: %s", h.DaemonLog())
		default:
		}
		if time.Now().After(deadline) {
			h.tb.Fatalf("daemon did not answer within %s: %v\n%s", startWithin, err, h.DaemonLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the daemon with sig and waits for it.
func (h *Host) Stop(sig syscall.Signal) {
	if h.daemon == nil {
		return
	}
	h.daemon.Process.Signal(sig)
	select {
	case <-h.exited:
	case <-time.After(10 * time.Second):
		h.daemon.Process.Kill()
		<-h.exited
	}
	h.daemon = nil
}

// Exited is closed when the daemon started last has exited.
func (h *Host) Exited() <-chan struct{} { return h.exited }

// DaemonPID is the running daemon's process ID.
func (h *Host) DaemonPID() int { return h.daemon.Process.Pid }

// DaemonLog returns what the daemon has logged.
func (h *Host) DaemonLog() string {
	data, _ := os.ReadFile(filepath.Join(h.dir, "daemon.log"))
	return string(data)
}

func (h *Host) destroy() {
	h.Stop(syscall.SIGTERM)
	if h.tb.Failed() {
		h.tb.Logf("daemon log:\n%s", h.DaemonLog())
	}
	if out, err := exec.Command(h.bin, append([]string{"reset"}, h.flags...)...).CombinedOutput(); err != nil {
		h.tb.Errorf("reset: %v: %s", err, out)
	}
	exec.Command("ip", "netns", "del", filepath.Base(h.NetNS)).Run()
	// Anything a failed test left under this host's prefix.
	leftovers, _ := filepath.Glob("/run/netns/" + h.Prefix + "*")
	for _, p := range leftovers {
		exec.Command("ip", "netns", "del", filepath.Base(p)).Run()
	}
	os.RemoveAll(h.BPFFS())
	os.Remove(h.DockerPlugin()) // left by a daemon killed on purpose
}

// CLI runs ebpfnet against this host's daemon and returns its combined output.
func (h *Host) CLI(args ...string) (string, error) { return h.CLIWith(nil, args...) }

// CLIWith is CLI with env (KEY=VALUE) added to the command's environment:
// what a test would set with t.Setenv, which a parallel test cannot.
func (h *Host) CLIWith(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := h.Command(ctx, args...)
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}

// Command is the CLI with args, talking to this host's daemon, not
// started: for one that runs alongside (ebpfnet monitor).
func (h *Host) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = append(os.Environ(), "EBPFNET_SOCKET="+h.Socket())
	return cmd
}

// MustCLI is CLI that fails the test on error.
func (h *Host) MustCLI(args ...string) string {
	h.tb.Helper()
	out, err := h.CLI(args...)
	if err != nil {
		h.tb.Fatalf("ebpfnet %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// MustRun runs a system command and fails the test on error.
func (h *Host) MustRun(name string, args ...string) string {
	h.tb.Helper()
	return mustRun(h.tb, name, args...)
}

// mustRun runs a command and returns its output; the test fails with it
// when the command does.
func mustRun(tb TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// InHost runs a command in the host namespace.
func (h *Host) InHost(name string, args ...string) string {
	h.tb.Helper()
	return h.MustRun("ip", append([]string{"netns", "exec", filepath.Base(h.NetNS), name}, args...)...)
}

// Sandbox inspects a sandbox.
func (h *Host) Sandbox(name string) api.Sandbox {
	h.tb.Helper()
	var out []api.Sandbox
	if err := json.Unmarshal([]byte(h.MustCLI("sandbox", "inspect", name)), &out); err != nil || len(out) != 1 {
		h.tb.Fatalf("inspect sandbox %s: %v", name, err)
	}
	return out[0]
}

// Network inspects a network.
func (h *Host) Network(name string) api.Network {
	h.tb.Helper()
	n, err := h.Client.Network(context.Background(), name)
	if err != nil {
		h.tb.Fatalf("inspect network %s: %v", name, err)
	}
	return n
}

// IP is a sandbox's address on a network.
func (h *Host) IP(sandbox, network string) string {
	h.tb.Helper()
	ep, ok := h.Sandbox(sandbox).NetworkSettings.Networks[network]
	if !ok {
		h.tb.Fatalf("sandbox %s is not on network %s", sandbox, network)
	}
	return ep.IPAddress
}

// MAC is the hardware address of an interface of the host's namespace.
func (h *Host) MAC(ifname string) net.HardwareAddr {
	h.tb.Helper()
	var mac net.HardwareAddr
	err := namespace.Do(h.NetNS, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			mac = ifi.HardwareAddr
		}
		return err
	})
	if err != nil {
		h.tb.Fatalf("look up %s: %v", ifname, err)
	}
	return mac
}

// NS is the path of a sandbox's namespace.
func (h *Host) NS(sandbox string) string { return "/run/netns/" + sandbox }

// LinkNames are the names of the interfaces in the host's namespace
// (not their aliases, which may hold any text).
//
// Only ip's standard output is read: to name a veth peer's namespace ip
// asks the kernel about every entry of /run/netns, and says on its
// standard error when one is being removed meanwhile (by a test running
// alongside: "Error: Peer netns reference is invalid.").
func (h *Host) LinkNames() []string {
	h.tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(h.NetNS), "ip", "-o", "link")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		h.tb.Fatalf("ip -o link in %s: %v\n%s", h.NetNS, err, stderr.String())
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			names = append(names, name)
		}
	}
	return names
}

// Status reads the datapath status.
func (h *Host) Status() api.Status {
	h.tb.Helper()
	st, err := h.Client.Status(context.Background())
	if err != nil {
		h.tb.Fatal(err)
	}
	return st
}

// Counter is the packet count of a verdict, over every program.
func (h *Host) Counter(verdict string) uint64 {
	h.tb.Helper()
	var n uint64
	found := false
	for _, c := range h.Status().Counters {
		if c.Verdict == verdict {
			n += c.Packets
			found = true
		}
	}
	if !found {
		h.tb.Fatalf("no counter %q", verdict)
	}
	return n
}

// ProgramCounter is the packet count of one program's verdict.
func (h *Host) ProgramCounter(program, verdict string) uint64 {
	h.tb.Helper()
	for _, c := range h.Status().Counters {
		if c.Program == program && c.Verdict == verdict {
			return c.Packets
		}
	}
	h.tb.Fatalf("no counter %s/%s", program, verdict)
	return 0
}

// Ping sends one ICMP echo (ICMPv6 to an IPv6 address) from a sandbox
// with busybox ping.
func (h *Host) Ping(sandbox, dst string) error {
	family := "-4"
	if strings.Contains(dst, ":") {
		family = "-6"
	}
	out, err := h.CLI("exec", sandbox, "--", "busybox", "ping", family, "-c1", "-W1", dst)
	if err != nil {
		return fmt.Errorf("ping %s from %s: %v: %s", dst, sandbox, err, out)
	}
	return nil
}

// Outside is a namespace beyond the host's uplink, standing in for the
// rest of the network.
type Outside struct {
	NS      string // its namespace's path
	IP      string // its address
	HostIP  string // the host's address on the uplink
	IP6     string // its IPv6 address
	HostIP6 string // the host's IPv6 address on the uplink
}

// AddOutside connects a new namespace to the host through a veth uplink
// (10.99.0.1 and 2001:db8:99::1 on the host, 10.99.0.2 and 2001:db8:99::2
// outside) and routes the container address pools (IPv6's fd00::/8
// included) back through the host.
func (h *Host) AddOutside() Outside {
	h.tb.Helper()
	name := h.Prefix + "-out"
	host := filepath.Base(h.NetNS)
	h.MustRun("ip", "netns", "add", name)
	h.tb.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	h.MustRun("ip", "-n", host, "link", "add", "uplink0", "type", "veth", "peer", "name", "eth0", "netns", name)
	h.MustRun("ip", "-n", host, "addr", "add", "10.99.0.1/24", "dev", "uplink0")
	h.MustRun("ip", "-n", host, "addr", "add", "2001:db8:99::1/64", "dev", "uplink0", "nodad")
	h.MustRun("ip", "-n", host, "link", "set", "uplink0", "up")
	h.MustRun("ip", "-n", name, "addr", "add", "10.99.0.2/24", "dev", "eth0")
	h.MustRun("ip", "-n", name, "addr", "add", "2001:db8:99::2/64", "dev", "eth0", "nodad")
	h.MustRun("ip", "-n", name, "link", "set", "eth0", "up")
	h.MustRun("ip", "-n", name, "link", "set", "lo", "up")
	for _, pool := range []string{"172.16.0.0/12", "192.168.0.0/16"} {
		h.MustRun("ip", "-n", name, "route", "add", pool, "via", "10.99.0.1")
	}
	h.MustRun("ip", "-n", name, "route", "add", "fd00::/8", "via", "2001:db8:99::1")
	return Outside{NS: "/run/netns/" + name, IP: "10.99.0.2", HostIP: "10.99.0.1", IP6: "2001:db8:99::2", HostIP6: "2001:db8:99::1"}
}

// StartInSandbox starts a command in a sandbox with `ebpfnet exec` and
// leaves it running; the test's cleanup kills it.
func (h *Host) StartInSandbox(sandbox string, argv ...string) *exec.Cmd {
	h.tb.Helper()
	cmd := exec.Command(h.bin, append([]string{"exec", sandbox, "--"}, argv...)...)
	cmd.Env = append(os.Environ(), "EBPFNET_SOCKET="+h.Socket())
	// A group of its own: the command runs as the CLI's child, which a
	// kill of the CLI alone would leave running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		h.tb.Fatal(err)
	}
	h.tb.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	// Wait until the command runs inside the sandbox, not just the CLI.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if out, _ := exec.Command("ip", "netns", "pids", sandbox).Output(); len(bytes.TrimSpace(out)) > 0 {
			return cmd
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.tb.Fatalf("%v did not start in sandbox %s", argv, sandbox)
	return nil
}
