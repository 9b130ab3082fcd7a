package hostsettings

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// Reader reads the settings of the namespace its calls run in.
type Reader struct {
	// Proc is where procfs is mounted. Its sys/net and thread-self/net
	// are the calling thread's namespace's.
	Proc string
	// Run runs a command and returns what it wrote to its standard
	// output; the error wraps exec.ErrNotFound when it is not installed.
	Run func(ctx context.Context, name string, args ...string) ([]byte, error)
}

// New is a Reader of the machine's procfs and commands.
func New() Reader { return Reader{Proc: "/proc", Run: run} }

// run runs a command on the calling thread, so that it starts in that
// thread's namespace.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("run %s: %w (%s)", name, err, msg)
		}
		return nil, fmt.Errorf("run %s: %w", name, err)
	}
	return out, nil
}

// Read reads every setting. What cannot be read is left at its zero value
// and said in Unread: a status never fails for want of a host setting.
func (r Reader) Read(ctx context.Context) api.HostSettings {
	var hs api.HostSettings
	unread := func(err error) {
		if err != nil {
			hs.Unread = append(hs.Unread, err.Error())
		}
	}
	var err error
	hs.BridgeNetfilter, err = r.bridgeNetfilter()
	unread(err)
	hs.Conntrack, err = r.conntrack()
	unread(err)
	hs.RPFilter.All, err = r.sysctl("net/ipv4/conf/all/rp_filter")
	unread(err)
	hs.RPFilter.Default, err = r.sysctl("net/ipv4/conf/default/rp_filter")
	unread(err)
	var chains []api.ForwardChain
	chains, err = r.nftForward(ctx)
	unread(err)
	hs.Forward.Chains = append(hs.Forward.Chains, chains...)
	chains, err = r.legacyForward(ctx)
	unread(err)
	hs.Forward.Chains = append(hs.Forward.Chains, chains...)
	hs.Forward.IPv4 = policy(hs.Forward.Chains, "ip", "inet")
	hs.Forward.IPv6 = policy(hs.Forward.Chains, "ip6", "inet")
	return hs
}

// sysctl reads an integer sysctl, named by its path under /proc/sys.
func (r Reader) sysctl(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(r.Proc, "sys", name))
	if err != nil {
		return 0, fmt.Errorf("read sysctl %s: %w", sysctlName(name), err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("read sysctl %s: %w", sysctlName(name), err)
	}
	return n, nil
}

// sysctlName is how sysctl(8) names a path under /proc/sys.
func sysctlName(path string) string { return strings.ReplaceAll(path, "/", ".") }

// bridgeNetfilter reads br_netfilter's sysctls: a namespace has them
// while the module is loaded (or built in), and not before.
func (r Reader) bridgeNetfilter() (api.BridgeNetfilter, error) {
	var b api.BridgeNetfilter
	for _, s := range []struct {
		name string
		to   *bool
	}{
		{"net/bridge/bridge-nf-call-iptables", &b.CallIPTables},
		{"net/bridge/bridge-nf-call-ip6tables", &b.CallIP6Tables},
		{"net/bridge/bridge-nf-call-arptables", &b.CallARPTables},
	} {
		n, err := r.sysctl(s.name)
		if errors.Is(err, os.ErrNotExist) {
			return api.BridgeNetfilter{}, nil
		}
		if err != nil {
			return api.BridgeNetfilter{}, err
		}
		b.Active, *s.to = true, n != 0
	}
	return b, nil
}

// conntrack reads nf_conntrack's fill: a namespace has its sysctls while
// the module is loaded (or built in).
func (r Reader) conntrack() (api.HostConntrack, error) {
	count, err := r.sysctl("net/netfilter/nf_conntrack_count")
	if errors.Is(err, os.ErrNotExist) {
		return api.HostConntrack{}, nil
	}
	if err != nil {
		return api.HostConntrack{}, err
	}
	limit, err := r.sysctl("net/netfilter/nf_conntrack_max")
	if err != nil {
		return api.HostConntrack{}, err
	}
	return api.HostConntrack{Active: true, Count: count, Max: limit}, nil
}

// nftForward lists the base chains on the forward hook of nftables'
// ruleset: native ones and iptables-nft's (its FORWARD, in table filter
// of family ip or ip6). Without nft there are none to read.
func (r Reader) nftForward(ctx context.Context) ([]api.ForwardChain, error) {
	out, err := r.Run(ctx, "nft", "-j", "list", "ruleset")
	if errors.Is(err, exec.ErrNotFound) {
		return nil, errors.New("read nftables ruleset: nft is not installed (chains of nftables and of iptables-nft not read)")
	}
	if err != nil {
		return nil, fmt.Errorf("read nftables ruleset: %w", err)
	}
	return parseNftForward(out)
}

// parseNftForward picks the base chains on the forward hook out of
// `nft -j list ruleset`.
func parseNftForward(out []byte) ([]api.ForwardChain, error) {
	var ruleset struct {
		Nftables []struct {
			Chain *struct {
				Family string `json:"family"`
				Table  string `json:"table"`
				Name   string `json:"name"`
				Hook   string `json:"hook"`
				Policy string `json:"policy"`
			} `json:"chain"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &ruleset); err != nil {
		return nil, fmt.Errorf("decode nftables ruleset: %w", err)
	}
	var chains []api.ForwardChain
	for _, o := range ruleset.Nftables {
		c := o.Chain
		if c == nil || c.Hook != "forward" {
			continue
		}
		p := c.Policy
		if p == "" {
			p = "accept" // a base chain's default
		}
		chains = append(chains, api.ForwardChain{Family: c.Family, Table: c.Table, Chain: c.Name, Policy: p, Via: "nftables"})
	}
	return chains, nil
}

// legacyForward reads the FORWARD policy of legacy iptables and ip6tables,
// which nft cannot see. Only where their filter table exists: listing a
// table that does not creates it.
func (r Reader) legacyForward(ctx context.Context) ([]api.ForwardChain, error) {
	var chains []api.ForwardChain
	var errs []error
	for _, t := range []struct{ names, cmd, family string }{
		{"ip_tables_names", "iptables-legacy", "ip"},
		{"ip6_tables_names", "ip6tables-legacy", "ip6"},
	} {
		b, err := os.ReadFile(filepath.Join(r.Proc, "thread-self", "net", t.names))
		if err != nil || !slices.Contains(strings.Fields(string(b)), "filter") {
			continue // no legacy table, or no legacy iptables in the kernel
		}
		out, err := r.Run(ctx, t.cmd, "-S", "FORWARD")
		if err != nil {
			errs = append(errs, fmt.Errorf("read FORWARD policy of legacy %s table filter: %w", t.family, err))
			continue
		}
		if p, ok := parseIptablesPolicy(out, "FORWARD"); ok {
			chains = append(chains, api.ForwardChain{Family: t.family, Table: "filter", Chain: "FORWARD", Policy: p, Via: "iptables-legacy"})
		}
	}
	return chains, errors.Join(errs...)
}

// parseIptablesPolicy finds a built-in chain's policy in `iptables -S`
// ("-P FORWARD DROP"), lower-cased as nftables writes it.
func parseIptablesPolicy(out []byte, chain string) (string, bool) {
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) == 3 && f[0] == "-P" && f[1] == chain {
			return strings.ToLower(f[2]), true
		}
	}
	return "", false
}

// policy is what the forward hook does, for one family, with a packet no
// rule takes: drop when any of its chains drops (each chain on the hook
// sees the packet), accept when there are chains, none without.
func policy(chains []api.ForwardChain, families ...string) string {
	p := api.PolicyNone
	for _, c := range chains {
		if !slices.Contains(families, c.Family) {
			continue
		}
		if c.Policy == api.PolicyDrop {
			return api.PolicyDrop
		}
		p = api.PolicyAccept
	}
	return p
}
