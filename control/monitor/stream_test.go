package monitor

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	dpmaps "github.com/ebpfnet/ebpfnet/maps"
)

// fakeNamer hands out fixed names and counts the reads.
type fakeNamer struct {
	names Names
	reads int
}

func (f *fakeNamer) Filter(ef api.EventFilter) (api.EventFilter, error) { return ef, nil }
func (f *fakeNamer) Names() (Names, error)                              { f.reads++; return f.names, nil }
func (f *fakeNamer) Answered(netip.Addr, netip.Addr) string             { return "" }

func TestParseTypes(t *testing.T) {
	for s, want := range map[string]dpmaps.MonitorTypes{"": dpmaps.MonitorAll, "all": dpmaps.MonitorAll,
		"drop": dpmaps.MonitorDrop, "trace": dpmaps.MonitorTrace} {
		if got, err := parseTypes(s); err != nil || got != want {
			t.Errorf("parseTypes(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := parseTypes("drops"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("parseTypes(drops): %v, want invalid", err)
	}
}

func TestViewNamesEndpoints(t *testing.T) {
	web := Endpoint{Sandbox: "web", Network: "front"}
	db := Endpoint{Sandbox: "db", Network: "front"}
	namer := &fakeNamer{names: Names{
		Interfaces: map[uint32]string{7: "veth1a2b", 2: "uplink"},
		HostSides:  map[uint32]Endpoint{7: web},
		Addrs: map[netip.Addr]Endpoint{netip.MustParseAddr("172.18.0.2"): web,
			netip.MustParseAddr("172.18.0.3"): db},
	}}
	n := &names{namer: namer, log: slog.Default()}
	n.refresh()
	flow := func(src, dst string) dpmaps.Flow {
		return dpmaps.Flow{Src: netip.MustParseAddrPort(src), Dst: netip.MustParseAddrPort(dst), Proto: 6}
	}

	// On an endpoint's host side: that endpoint, and the other end's.
	v := n.view(dpmaps.Event{Ifindex: 7, Program: "from_container", Verdict: "redirect",
		Before: flow("172.18.0.2:40000", "172.18.0.3:80")})
	if v.Interface != "veth1a2b" || v.Type != "trace" || v.Before != (api.EventFlow{Src: "172.18.0.2:40000", Dst: "172.18.0.3:80"}) ||
		v.Sandbox != "web" || v.Network != "front" || v.PeerSandbox != "db" || v.PeerNetwork != "front" || v.After != nil {
		t.Errorf("event on web's veth: %+v", v)
	}

	// On the uplink, translated: the endpoint is the one the packet goes
	// to after translation; no port shows as the address alone.
	v = n.view(dpmaps.Event{Ifindex: 2, Drop: true, Translated: true,
		Before: flow("10.0.0.2:0", "10.0.0.1:8080"), After: flow("10.0.0.2:0", "172.18.0.3:80")})
	if v.Interface != "uplink" || v.Type != "drop" || v.Before.Src != "10.0.0.2" || v.After == nil ||
		v.After.Dst != "172.18.0.3:80" || v.Sandbox != "db" || v.PeerSandbox != "" {
		t.Errorf("translated event on the uplink: %+v", v)
	}

	// An interface it does not know reads the names again, at most once
	// a second.
	v = n.view(dpmaps.Event{Ifindex: 9, Before: flow("10.0.0.2:1", "10.0.0.1:2")})
	if v.Interface != "if9" || namer.reads != 1 {
		t.Errorf("unknown interface: %q after %d reads of the names, want if9 after 1", v.Interface, namer.reads)
	}
}
