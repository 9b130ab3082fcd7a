package ports

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

func TestProtocol(t *testing.T) {
	for _, c := range []struct {
		name   string
		number int
		want   Protocol
	}{{"tcp", 6, TCP}, {"udp", 17, UDP}} {
		if p, err := ParseProtocol(c.name); p != c.want || err != nil {
			t.Errorf("ParseProtocol(%q) = %q, %v", c.name, p, err)
		}
		if p, err := ProtocolNumbered(c.number); p != c.want || err != nil {
			t.Errorf("ProtocolNumbered(%d) = %q, %v", c.number, p, err)
		}
		if n := c.want.Number(); int(n) != c.number {
			t.Errorf("%s.Number() = %d, want %d", c.want, n, c.number)
		}
	}
	for _, name := range []string{"", "TCP", "sctp"} {
		if _, err := ParseProtocol(name); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseProtocol(%q): %v, want an invalid error", name, err)
		}
	}
	if _, err := ProtocolNumbered(132); err == nil || err.Error() != "protocol 132 is not tcp or udp" || !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("ProtocolNumbered(132): %v", err)
	}
}

// Add is how the Docker and CNI frontends build their lists: the host
// address as runtimes send it, and a port sent once per family kept once.
func TestAdd(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	m := Mapping{Proto: TCP, HostPort: 8080, Port: 80}
	var ms []Mapping
	for _, hostIP := range []string{"", "0.0.0.0", "::", "127.0.0.1", "127.0.0.1"} {
		var err error
		if ms, err = Add(ms, m, hostIP); err != nil {
			t.Fatalf("Add(%q): %v", hostIP, err)
		}
	}
	withLo := m
	withLo.HostIP = lo
	if want := []Mapping{m, withLo}; len(ms) != len(want) || ms[0] != want[0] || ms[1] != want[1] {
		t.Fatalf("Add: %+v, want %+v", ms, want)
	}
	udp := m
	udp.Proto = UDP
	if ms, _ := Add(ms, udp, "[::]"); len(ms) != 2 {
		t.Errorf("Add accepted a bracketed address: %+v", ms)
	}
	if ms, _ := Add(ms, udp, "::"); len(ms) != 3 || ms[2] != udp {
		t.Errorf("Add of another protocol: %+v", ms)
	}
	got, err := Add(ms, m, "nohost")
	if err == nil || err.Error() != `invalid host address "nohost"` || !errors.Is(err, errdefs.ErrInvalid) || len(got) != len(ms) {
		t.Errorf("Add of an invalid address: %+v, %v", got, err)
	}
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		m             Mapping
		publish, filt string // "" when it passes, else part of the error
	}{
		{Mapping{Proto: TCP, Port: 80}, "", ""},
		{Mapping{Proto: UDP, HostPort: 8000, HostPortEnd: 8010, Port: 80}, "", ""}, // the first free port of a range
		{Mapping{Proto: TCP, HostPort: 8000, HostPortEnd: 8010, Port: 80, PortEnd: 90}, "", ""},
		{Mapping{HostPort: 8080}, `protocol "" is not tcp or udp`, ""}, // a filter of either protocol
		{Mapping{Proto: TCP, HostPort: 8080}, "no sandbox port given", ""},
		{Mapping{Proto: "sctp", Port: 80}, `protocol "sctp"`, `protocol "sctp"`},
		{Mapping{}, `protocol ""`, "no port given"},
		{Mapping{Proto: TCP, Port: 90, PortEnd: 80}, "port range ends before it starts", "port range ends before it starts"},
		{Mapping{Proto: TCP, HostPort: 8010, HostPortEnd: 8000, Port: 80}, "port range ends before it starts", "port range ends before it starts"},
		{Mapping{Proto: TCP, HostPortEnd: 8010, Port: 80}, "host port range 0-8010 has no start", "host port range 0-8010 has no start"},
		{Mapping{Proto: TCP, HostPort: 8000, HostPortEnd: 8010, Port: 80, PortEnd: 85}, "host ports 8000-8010 and sandbox ports 80-85 differ in number",
			"host ports 8000-8010 and sandbox ports 80-85 differ in number"},
	} {
		for _, check := range []struct {
			name string
			err  error
			want string
		}{{"CheckPublish", c.m.CheckPublish(), c.publish}, {"CheckFilter", c.m.CheckFilter(), c.filt}} {
			if check.want == "" && check.err != nil ||
				check.want != "" && (check.err == nil || !strings.Contains(check.err.Error(), check.want) || !errors.Is(check.err, errdefs.ErrInvalid)) {
				t.Errorf("%+v %s: %v, want %q", c.m, check.name, check.err, check.want)
			}
		}
	}
}

func TestRanges(t *testing.T) {
	m := Mapping{HostPort: 8080, Port: 80}
	if first, end := m.HostPorts(); first != 8080 || end != 8080 {
		t.Errorf("HostPorts of one port: %d-%d", first, end)
	}
	m = Mapping{HostPort: 8000, HostPortEnd: 8010, Port: 80, PortEnd: 90}
	if first, end := m.Ports(); first != 80 || end != 90 {
		t.Errorf("Ports of a range: %d-%d", first, end)
	}
}

// Mappings cross the wire as JSON: a zero field is left out, so an
// unpublish filter says only what it matches.
func TestMappingJSON(t *testing.T) {
	for _, c := range []struct {
		m    Mapping
		json string
	}{
		{Mapping{Proto: TCP, HostPort: 8080, Port: 80}, `{"Proto":"tcp","HostPort":8080,"Port":80}`},
		{Mapping{Proto: UDP, HostIP: netip.MustParseAddr("::1"), HostPort: 53, HostPortEnd: 54, Port: 53, PortEnd: 54},
			`{"Proto":"udp","HostIP":"::1","HostPort":53,"HostPortEnd":54,"Port":53,"PortEnd":54}`},
		{Mapping{HostPort: 8080}, `{"HostPort":8080}`},
	} {
		data, err := json.Marshal(c.m)
		if err != nil || string(data) != c.json {
			t.Errorf("%+v: %s, %v; want %s", c.m, data, err, c.json)
		}
		var back Mapping
		if err := json.Unmarshal([]byte(c.json), &back); err != nil || back != c.m {
			t.Errorf("%s: %+v, %v; want %+v", c.json, back, err, c.m)
		}
	}
}

func TestString(t *testing.T) {
	lo6 := netip.IPv6Loopback()
	for _, c := range []struct {
		m    Mapping
		want string
	}{
		{Mapping{HostPort: 8080}, "8080"},
		{Mapping{HostPort: 8000, HostPortEnd: 8010, Proto: UDP}, "8000-8010/udp"},
		{Mapping{HostIP: lo6, Port: 80, Proto: TCP}, "[::1]::80/tcp"},
		{Mapping{Port: 80, PortEnd: 81}, "80-81"},
	} {
		if got := c.m.String(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.m, got, c.want)
		}
	}
}

func TestParseRange(t *testing.T) {
	if first, end, err := ParseRange("40000-40999"); first != 40000 || end != 40999 || err != nil {
		t.Errorf("ParseRange(40000-40999) = %d-%d, %v", first, end, err)
	}
	if first, end, err := ParseRange("8080"); first != 8080 || end != 8080 || err != nil {
		t.Errorf("ParseRange(8080) = %d-%d, %v", first, end, err)
	}
	for _, s := range []string{"0", "", "x", "70000", "2-1"} {
		if _, _, err := ParseRange(s); err == nil || !strings.Contains(err.Error(), "is not a number from 1 to 65535") {
			t.Errorf("ParseRange(%q): %v", s, err)
		}
	}
}

func TestSources(t *testing.T) {
	pfx := netip.MustParsePrefix
	for _, c := range []struct {
		s    Sources
		want string
	}{
		{Sources{}, ""},
		{Sources{Allow: []netip.Prefix{pfx("192.0.2.0/24"), pfx("2001:db8::/32")}, Deny: []netip.Prefix{pfx("192.0.2.7/32")}}, ""},
		{Sources{Allow: []netip.Prefix{pfx("192.0.2.1/24")}}, "allow prefix 192.0.2.1/24 has host bits set (did you mean 192.0.2.0/24?)"},
		{Sources{Deny: []netip.Prefix{pfx("::ffff:192.0.2.0/120")}}, "deny prefix ::ffff:192.0.2.0/120 is v4-mapped: give it as IPv4"},
		{Sources{Allow: []netip.Prefix{pfx("10.0.0.0/8")}, Deny: []netip.Prefix{pfx("10.0.0.0/8")}}, "prefix 10.0.0.0/8 is both allowed and denied"},
		{Sources{Allow: []netip.Prefix{{}}}, `invalid allow prefix "invalid Prefix"`},
	} {
		if err := c.s.Check(); (err == nil) != (c.want == "") || err != nil && err.Error() != c.want {
			t.Errorf("%+v: %v, want %q", c.s, err, c.want)
		}
	}
	got, err := ParsePrefixes(" 192.0.2.0/24, 2001:db8::1 ,,10.0.0.1")
	want := []netip.Prefix{pfx("192.0.2.0/24"), pfx("2001:db8::1/128"), pfx("10.0.0.1/32")}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ParsePrefixes: %v, %v; want %v", got, err, want)
	}
	if _, err := ParsePrefixes("192.0.2.0/24,lan"); err == nil || err.Error() != `invalid prefix "lan": want an address or CIDR such as 192.0.2.0/24` {
		t.Errorf("ParsePrefixes of a name: %v", err)
	}
}
