package sandbox

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// ParsePublish parses docker run's -p grammar,
// [HOST_IP:][HOST_PORT[-END]:]PORT[-END][/tcp|/udp]; a missing protocol
// means tcp.
func ParsePublish(s string) (ports.Mapping, error) {
	m, err := parse(s, ports.TCP)
	if err == nil {
		err = m.CheckPublish()
	}
	return m, wrap(s, err)
}

// ParseUnpublish parses what unpublish names: a -p spec, or host ports
// alone when it gives no host port (8080, 8000-8010/udp). A missing
// protocol matches either.
func ParseUnpublish(s string) (ports.Mapping, error) {
	m, err := parse(s, "")
	if err == nil && m.HostPort == 0 {
		m.HostPort, m.HostPortEnd, m.Port, m.PortEnd = m.Port, m.PortEnd, 0, 0
	}
	if err == nil {
		err = m.CheckFilter()
	}
	return m, wrap(s, err)
}

func wrap(s string, err error) error {
	if err == nil {
		return nil
	}
	return errdefs.Invalidf("invalid port spec %q: %w", s, err)
}

func parse(s string, proto ports.Protocol) (ports.Mapping, error) {
	m := ports.Mapping{Proto: proto}
	rest, name, hasProto := strings.Cut(s, "/")
	if hasProto {
		p, err := ports.ParseProtocol(name)
		if err != nil {
			return m, err
		}
		m.Proto = p
	}
	if strings.HasPrefix(rest, "[") {
		return m, fmt.Errorf("IPv6 host addresses are not supported yet")
	}
	parts := strings.Split(rest, ":")
	if len(parts) > 3 {
		return m, fmt.Errorf("want [HOST_IP:][HOST_PORT:]PORT")
	}
	if len(parts) == 3 {
		ip, err := netip.ParseAddr(parts[0])
		if err != nil || !ip.Is4() {
			return m, fmt.Errorf("host address %q is not an IPv4 address", parts[0])
		}
		if !ip.IsUnspecified() {
			m.HostIP = ip
		}
		parts = parts[1:]
	}
	var err error
	if m.Port, m.PortEnd, err = ParsePortRange(parts[len(parts)-1]); err != nil {
		return m, err
	}
	if len(parts) == 2 && parts[0] != "" {
		if m.HostPort, m.HostPortEnd, err = ParsePortRange(parts[0]); err != nil {
			return m, err
		}
	}
	return m, nil
}

// ParsePortRange parses PORT[-END], ports from 1 to 65535.
func ParsePortRange(s string) (first, end uint16, err error) {
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		b = a
	}
	x, errA := strconv.ParseUint(a, 10, 16)
	y, errB := strconv.ParseUint(b, 10, 16)
	if errA != nil || errB != nil || x == 0 || y == 0 {
		return 0, 0, fmt.Errorf("port %q is not a number from 1 to 65535 (or a range of them)", s)
	}
	if y < x {
		return 0, 0, fmt.Errorf("port range %q ends before it starts", s)
	}
	return uint16(x), uint16(y), nil
}
