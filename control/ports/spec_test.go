package ports

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

func TestParsePublish(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, c := range []struct {
		spec  string
		want  Mapping
		print string // how messages show it
	}{
		{"80", Mapping{Proto: TCP, Port: 80, PortEnd: 80}, "80/tcp"},
		{"8080:80", Mapping{Proto: TCP, HostPort: 8080, HostPortEnd: 8080, Port: 80, PortEnd: 80}, "8080:80/tcp"},
		{"127.0.0.1:5353:53/udp", Mapping{Proto: UDP, HostIP: lo, HostPort: 5353, HostPortEnd: 5353, Port: 53, PortEnd: 53}, "127.0.0.1:5353:53/udp"},
		{"127.0.0.1::53", Mapping{Proto: TCP, HostIP: lo, Port: 53, PortEnd: 53}, "127.0.0.1::53/tcp"},
		{"[::1]:8080:80", Mapping{Proto: TCP, HostIP: netip.IPv6Loopback(), HostPort: 8080, HostPortEnd: 8080, Port: 80, PortEnd: 80}, "[::1]:8080:80/tcp"},
		// An unspecified address of either family is every address of both.
		{"[::]:8080:80", Mapping{Proto: TCP, HostPort: 8080, HostPortEnd: 8080, Port: 80, PortEnd: 80}, "8080:80/tcp"},
		{"0.0.0.0:8080:80", Mapping{Proto: TCP, HostPort: 8080, HostPortEnd: 8080, Port: 80, PortEnd: 80}, "8080:80/tcp"},
		{"0.0.0.0:8000-8010:80-90", Mapping{Proto: TCP, HostPort: 8000, HostPortEnd: 8010, Port: 80, PortEnd: 90}, "8000-8010:80-90/tcp"},
		{"8000-8010:80", Mapping{Proto: TCP, HostPort: 8000, HostPortEnd: 8010, Port: 80, PortEnd: 80}, "8000-8010:80/tcp"},
	} {
		got, err := ParsePublish(c.spec)
		if err != nil || got != c.want || got.String() != c.print {
			t.Errorf("ParsePublish(%q) = %+v (%q), %v; want %+v (%q)", c.spec, got, got, err, c.want, c.print)
		}
	}
	// Docker's parser words the errors as docker run does.
	for _, c := range []struct{ spec, want string }{
		{"abc", `invalid port spec "abc": invalid containerPort: abc`},
		{"99999:80", `invalid port spec "99999:80"`},
		{"0", `invalid port spec "0"`},
		{"90-80", `invalid containerPort: 90-80`},
		{"80/sctp", `protocol "sctp" is not tcp or udp`},
		{"8000-8010:80-85", "invalid ranges specified for container and host Ports: 80-85 and 8000-8010"},
		{"1.2.3.4:5:6:7", "invalid IP address: 1.2.3.4:5"},
		{"nohost:80:80", "invalid IP address: nohost"},
	} {
		_, err := ParsePublish(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParsePublish(%q): %v, want an invalid error with %q", c.spec, err, c.want)
		}
	}
}

// Unpublish names host ports when a spec gives none, and either protocol
// when it names none.
func TestParseUnpublish(t *testing.T) {
	for _, c := range []struct {
		spec string
		want Mapping
	}{
		{"8080", Mapping{HostPort: 8080, HostPortEnd: 8080}},
		{"8000-8010/udp", Mapping{Proto: UDP, HostPort: 8000, HostPortEnd: 8010}},
		{"8080:80", Mapping{HostPort: 8080, HostPortEnd: 8080, Port: 80, PortEnd: 80}},
	} {
		got, err := ParseUnpublish(c.spec)
		if err != nil || got != c.want || got.String() != c.spec {
			t.Errorf("ParseUnpublish(%q) = %+v (%q), %v; want %+v", c.spec, got, got, err, c.want)
		}
	}
}
