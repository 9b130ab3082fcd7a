package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// With --socket-group, as dockerd's -G, the API socket is the group's,
// read and written by its members: a user outside the group is refused,
// a member is served.
func TestSocketGroup(t *testing.T) {
	t.Parallel()
	const group, nobody = "4242", "65534"
	h := testbed.NewHost(t, "--socket-group", group)
	sock := h.Socket()
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Gid != 4242 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("the socket is group %d, mode %o; want group %s, mode 660", st.Gid, fi.Mode().Perm(), group)
	}
	// Let other users reach the socket's directory, and run the CLI.
	for dir := filepath.Dir(sock); dir != filepath.Dir(filepath.Dir(filepath.Dir(sock))); dir = filepath.Dir(dir) {
		must(t, os.Chmod(dir, 0o711))
	}
	bin := filepath.Join(t.TempDir(), "ebpfnet")
	data, err := os.ReadFile(testbed.Binary(t))
	must(t, err)
	must(t, os.WriteFile(bin, data, 0o755))
	must(t, os.Chmod(filepath.Dir(bin), 0o755))
	as := func(groups string) (string, error) {
		args := []string{"--reuid=" + nobody, "--regid=" + nobody, "--clear-groups"}
		if groups != "" {
			args = []string{"--reuid=" + nobody, "--regid=" + nobody, "--groups=" + groups}
		}
		out, err := exec.Command("setpriv", append(args, bin, "--socket", sock, "network", "ls")...).CombinedOutput()
		return string(out), err
	}
	if out, err := as(""); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("a user outside group %s: %v %s, want refused", group, err, out)
	}
	if out, err := as(group); err != nil || !strings.Contains(out, "bridge") {
		t.Errorf("a member of group %s: %v %s, want served", group, err, out)
	}
	h.DaemonFlags("--socket-group", "no-such-group-here")
	if msg := h.StartFails(); !strings.Contains(msg, `invalid --socket-group "no-such-group-here"`) {
		t.Errorf("a daemon with an unknown group: %s", msg)
	}
}
