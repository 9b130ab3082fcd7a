package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// podman runs Debian's podman (4.3) with its CNI backend, state of its own
// and the network configurations of a cni, inside a host's namespace (so
// that the plugins it runs build there).
type podman struct {
	t     *testing.T
	netns string
	args  []string
	env   []string
}

func newPodman(t *testing.T, h *testbed.Host, c *testbed.CNI) *podman {
	t.Helper()
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("needs podman")
	}
	dir, err := os.MkdirTemp("", "ebpfnet-podman-")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `[network]
network_backend = "cni"
cni_plugin_dirs = [%q, %q]
network_config_dir = %q
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
`, c.Path, testbed.ReferencePlugins, c.Dir), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &podman{t: t, netns: h.NetNS, env: []string{"CONTAINERS_CONF=" + conf},
		args: []string{"--root", dir + "/root", "--runroot", dir + "/run", "--storage-driver", "vfs", "--network-config-dir", c.Dir,
			"--tmpdir", dir + "/tmp"}}
	t.Cleanup(func() {
		p.run("rm", "-af", "-t", "0")
		exec.Command("umount", "-R", dir+"/run").Run()
		os.RemoveAll(dir)
	})
	return p
}

// run runs podman in the host's namespace.
func (p *podman) run(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + p.netns, "podman"}, append(p.args, args...)...)...)
	cmd.Env = append(os.Environ(), p.env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (p *podman) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := p.run(args...)
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestPodman runs containers with Podman's CNI backend: on an ebpfnet
// network, then on Podman's kind of bridge network with ebpfnet chained in
// place of portmap. Either way -p publishes through the datapath, the
// client's address is kept, and podman rm -f leaves nothing of ebpfnet's.
func TestPodman(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	c := newCNI(t)
	c.Spec = "1.0.0" // what podman 4.3's CNI library and Debian's plugins speak
	h.MustCLI("network", "create", "--subnet", "10.93.0.0/24", h.Name("pnet"))
	c.Conflist("ebnet", map[string]any{"type": "ebpfnet", "network": h.Name("pnet"), "socket": h.Socket(),
		"capabilities": map[string]bool{"portMappings": true}})
	c.Conflist("chain", map[string]any{"type": "bridge", "bridge": h.Prefix + "pb", "isGateway": true, "ipMasq": true, "hairpinMode": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": t.TempDir(), "ranges": [][]map[string]string{{{"subnet": "10.92.0.0/24"}}},
			"routes": []map[string]string{{"dst": "0.0.0.0/0"}}}},
		map[string]any{"type": "ebpfnet", "socket": h.Socket(), "capabilities": map[string]bool{"portMappings": true}})
	pod := newPodman(t, h, c)
	rootfs := testbed.BusyboxRootfs(t)

	for _, tc := range []struct{ network, port string }{{"ebnet", "8080"}, {"chain", "8081"}} {
		t.Run(tc.network, func(t *testing.T) {
			for i, name := range []string{"a", "b"} {
				// Limits of its own: those podman would set exceed this
				// machine's hard limits.
				args := []string{"run", "-d", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=512:512", "--name", tc.network + name, "--network", tc.network, "--rootfs"}
				if i == 0 {
					args = append(args, "-p", tc.port+":7777")
				}
				pod.must(t, append(args, rootfs, "/bin/sleep", "600")...) // --rootfs: the "image" is a directory
			}
			key := pod.must(t, "inspect", "-f", "{{.NetworkSettings.SandboxKey}}", tc.network+"a")
			testbed.Serve(t, key)
			if peer := peerOf(t, out.NS, "tcp4", hostIP+":"+tc.port); peer.Addr().String() != out.IP {
				t.Errorf("the container saw %s, want the client's own address %s", peer, out.IP)
			}
			mustWork(t, "host to 127.0.0.1", testbed.TCPTo(h.NetNS, "127.0.0.1:"+tc.port))
			peerIP := pod.must(t, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", tc.network+"a")
			bkey := pod.must(t, "inspect", "-f", "{{.NetworkSettings.SandboxKey}}", tc.network+"b")
			mustWork(t, "the neighbour", testbed.TCP(bkey, peerIP))
			assertNoRuleNorProxy(t, h, tc.port)

			pod.must(t, "rm", "-f", "-t", "0", tc.network+"a", tc.network+"b")
			assertNothingLeft(t, h, "after podman rm -f")
			mustFail(t, "outside after podman rm", testbed.TCPTo(out.NS, hostIP+":"+tc.port))
		})
	}
}
