package testbed

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// DockerCLI is Debian's docker client, of the same release as its dockerd.
const DockerCLI = "/usr/bin/docker"

// Docker is a real dockerd with a containerd of its own, both with state
// of their own under a temporary directory, dockerd inside a host
// namespace (so its bridges, rules and proxies live there).
type Docker struct {
	tb    TB
	dir   string
	netns string
	flags []string
	Host  string // what -H takes: unix://DIR/docker.sock
	// Containerd is the socket of dockerd's containerd, which other
	// clients (nerdctl) share, in namespaces of their own.
	Containerd string
	cmd        *exec.Cmd
	exited     chan struct{}
}

// DockerInstalled reports whether dockerd, containerd and Debian's docker
// client are there.
func DockerInstalled() bool {
	for _, name := range []string{"dockerd", "containerd", DockerCLI} {
		if _, err := exec.LookPath(name); err != nil {
			return false
		}
	}
	return true
}

// StartDocker starts containerd and then dockerd in the namespace at netns;
// flags go to dockerd. Both stop when the test ends.
func StartDocker(tb TB, netns string, flags ...string) *Docker {
	tb.Helper()
	dir, err := os.MkdirTemp("", "ebpfnet-docker-")
	if err != nil {
		tb.Fatal(err)
	}
	// Removed last: after the daemons stop and their mounts are gone.
	tb.Cleanup(func() { unmountUnder(dir); os.RemoveAll(dir) })
	// The few paths the daemons create whatever their flags say, removed
	// when the last dockerd of the process is gone, if none was there.
	for _, p := range []string{"/etc/docker/key.json", "/run/docker", "/run/containerd"} {
		sharePath(tb, p, true)
	}
	ctrd := newContainerd(tb, dir, "", "")
	ctrd.start()
	tb.Cleanup(ctrd.stop)

	d := &Docker{tb: tb, dir: dir, netns: netns, Host: "unix://" + filepath.Join(dir, "docker.sock"), Containerd: ctrd.socket,
		flags: append([]string{"--containerd", ctrd.socket, "--storage-driver", "vfs", "--log-level", "warn"}, flags...)}
	d.Start()
	tb.Cleanup(func() { d.Stop(syscall.SIGTERM) })
	return d
}

// Start starts dockerd (again) and waits until it answers.
func (d *Docker) Start() {
	d.tb.Helper()
	// nsenter, not ip netns exec: that remounts /sys and hides the cgroup
	// hierarchies dockerd needs.
	argv := append([]string{"nsenter", "--net=" + d.netns, "dockerd",
		"--data-root", d.dir + "/data", "--exec-root", d.dir + "/exec", "--pidfile", d.dir + "/dockerd.pid",
		"-H", d.Host}, d.flags...)
	d.cmd, d.exited = startLogged(d.tb, d.dir, "dockerd", argv...)
	waitFor(d.tb, d.dir, "dockerd", d.exited, func() bool { return exec.Command(DockerCLI, "-H", d.Host, "version").Run() == nil })
}

// Stop stops dockerd with sig (SIGKILL after 20 s); its containers keep
// running in containerd until it starts again.
func (d *Docker) Stop(sig syscall.Signal) {
	if d.cmd != nil {
		d.cmd.Process.Signal(sig)
		stopProcess(d.cmd, d.exited)
		d.cmd = nil
	}
}

// PID is the running dockerd's process ID (nsenter execs it).
func (d *Docker) PID() int { return d.cmd.Process.Pid }

// CLI runs the docker client against this dockerd.
func (d *Docker) CLI(args ...string) (string, error) {
	out, err := exec.Command(DockerCLI, append([]string{"-H", d.Host}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// MustCLI is CLI that fails the test on an error.
func (d *Docker) MustCLI(args ...string) string {
	d.tb.Helper()
	out, err := d.CLI(args...)
	if err != nil {
		d.tb.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Log is dockerd's output so far.
func (d *Docker) Log() string {
	out, _ := os.ReadFile(filepath.Join(d.dir, "dockerd.log"))
	return string(out)
}

// ImportImage imports rootfs as image name.
func (d *Docker) ImportImage(rootfs, name string) {
	d.tb.Helper()
	d.MustCLI("import", tarDir(d.tb, rootfs), name)
}

// tarDir makes DIR.tar of what is in dir.
func tarDir(tb TB, dir string) string {
	tb.Helper()
	tar := dir + ".tar"
	if out, err := exec.Command("tar", "-C", dir, "-cf", tar, ".").CombinedOutput(); err != nil {
		tb.Fatalf("tar %s: %v\n%s", dir, err, out)
	}
	return tar
}

// BusyboxRootfs makes a root file system of Debian's static busybox, its
// applets linked in /bin, under a temporary directory.
func BusyboxRootfs(tb TB) string {
	tb.Helper()
	rootfs := filepath.Join(tb.TempDir(), "rootfs")
	CopyWithLibs(tb, rootfs, "/bin/busybox", "/bin/busybox")
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		tb.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			os.Symlink("busybox", filepath.Join(rootfs, "bin", applet))
		}
	}
	for _, dir := range []string{"tmp", "etc", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(rootfs, dir), 0o1777); err != nil {
			tb.Fatal(err)
		}
	}
	return rootfs
}

// CopyWithLibs copies the program at src to rootfs/dst, and the shared
// libraries it links (as ldd lists them) to the same paths under rootfs.
func CopyWithLibs(tb TB, rootfs, src, dst string) {
	tb.Helper()
	files := map[string]string{src: dst}
	out, _ := exec.Command("ldd", src).Output() // a static program has none
	for _, field := range strings.Fields(string(out)) {
		if strings.HasPrefix(field, "/") {
			files[field] = field
		}
	}
	for from, to := range files {
		data, err := os.ReadFile(from)
		if err == nil {
			err = os.MkdirAll(filepath.Dir(rootfs+to), 0o755)
		}
		if err == nil {
			err = os.WriteFile(rootfs+to, data, 0o755)
		}
		if err != nil {
			tb.Fatalf("copy %s into the image: %v", from, err)
		}
	}
}

// containerd is a containerd whose root, state, sockets and configuration
// are under dir, run in the namespace at netns ("": the caller's own).
type containerd struct {
	tb     TB
	dir    string
	netns  string
	socket string
	cmd    *exec.Cmd
	exited chan struct{}
}

// newContainerd writes the configuration of a containerd of dir's own:
// its CRI plugin off when cri is "", else on with cri's TOML tables.
func newContainerd(tb TB, dir, netns, cri string) *containerd {
	tb.Helper()
	c := &containerd{tb: tb, dir: dir, netns: netns, socket: filepath.Join(dir, "containerd.sock")}
	disabled := `["io.containerd.grpc.v1.cri"]`
	if cri != "" {
		disabled = "[]"
	}
	if err := os.WriteFile(c.config(), fmt.Appendf(nil, `version = 2
root = %q
state = %q
disabled_plugins = %s
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
%s`, dir+"/containerd", dir+"/containerd-state", disabled, c.socket, c.socket+".ttrpc", dir+"/opt", cri), 0o644); err != nil {
		tb.Fatalf("write containerd config: %v", err)
	}
	return c
}

func (c *containerd) config() string { return filepath.Join(c.dir, "containerd.toml") }

// start starts containerd (again) and waits until it answers.
func (c *containerd) start() {
	c.tb.Helper()
	argv := []string{"containerd", "--config", c.config()}
	if c.netns != "" {
		// nsenter, not ip netns exec, whose private mount namespace would
		// hide the mounts containerd makes from everyone else.
		argv = append([]string{"nsenter", "--net=" + c.netns}, argv...)
	}
	c.cmd, c.exited = startLogged(c.tb, c.dir, "containerd", argv...)
	waitFor(c.tb, c.dir, "containerd", c.exited, func() bool {
		return exec.Command("ctr", "--address", c.socket, "version").Run() == nil
	})
}

// stop stops containerd; the tasks it runs go on, each under its shim.
func (c *containerd) stop() {
	if c.cmd != nil {
		stopProcess(c.cmd, c.exited)
		c.cmd = nil
	}
}

// startLogged starts a long-running program, its output in dir/NAME.log.
// The returned channel is closed when it exits.
func startLogged(tb TB, dir, name string, argv ...string) (*exec.Cmd, chan struct{}) {
	tb.Helper()
	out, err := os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		tb.Fatalf("create %s log: %v", name, err)
	}
	defer out.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	return cmd, done
}

// stopProcess sends SIGTERM and waits, SIGKILL after 20 s.
func stopProcess(cmd *exec.Cmd, exited chan struct{}) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// waitFor polls ready for up to 30 s, failing with the program's log when
// it exits first or never gets ready.
func waitFor(tb TB, dir, name string, exited <-chan struct{}, ready func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if ready() {
			return
		}
		select {
		case <-exited:
			deadline = time.Time{}
		default:
		}
	}
	out, _ := os.ReadFile(filepath.Join(dir, name+".log"))
	tb.Fatalf("%s did not start:\n%s", name, out)
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if fields := strings.Fields(sc.Text()); len(fields) > 1 && strings.HasPrefix(fields[1], dir+"/") {
			points = append(points, fields[1])
		}
	}
	slices.Sort(points)
	for _, p := range slices.Backward(points) {
		syscall.Unmount(p, syscall.MNT_DETACH)
	}
}
