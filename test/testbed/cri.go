package testbed

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// Crictl is crictl (CRICtl), built unless it was.
func Crictl(tb TB) string {
	tb.Helper()
	return CRICtl.MustBuild(tb)
}

// The images every CRI has: the pod sandbox's ("pause") and the
// containers', both busybox, which no registry needs to serve.
const (
	PauseImage   = "ebpfnet.test/pause:1"
	BusyboxImage = "ebpfnet.test/busybox:1"
)

// CRI is Kubernetes' way to a CNI plugin: containerd with its CRI plugin,
// run in a host namespace with root, state, sockets and configuration of
// its own, its pod network the first configuration list of a CNI's
// directory; crictl drives it as the kubelet would, from the host
// namespace too.
type CRI struct {
	tb     TB
	dir    string
	netns  string
	ctrd   *containerd
	crictl string
	// cgroup is every pod's cgroup parent: what cleanup kills whatever
	// state containerd was left in.
	cgroup string
}

// Pod is a pod sandbox as crictl runp made it.
type Pod struct {
	Name    string
	Attempt int
	ID      string
	NetNS   string // its network namespace's path
	IP      string // its address on the pod network
	IP6     string // its IPv6 address, on a dual-stack network
	PID     int    // its sandbox ("pause") process
}

// StartCRI starts containerd with its CRI plugin in the namespace at netns,
// CNI's configurations its pod network and CNI's plugins, with the
// reference ones, its plugins; it imports the images. Everything it and its
// pods make goes when the test ends, also when it fails.
func StartCRI(tb TB, netns string, cni *CNI) *CRI {
	tb.Helper()
	crictl := Crictl(tb)
	dir, err := os.MkdirTemp("", "ebpfnet-cri-") // short: socket paths live under it
	if err != nil {
		tb.Fatal(err)
	}
	// Removed last: after containerd, its shims and pods are gone.
	tb.Cleanup(func() { unmountUnder(dir); os.RemoveAll(dir) })
	// Where the shims put their sockets whatever the configuration says.
	sharePath(tb, "/run/containerd", true)
	r := &CRI{tb: tb, dir: dir, netns: netns, crictl: crictl, cgroup: "/" + testenv.Prefix("ebpfnet-cri-")}
	// Namespaces under its state directory, not /run/netns, where other
	// tests' runtimes keep theirs, and runc's state under dir too.
	// AppArmor is off on this kernel, and runc fails to start a pod with
	// containerd's default OOM score.
	r.ctrd = newContainerd(tb, dir, netns, fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, PauseImage, filepath.Join(dir, "runc"), cni.PluginDir(), cni.Dir))
	if err := os.WriteFile(r.crictlConfig(), fmt.Appendf(nil, "runtime-endpoint: unix://%s\nimage-endpoint: unix://%[1]s\ntimeout: 60\n",
		r.ctrd.socket), 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.destroy)
	r.Start()
	r.importImages()
	return r
}

func (r *CRI) crictlConfig() string { return filepath.Join(r.dir, "crictl.yaml") }

// importImages imports a busybox root file system as PauseImage and
// BusyboxImage: a docker-archive, as `docker save` writes one.
func (r *CRI) importImages() {
	r.tb.Helper()
	image := filepath.Join(r.dir, "image")
	if err := os.MkdirAll(image, 0o755); err != nil {
		r.tb.Fatal(err)
	}
	layer := tarDir(r.tb, BusyboxRootfs(r.tb))
	data, err := os.ReadFile(layer)
	if err == nil {
		err = os.WriteFile(filepath.Join(image, "layer.tar"), data, 0o644)
	}
	if err != nil {
		r.tb.Fatal(err)
	}
	sum := sha256.Sum256(data)
	config, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/bin"}, "Cmd": []string{"sleep", "2147483647"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(sum[:])}}})
	manifest, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{PauseImage, BusyboxImage}, "Layers": []string{"layer.tar"}}})
	for name, data := range map[string][]byte{"config.json": config, "manifest.json": manifest} {
		if err := os.WriteFile(filepath.Join(image, name), data, 0o644); err != nil {
			r.tb.Fatal(err)
		}
	}
	mustRun(r.tb, "ctr", "--address", r.ctrd.socket, "--namespace", "k8s.io", "images", "import", "--snapshotter", "native", tarDir(r.tb, image))
}

// Crictl runs crictl in the host namespace, as the kubelet runs there (and
// exec's streams come from containerd's server on its loopback).
func (r *CRI) Crictl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"--net=" + r.netns, r.crictl, "--config", r.crictlConfig()}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// MustCrictl is Crictl that fails the test on an error.
func (r *CRI) MustCrictl(args ...string) string {
	r.tb.Helper()
	out, err := r.Crictl(args...)
	if err != nil {
		r.tb.Fatalf("crictl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// RunPod runs a pod sandbox with `crictl runp` and the hostPorts of ports,
// written as PortMappings takes them ([[HOSTIP]:]HOST:CONTAINER/PROTO).
func (r *CRI) RunPod(name string, ports ...string) Pod {
	r.tb.Helper()
	return r.RunPodAttempt(name, 0, ports...)
}

// RunPodAttempt is RunPod for the attempt-th sandbox of a pod: the
// kubelet makes the next when one dies, before it removes the dead one.
func (r *CRI) RunPodAttempt(name string, attempt int, ports ...string) Pod {
	r.tb.Helper()
	id, err := r.tryRunPod(name, attempt, ports)
	if err != nil {
		r.tb.Fatal(err)
	}
	return r.Pod(id)
}

// TryRunPod is RunPod returning the error, with the pod's ID only.
func (r *CRI) TryRunPod(name string, ports ...string) (string, error) {
	return r.tryRunPod(name, 0, ports)
}

func (r *CRI) tryRunPod(name string, attempt int, ports []string) (string, error) {
	config, err := r.podConfig(name, attempt, ports)
	if err != nil {
		return "", err
	}
	out, err := r.Crictl("runp", config)
	if err != nil {
		return "", fmt.Errorf("crictl runp %s: %v\n%s", name, err, out)
	}
	lines := strings.Split(out, "\n")
	return lines[len(lines)-1], nil // the ID, after any warning
}

// podConfig writes the kubelet's PodSandboxConfig for a pod of the
// default namespace, in the CRI's cgroup.
func (r *CRI) podConfig(name string, attempt int, ports []string) (string, error) {
	var mappings []map[string]any
	for _, s := range ports {
		pm := parsePortMapping(s)
		protocol := map[string]int{"tcp": 0, "udp": 1, "sctp": 2}[pm.proto]
		mappings = append(mappings, map[string]any{"protocol": protocol, "container_port": pm.container, "host_port": pm.host, "host_ip": pm.hostIP})
	}
	config, _ := json.Marshal(map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid", "attempt": attempt},
		"hostname":      name,
		"port_mappings": mappings,
		"linux":         map[string]any{"cgroup_parent": r.cgroup},
	})
	path := r.podConfigPath(name, attempt)
	return path, os.WriteFile(path, config, 0o644)
}

func (r *CRI) podConfigPath(name string, attempt int) string {
	return filepath.Join(r.dir, fmt.Sprintf("pod-%s-%d.json", name, attempt))
}

// Pod inspects a pod sandbox.
func (r *CRI) Pod(id string) Pod {
	r.tb.Helper()
	var inspect struct {
		Status struct {
			Metadata struct {
				Name    string
				Attempt int
			}
			Network struct {
				IP            string
				AdditionalIPs []struct{ IP string }
			}
		}
		Info struct {
			PID         int
			RuntimeSpec struct {
				Linux struct {
					Namespaces []struct{ Type, Path string }
				}
			}
		}
	}
	out := r.MustCrictl("inspectp", id)
	if err := json.Unmarshal([]byte(out), &inspect); err != nil {
		r.tb.Fatalf("crictl inspectp %s: %v\n%s", id, err, out)
	}
	p := Pod{Name: inspect.Status.Metadata.Name, Attempt: inspect.Status.Metadata.Attempt, ID: id, IP: inspect.Status.Network.IP, PID: inspect.Info.PID}
	for _, ip := range inspect.Status.Network.AdditionalIPs {
		if strings.Contains(ip.IP, ":") {
			p.IP6 = ip.IP
		}
	}
	for _, ns := range inspect.Info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			p.NetNS = ns.Path
		}
	}
	if p.NetNS == "" {
		r.tb.Fatalf("pod %s has no network namespace:\n%s", id, out)
	}
	return p
}

// PodState is a pod's state as crictl pods says it: SANDBOX_READY or
// SANDBOX_NOTREADY, "" for a pod containerd does not know.
func (r *CRI) PodState(id string) string {
	r.tb.Helper()
	var pods struct{ Items []struct{ ID, State string } }
	out := r.MustCrictl("pods", "-o", "json")
	if err := json.Unmarshal([]byte(out), &pods); err != nil {
		r.tb.Fatalf("crictl pods: %v\n%s", err, out)
	}
	for _, p := range pods.Items {
		if p.ID == id {
			return p.State
		}
	}
	return ""
}

// StartContainer creates and starts a container of BusyboxImage running
// argv in a pod, as the kubelet does (crictl create, then start), and
// returns its ID.
func (r *CRI) StartContainer(p Pod, name string, argv ...string) string {
	r.tb.Helper()
	config, _ := json.Marshal(map[string]any{"metadata": map[string]any{"name": name},
		"image": map[string]any{"image": BusyboxImage}, "command": argv})
	path := filepath.Join(r.dir, fmt.Sprintf("container-%s-%d-%s.json", p.Name, p.Attempt, name))
	if err := os.WriteFile(path, config, 0o644); err != nil {
		r.tb.Fatal(err)
	}
	id := r.MustCrictl("create", p.ID, path, r.podConfigPath(p.Name, p.Attempt))
	r.MustCrictl("start", id)
	return id
}

// RemovePod stops and removes a pod as the kubelet does: crictl stopp,
// then rmp, each asked again for a few seconds as the kubelet asks again:
// containerd answers a stop with an error while the shim of a pod killed
// under it goes ("ttrpc: closed").
func (r *CRI) RemovePod(id string) error {
	for _, verb := range []string{"stopp", "rmp"} {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			out, err := r.Crictl(verb, id)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("crictl %s %s: %v\n%s", verb, id, err, out)
			}
		}
	}
	return nil
}

// InParallel runs do(0) … do(n-1), workers at a time, as a kubelet
// starts or stops pods, and joins their errors.
func InParallel(workers, n int, do func(i int) error) error {
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				errs[i] = do(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return errors.Join(errs...)
}

// Stop stops containerd; pods and containers go on running under their
// shims.
func (r *CRI) Stop() { r.ctrd.stop() }

// Start starts containerd (again) and waits until its CRI plugin
// answers, which it does after the rest of containerd.
func (r *CRI) Start() {
	r.tb.Helper()
	r.ctrd.start()
	waitFor(r.tb, r.dir, "containerd", r.ctrd.exited, func() bool { _, err := r.Crictl("version"); return err == nil })
}

// Log is containerd's output so far.
func (r *CRI) Log() string {
	out, _ := os.ReadFile(filepath.Join(r.dir, "containerd.log"))
	return string(out)
}

// destroy removes every pod through containerd, as a kubelet draining
// the node would, then stops containerd, and then kills what is left of
// the processes it started, whatever state a failure left them in.
func (r *CRI) destroy() {
	if r.tb.Failed() {
		r.tb.Logf("containerd log:\n%s", r.Log())
	}
	if r.ctrd.cmd != nil {
		if out, err := r.Crictl("rmp", "--force", "--all"); err != nil {
			r.tb.Errorf("remove the pods: %v\n%s", err, out)
		}
	}
	r.ctrd.stop()
	// The shims outlive containerd; each names containerd's socket.
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil &&
			strings.Contains(string(cmdline), "\x00-address\x00"+r.ctrd.socket+"\x00") {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// A shim killed leaves its own socket where every shim has it, named
	// in its task's directory.
	addresses, _ := filepath.Glob(filepath.Join(r.dir, "containerd-state", "io.containerd.runtime.v2.task", "*", "*", "address"))
	for _, a := range addresses {
		if data, err := os.ReadFile(a); err == nil {
			os.Remove(strings.TrimPrefix(strings.TrimSpace(string(data)), "unix://"))
		}
	}
	r.removeCgroups()
}

// removeCgroups kills the processes of the pods' cgroup in every
// hierarchy and removes its directories, deepest first.
func (r *CRI) removeCgroups() {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + r.cgroup)
	if _, err := os.Stat("/sys/fs/cgroup" + r.cgroup); err == nil {
		roots = append(roots, "/sys/fs/cgroup"+r.cgroup) // cgroup v2 alone
	}
	var dirs []string
	for _, root := range roots {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
	}
	for _, dir := range dirs {
		procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(procs)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
	// A killed process leaves its cgroup when it has exited.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		left := 0
		for _, dir := range dirs {
			if err := syscall.Rmdir(dir); err != nil && !os.IsNotExist(err) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.tb.Errorf("%d cgroups of the pods are left under %s", left, r.cgroup)
			return
		}
	}
}
