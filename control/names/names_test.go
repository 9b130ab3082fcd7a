package names

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/store"
)

var ip = netip.MustParseAddr

// Sandboxes for the names tests: dual on a dual-stack network, v4 on an
// IPv4-only one, late dual-stack on its second endpoint only.
var (
	dual = store.Sandbox{ID: "d1d1d1d1d1d1d1d1", Name: "dual", Mode: store.ModeNetworks, NetNS: "/run/netns/dual",
		Endpoints: []store.Endpoint{{NetworkID: "n6", Addr: ip("172.30.0.2"), Addr6: ip("fd00:30::2"), Aliases: []string{"www"}}}}
	v4 = store.Sandbox{ID: "a4a4a4a4a4a4a4a4", Name: "v4", Mode: store.ModeNetworks, NetNS: "/run/netns/v4",
		Endpoints: []store.Endpoint{{NetworkID: "n4", Addr: ip("172.31.0.2")}}}
	late = store.Sandbox{ID: "1a1a1a1a1a1a1a1a", Name: "late", Mode: store.ModeNetworks, NetNS: "/run/netns/late",
		Endpoints: []store.Endpoint{{NetworkID: "n4", Addr: ip("172.31.0.3")}, {NetworkID: "n6", Addr: ip("172.30.0.3"), Addr6: ip("fd00:30::3")}}}
)

const (
	hosts4 = "127.0.0.1\tlocalhost\n"
	hosts6 = hosts4 + "::1\tlocalhost ip6-localhost ip6-loopback\nfe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
)

func TestHostsFile(t *testing.T) {
	with := func(sb store.Sandbox, f func(*store.Sandbox)) store.Sandbox { f(&sb); return sb }
	byName := map[string]store.Sandbox{"dual": dual, "v4": v4, "late": late}
	tests := []struct {
		name      string
		sb, owner store.Sandbox
		want      string
	}{
		{"IPv4 only: no IPv6 line at all", v4, v4, hosts4 + "172.31.0.2\tv4\n"},
		{"dual-stack: Docker's IPv6 lines and both addresses", dual, dual, hosts6 + "172.30.0.2\tdual\nfd00:30::2\tdual\n"},
		{"IPv6 on a later endpoint", late, late, hosts6 + "172.31.0.3\tlate\nfd00:30::3\tlate\n"},
		{"no endpoint", store.Sandbox{Name: "none"}, store.Sandbox{Name: "none"}, hosts4},
		{"container mode: the owner's addresses", store.Sandbox{Name: "side", Mode: store.ModeContainer, Shares: "dual"}, dual,
			hosts6 + "172.30.0.2\tside\nfd00:30::2\tside\n"},
		{"links from a dual-stack sandbox: both families of a dual-stack target", with(dual, func(sb *store.Sandbox) {
			sb.Links = []store.Link{{Sandbox: "late", Alias: "l"}, {Sandbox: "v4", Alias: "old"}, {Sandbox: "gone", Alias: "g"}}
		}), dual, hosts6 + "172.30.0.2\tdual\nfd00:30::2\tdual\n172.31.0.3\tl late\nfd00:30::3\tl late\n172.31.0.2\told v4\n"},
		{"links from an IPv4-only sandbox: IPv4 only", with(v4, func(sb *store.Sandbox) {
			sb.Links = []store.Link{{Sandbox: "dual", Alias: "d"}}
		}), v4, hosts4 + "172.31.0.2\tv4\n172.30.0.2\td dual\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hostsFile(tt.sb, tt.owner, byName); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestResolvConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	host := "# the host's\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.99.0.2\n\nnameserver 2001:db8::53\n" +
		"nameserver fe80::1%eth0\nnameserver not-an-address\nsearch example.test\noptions edns0\n"
	if err := os.WriteFile(path, []byte(host), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, err := readResolvConf(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range upstreams(rc.nameservers) {
		got = append(got, s.String())
	}
	if want := []string{"10.99.0.2:53", "[2001:db8::53]:53", "[fe80::1%eth0]:53"}; !slices.Equal(got, want) {
		t.Errorf("upstreams %v, want %v (both families, loopback left out, zone kept)", got, want)
	}

	const common = "# the host's\nnameserver 10.99.0.2\n"
	const tail = "search example.test\noptions edns0\n"
	tests := []struct {
		name      string
		sb, owner store.Sandbox
		embedded  bool
		want      string
	}{
		{"embedded resolver", dual, dual, true, "nameserver 127.0.0.11\nsearch example.test\noptions ndots:0\n"},
		{"the sandbox's own servers, IPv6 too", store.Sandbox{DNS: []netip.Addr{ip("2001:db8::99")}}, store.Sandbox{}, false,
			"nameserver 2001:db8::99\nsearch example.test\n"},
		{"the host's, IPv4-only sandbox: no IPv6 server", v4, v4, false, common + tail},
		{"the host's, dual-stack sandbox: IPv6 servers without a zone", dual, dual, false, common + "nameserver 2001:db8::53\n" + tail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sandboxResolvConf(tt.sb, tt.owner, tt.embedded, rc); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestNameRecords checks the resolver's view built from store records with
// IPv6 addresses: AAAA and ip6.arpa answers, no data for a family a sandbox
// lacks, and forwarding to the host's IPv6 server.
func TestNameRecords(t *testing.T) {
	nets := []store.Network{{ID: "n6", Name: "net6", EnableIPv6: true}, {ID: "n4", Name: "net4"}}
	host := resolvConf{nameservers: []netip.Addr{ip("2001:db8::53"), ip("10.99.0.2")}}
	askers, records, listeners := nameRecords(nets, []store.Sandbox{dual, v4, late}, host)
	if len(listeners) != 3 {
		t.Errorf("listeners %v, want one per sandbox", listeners)
	}
	// Whatever server the resolver dials, it reaches one on 127.0.0.1
	// that has heard of nothing.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu          sync.Mutex
		asked       int
		forwardedTo = map[string]bool{}
	)
	nxdomain := mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		mu.Lock()
		asked++
		mu.Unlock()
		w.WriteMsg(new(mdns.Msg).SetRcode(q, mdns.RcodeNameError))
	})
	upstream := &mdns.Server{PacketConn: pc, Handler: nxdomain}
	go upstream.ActivateAndServe()
	t.Cleanup(func() { pc.Close() })
	r := dns.NewResolver(func(ctx context.Context, network string, server netip.AddrPort) (net.Conn, error) {
		mu.Lock()
		forwardedTo[server.String()] = true
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, pc.LocalAddr().String())
	})
	r.SetView(dns.NewView(askers, records))

	tests := []struct {
		name, sandbox, qname string
		qtype                uint16
		want                 []string // answers' data
		rcode                int
	}{
		{"AAAA by name", late.ID, "dual.", mdns.TypeAAAA, []string{"fd00:30::2"}, mdns.RcodeSuccess},
		{"AAAA by alias.network", late.ID, "www.net6.", mdns.TypeAAAA, []string{"fd00:30::2"}, mdns.RcodeSuccess},
		{"AAAA by short ID", late.ID, "d1d1d1d1d1d1.", mdns.TypeAAAA, []string{"fd00:30::2"}, mdns.RcodeSuccess},
		{"A stays IPv4", late.ID, "dual.", mdns.TypeA, []string{"172.30.0.2"}, mdns.RcodeSuccess},
		{"AAAA of a name on an IPv4-only network: no data", late.ID, "v4.", mdns.TypeAAAA, nil, mdns.RcodeSuccess},
		{"AAAA of late on the first shared network, IPv4-only: no data", v4.ID, "late.", mdns.TypeAAAA, nil, mdns.RcodeSuccess},
		{"AAAA of late.net6", dual.ID, "late.net6.", mdns.TypeAAAA, []string{"fd00:30::3"}, mdns.RcodeSuccess},
		{"a network the asker is not on: upstream", v4.ID, "late.net6.", mdns.TypeAAAA, nil, mdns.RcodeNameError},
		{"ip6.arpa", dual.ID, "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.0.0.d.f.ip6.arpa.", mdns.TypePTR, []string{"late.net6."}, mdns.RcodeSuccess},
		{"in-addr.arpa", dual.ID, "3.0.30.172.in-addr.arpa.", mdns.TypePTR, []string{"late.net6."}, mdns.RcodeSuccess},
		{"an outside name goes to the host's servers", dual.ID, "example.com.", mdns.TypeAAAA, nil, mdns.RcodeNameError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.Answer(tt.sandbox, new(mdns.Msg).SetQuestion(tt.qname, tt.qtype), "udp")
			var got []string
			for _, rr := range resp.Answer {
				switch rr := rr.(type) {
				case *mdns.A:
					got = append(got, rr.A.String())
				case *mdns.AAAA:
					got = append(got, rr.AAAA.String())
				case *mdns.PTR:
					got = append(got, rr.Ptr)
				}
			}
			if resp.Rcode != tt.rcode || !slices.Equal(got, tt.want) {
				t.Errorf("rcode %s, answers %v; want %s, %v", mdns.RcodeToString[resp.Rcode], got, mdns.RcodeToString[tt.rcode], tt.want)
			}
		})
	}
	// NXDOMAIN is an answer: the first server is the only one asked.
	mu.Lock()
	defer mu.Unlock()
	if want := map[string]bool{"[2001:db8::53]:53": true}; asked != 2 || !maps.Equal(forwardedTo, want) {
		t.Errorf("%d queries forwarded to %v, want 2 to %v", asked, forwardedTo, want)
	}
}

// A cluster event names every remote record of a network; the view takes
// in only those that changed (issue 24).
func TestRecordsChangedNamesOnlyTheChanged(t *testing.T) {
	rec := func(owner, name, addr string) dns.Record {
		return dns.Record{Network: "n1", NetworkName: "net", Owner: owner, Names: []string{name}, Addr: netip.MustParseAddr(addr)}
	}
	web, db, cache := rec("endpoint 1", "web", "10.9.0.2"), rec("endpoint 2", "db", "10.9.0.3"), rec("endpoint 3", "cache", "10.9.0.4")
	moved, renamed := rec("endpoint 2", "db", "10.9.0.9"), rec("endpoint 1", "www", "10.9.0.2")
	for _, c := range []struct {
		what      string
		was, now  []dns.Record
		drop, put []dns.Record
	}{
		{"nothing changed", []dns.Record{web, db}, []dns.Record{db, web}, nil, nil},
		{"one came", []dns.Record{web, db}, []dns.Record{web, db, cache}, nil, []dns.Record{cache}},
		{"one went", []dns.Record{web, db, cache}, []dns.Record{web, cache}, []dns.Record{db}, nil},
		{"one moved, one renamed", []dns.Record{web, db}, []dns.Record{renamed, moved}, []dns.Record{web, db}, []dns.Record{renamed, moved}},
	} {
		drop, put := recordsChanged(c.was, c.now)
		if !reflect.DeepEqual(drop, c.drop) || !reflect.DeepEqual(put, c.put) {
			t.Errorf("%s: drop %v, put %v; want drop %v, put %v", c.what, drop, put, c.drop, c.put)
		}
	}
}

// nameRecords is what the resolver knows of a snapshot of the store: who
// asks (by sandbox ID) and where they go upstream, the names on each
// user-defined network with the addresses of both families, and where a
// resolver listens (sandbox ID to namespace path).
func nameRecords(nets []store.Network, sbs []store.Sandbox, host resolvConf) (map[string]dns.Asker, []dns.Record, map[string]string) {
	ix := buildNameIndex(nets, sbs, host)
	return ix.askers(), ix.allRecords(), ix.listeners()
}
