package testbed

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/namespace"
)

// Preparation makes a host namespace look like one kind of real host:
// its netfilter rules and sysctls, as the host's firewall or container
// runtime leaves them. Everything it does lives in the host namespace,
// which goes with the test.
type Preparation struct {
	Name string
	// Prepare runs on the host namespace before the daemon starts, as a
	// real host's firewall is there before ebpfnet is.
	Prepare func(h *Host)
	// Churn, when set, rewrites the host's ruleset the way its firewall
	// does on a reload, while a test's traffic runs. It returns an error
	// rather than failing the test, as it runs in a subtest of the one
	// that made the host.
	Churn func(h *Host) error
	// DropsForwarded says the host's policy drops what netfilter sees
	// forwarded, bridged frames included: where a datapath that left
	// delivery to the bridge would fail.
	DropsForwarded bool
}

// Preparations are the kinds of host every real-host scenario runs on;
// pristine, the empty namespace every other test uses, is the control.
var Preparations = []Preparation{
	{Name: "pristine", Prepare: func(*Host) {}},
	{Name: "docker", Prepare: prepareDocker, DropsForwarded: true},
	{Name: "ufw", Prepare: prepareUFW, DropsForwarded: true},
	{Name: "nftables", Prepare: prepareNftables, Churn: churnNftables, DropsForwarded: true},
	{Name: "strict", Prepare: prepareStrict},
}

// bridgeNetfilter sends bridged frames of both families through the
// host's iptables. br_netfilter is built into this kernel and its
// sysctls are per namespace (1 in a new one); they are set all the same,
// so a preparation does not rest on a kernel's default.
func bridgeNetfilter(h *Host) {
	h.InHost("sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1")
}

// dockerRules is what Docker 20.10 writes for its default bridge docker0
// (172.17.0.0/16) on a host with iptables, written out by hand from a
// real host's iptables-save. docker0 itself is not created: the rules are
// what matter to another bridge's traffic.
const dockerRules = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
` + dockerFilter

// dockerFilter is Docker's filter table, the same for both families
// (Docker writes it for IPv6 with --ip6tables; the FORWARD policy DROP is
// what a host with Docker's IPv6 forwarding has either way).
const dockerFilter = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
`

// prepareDocker is a host where dockerd runs: br_netfilter on, FORWARD
// dropped but for Docker's own bridge, Docker's chains and masquerade.
func prepareDocker(h *Host) {
	bridgeNetfilter(h)
	h.inHostWithInput(dockerRules, "iptables-restore")
	h.inHostWithInput(dockerFilter, "ip6tables-restore")
}

// prepareUFW loads the ruleset Debian's ufw loads when enabled with its
// defaults (deny incoming, deny routed), from a copy of the machine's ufw
// configuration, so the machine's own ufw is never touched: ufw-init
// reads everything but its ENABLED check from --datadir. `ufw enable` and
// even `ufw --dry-run enable` write /etc/ufw, so neither is used.
func prepareUFW(h *Host) {
	bridgeNetfilter(h)
	data := filepath.Join(h.dir, "ufw")
	copyTree(h.tb, "/etc/ufw", filepath.Join(data, "etc/ufw"))
	copyTree(h.tb, "/etc/default/ufw", filepath.Join(data, "etc/default/ufw"))
	conf := filepath.Join(data, "etc/ufw/ufw.conf")
	setVar(h.tb, conf, "ENABLED", "yes")
	// Its sysctls are all per namespace; through the copy, ufw-init sets
	// them in the host namespace alone.
	setVar(h.tb, filepath.Join(data, "etc/default/ufw"), "IPT_SYSCTL", filepath.Join(data, "etc/ufw/sysctl.conf"))
	h.InHost("/lib/ufw/ufw-init", "--datadir", data, "start")
	if rules := h.InHost("iptables", "-S", "FORWARD"); !strings.Contains(rules, "-P FORWARD DROP") || !strings.Contains(rules, "ufw-before-forward") {
		h.tb.Fatalf("ufw-init left a FORWARD chain unlike ufw's:\n%s", rules)
	}
}

// nftablesRules is a host's own nftables.conf with routed traffic denied,
// as on a hardened host or one whose firewalld uses nftables.
const nftablesRules = `table inet filter {
	chain input { type filter hook input priority filter; policy accept; }
	chain forward { type filter hook forward priority filter; policy drop; }
	chain output { type filter hook output priority filter; policy accept; }
}
`

// emptyFilter is what iptables-restore of an empty filter table loads: a
// firewall's reload that starts from nothing.
const emptyFilter = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
`

func prepareNftables(h *Host) {
	bridgeNetfilter(h)
	h.inHostWithInput(nftablesRules, "nft", "-f", "-")
}

// churnNftables is a reload of the host's firewall: everything flushed,
// an empty iptables filter table loaded (as iptables-nft users and
// firewalld do), then the host's own ruleset again, so the host is as
// before once it is over.
func churnNftables(h *Host) error {
	for _, step := range []struct {
		input string
		argv  []string
	}{
		{"", []string{"nft", "flush", "ruleset"}},
		{emptyFilter, []string{"iptables-restore"}},
		{nftablesRules, []string{"nft", "-f", "-"}},
	} {
		if err := h.runInHost(step.input, step.argv[0], step.argv[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// conntrackMaxPath is the sysctl file of the netfilter conntrack table's
// size.
const conntrackMaxPath = "/proc/sys/net/netfilter/nf_conntrack_max"

// prepareStrict is a hardened host: strict reverse-path filtering on
// every interface (default covers those created later), and netfilter's
// conntrack in use (a hardening rule needs it) with a tiny table where
// the kernel lets a namespace have its own size.
func prepareStrict(h *Host) {
	h.InHost("sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf.default.rp_filter=1")
	h.InHost("iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
	h.InHost("ip6tables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
	// nf_conntrack_max is one value for the whole machine on kernels
	// that make it read-only outside the initial namespace (6.18 does):
	// there, a host's own full table cannot be had without touching the
	// machine, and the tests check instead that ebpfnet's flows never
	// enter the namespace's table (its count stays flat).
	if conntrackMaxPerNamespace(h) {
		h.InHost("sysctl", "-q", "-w", "net.netfilter.nf_conntrack_max=64")
	} else {
		h.tb.Logf("strict: %s is read-only in a namespace on this kernel (global); left as it is", conntrackMaxPath)
	}
}

// conntrackMaxPerNamespace reports whether the host namespace may set its
// own nf_conntrack_max.
func conntrackMaxPerNamespace(h *Host) bool {
	h.tb.Helper()
	out := strings.TrimSpace(h.InHost("stat", "-c", "%a", conntrackMaxPath))
	mode, err := strconv.ParseUint(out, 8, 32)
	if err != nil {
		h.tb.Fatalf("mode of %s: %q: %v", conntrackMaxPath, out, err)
	}
	return mode&0o200 != 0
}

// ConntrackCount is how many flows netfilter's conntrack tracks in the
// host namespace (the count is the namespace's own).
func (h *Host) ConntrackCount() (int, error) {
	var data []byte
	err := namespace.Do(h.NetNS, func() (err error) {
		data, err = os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
		return err
	})
	var n int
	if err == nil {
		_, err = fmt.Sscan(string(data), &n)
	}
	if err != nil {
		return 0, fmt.Errorf("read nf_conntrack_count of %s: %w", h.NetNS, err)
	}
	return n, nil
}

// inHostWithInput runs a command in the host namespace with input on its
// standard input, and fails the test when it fails.
func (h *Host) inHostWithInput(input, name string, args ...string) {
	h.tb.Helper()
	if err := h.runInHost(input, name, args...); err != nil {
		h.tb.Fatal(err)
	}
}

// runInHost runs a command in the host namespace with input on its
// standard input.
func (h *Host) runInHost(input, name string, args ...string) error {
	cmd := exec.Command("ip", append([]string{"netns", "exec", filepath.Base(h.NetNS), name}, args...)...)
	cmd.Stdin = strings.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s in %s: %w\n%s", name, strings.Join(args, " "), h.NetNS, err, out)
	}
	return nil
}

// copyTree copies a file, or a directory and everything in it, keeping
// permissions (ufw-init runs before.init and after.init only when they
// are executable).
func copyTree(tb TB, src, dst string) {
	tb.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(to, info.Mode().Perm())
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, data, info.Mode().Perm())
	})
	if err != nil {
		tb.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}

// setVar sets a shell variable assignment (NAME=value) in a config file
// that has one.
func setVar(tb TB, path, name, value string) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `=.*$`)
	if !re.Match(data) {
		tb.Fatalf("%s has no %s= to set", path, name)
	}
	if err := os.WriteFile(path, re.ReplaceAllLiteral(data, []byte(name+"="+value)), 0o644); err != nil {
		tb.Fatal(err)
	}
}
