package hostsettings

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
)

// fakeProc writes files under a procfs of its own, by path.
func fakeProc(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for path, content := range files {
		p := filepath.Join(dir, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fakeRun answers commands by name: their output, or ErrNotFound for
// those not installed. It records what ran.
func fakeRun(outputs map[string]string, ran *[]string) func(context.Context, string, ...string) ([]byte, error) {
	return func(_ context.Context, name string, args ...string) ([]byte, error) {
		*ran = append(*ran, name+" "+strings.Join(args, " "))
		out, ok := outputs[name]
		if !ok {
			return nil, fmt.Errorf("run %s: %w", name, exec.ErrNotFound)
		}
		return []byte(out), nil
	}
}

// The ruleset of a Docker host with iptables-nft: FORWARD DROP for IPv4,
// ACCEPT for IPv6, a chain of Docker's that is no base chain, and an
// inet table's forward chain that accepts.
const dockerRuleset = `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
{"table": {"family": "ip", "name": "filter", "handle": 1}},
{"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "drop"}},
{"chain": {"family": "ip", "table": "filter", "name": "INPUT", "handle": 2, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
{"chain": {"family": "ip", "table": "filter", "name": "DOCKER", "handle": 3}},
{"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": 4, "expr": [{"jump": {"target": "DOCKER"}}]}},
{"table": {"family": "ip6", "name": "filter", "handle": 2}},
{"chain": {"family": "ip6", "table": "filter", "name": "FORWARD", "handle": 1, "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}},
{"table": {"family": "inet", "name": "fw", "handle": 3}},
{"chain": {"family": "inet", "table": "fw", "name": "fwd", "handle": 1, "type": "filter", "hook": "forward", "prio": 0}}]}`

func TestRead(t *testing.T) {
	dockerHost := map[string]string{
		"sys/net/bridge/bridge-nf-call-iptables":  "1\n",
		"sys/net/bridge/bridge-nf-call-ip6tables": "1\n",
		"sys/net/bridge/bridge-nf-call-arptables": "0\n",
		"sys/net/netfilter/nf_conntrack_count":    "12\n",
		"sys/net/netfilter/nf_conntrack_max":      "64\n",
		"sys/net/ipv4/conf/all/rp_filter":         "1\n",
		"sys/net/ipv4/conf/default/rp_filter":     "2\n",
		"thread-self/net/ip_tables_names":         "",
		"thread-self/net/ip6_tables_names":        "",
	}
	pristine := map[string]string{
		"sys/net/ipv4/conf/all/rp_filter":     "0\n",
		"sys/net/ipv4/conf/default/rp_filter": "0\n",
	}
	for _, c := range []struct {
		name    string
		proc    map[string]string
		outputs map[string]string
		want    api.HostSettings
		unread  string // in Unread, when something could not be read
		ran     []string
	}{{
		name:    "docker host",
		proc:    dockerHost,
		outputs: map[string]string{"nft": dockerRuleset},
		want: api.HostSettings{
			BridgeNetfilter: api.BridgeNetfilter{Active: true, CallIPTables: true, CallIP6Tables: true},
			Forward: api.ForwardPolicy{IPv4: "drop", IPv6: "accept", Chains: []api.ForwardChain{
				{Family: "ip", Table: "filter", Chain: "FORWARD", Policy: "drop", Via: "nftables"},
				{Family: "ip6", Table: "filter", Chain: "FORWARD", Policy: "accept", Via: "nftables"},
				{Family: "inet", Table: "fw", Chain: "fwd", Policy: "accept", Via: "nftables"},
			}},
			Conntrack: api.HostConntrack{Active: true, Count: 12, Max: 64},
			RPFilter:  api.RPFilter{All: 1, Default: 2},
		},
		ran: []string{"nft -j list ruleset"},
	}, {
		name:    "pristine namespace",
		proc:    pristine,
		outputs: map[string]string{"nft": `{"nftables": [{"metainfo": {"version": "1.0.6"}}]}`},
		want:    api.HostSettings{Forward: api.ForwardPolicy{IPv4: "none", IPv6: "none"}},
		ran:     []string{"nft -j list ruleset"},
	}, {
		name:   "nft not installed",
		proc:   pristine,
		want:   api.HostSettings{Forward: api.ForwardPolicy{IPv4: "none", IPv6: "none"}},
		unread: "nft is not installed",
		ran:    []string{"nft -j list ruleset"},
	}, {
		name:    "an inet chain that drops drops both families",
		proc:    pristine,
		outputs: map[string]string{"nft": `{"nftables": [{"chain": {"family": "inet", "table": "t", "name": "f", "type": "filter", "hook": "forward", "policy": "drop"}}]}`},
		want: api.HostSettings{Forward: api.ForwardPolicy{IPv4: "drop", IPv6: "drop", Chains: []api.ForwardChain{
			{Family: "inet", Table: "t", Chain: "f", Policy: "drop", Via: "nftables"}}}},
		ran: []string{"nft -j list ruleset"},
	}, {
		name: "legacy iptables, its IPv4 filter table there",
		proc: map[string]string{
			"thread-self/net/ip_tables_names":  "nat\nfilter\n",
			"thread-self/net/ip6_tables_names": "",
		},
		outputs: map[string]string{
			"nft":             `{"nftables": []}`,
			"iptables-legacy": "-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n-N DOCKER\n-A FORWARD -j DOCKER\n",
		},
		want: api.HostSettings{Forward: api.ForwardPolicy{IPv4: "drop", IPv6: "none", Chains: []api.ForwardChain{
			{Family: "ip", Table: "filter", Chain: "FORWARD", Policy: "drop", Via: "iptables-legacy"}}}},
		// rp_filter is missing from this procfs.
		unread: "read sysctl net.ipv4.conf.all.rp_filter",
		// ip6tables-legacy is not run: it would create the table.
		ran: []string{"nft -j list ruleset", "iptables-legacy -S FORWARD"},
	}, {
		name:    "nft answers what is no ruleset",
		proc:    pristine,
		outputs: map[string]string{"nft": "Error: Could not process rule"},
		want:    api.HostSettings{Forward: api.ForwardPolicy{IPv4: "none", IPv6: "none"}},
		unread:  "decode nftables ruleset",
		ran:     []string{"nft -j list ruleset"},
	}} {
		t.Run(c.name, func(t *testing.T) {
			var ran []string
			r := Reader{Proc: fakeProc(t, c.proc), Run: fakeRun(c.outputs, &ran)}
			got := r.Read(context.Background())
			unread := strings.Join(got.Unread, "\n")
			if c.unread == "" && unread != "" || !strings.Contains(unread, c.unread) {
				t.Errorf("unread %q, want %q", unread, c.unread)
			}
			got.Unread = nil
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("read\n%+v\nwant\n%+v", got, c.want)
			}
			if !reflect.DeepEqual(ran, c.ran) {
				t.Errorf("ran %q, want %q", ran, c.ran)
			}
		})
	}
}

func TestParseIptablesPolicy(t *testing.T) {
	for _, c := range []struct {
		out, want string
		ok        bool
	}{
		{"-P INPUT ACCEPT\n-P FORWARD DROP\n-P OUTPUT ACCEPT\n", "drop", true},
		{"-P FORWARD ACCEPT\n-A FORWARD -j DOCKER-USER\n", "accept", true},
		{"-N DOCKER\n-A FORWARD -j DROP\n", "", false},
		{"", "", false},
	} {
		if got, ok := parseIptablesPolicy([]byte(c.out), "FORWARD"); got != c.want || ok != c.ok {
			t.Errorf("parseIptablesPolicy(%q) = %q, %v; want %q, %v", c.out, got, ok, c.want, c.ok)
		}
	}
}

func TestSysctlErrorsNameTheSysctl(t *testing.T) {
	r := Reader{Proc: fakeProc(t, map[string]string{"sys/net/netfilter/nf_conntrack_count": "many\n"})}
	_, err := r.conntrack()
	if err == nil || !strings.Contains(err.Error(), "net.netfilter.nf_conntrack_count") {
		t.Fatalf("conntrack: %v, want an error naming the sysctl", err)
	}
	_, err = r.sysctl("net/ipv4/conf/all/rp_filter")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing sysctl: %v, want ErrNotExist wrapped", err)
	}
}
