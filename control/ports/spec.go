package ports

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/docker/go-connections/nat"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// ParsePublish parses docker run's -p grammar,
// [HOST_IP:][HOST_PORT[-END]:]PORT[-END][/tcp|/udp], with the parser
// docker run uses (go-connections' nat.ParsePortSpec); a missing protocol
// means tcp.
func ParsePublish(s string) (Mapping, error) {
	m, err := parse(s, TCP)
	if err == nil {
		err = m.CheckPublish()
	}
	return m, wrap(s, err)
}

// ParseUnpublish parses what unpublish names: a -p spec, or host ports
// alone when it gives no host port (8080, 8000-8010/udp). A missing
// protocol matches either.
func ParseUnpublish(s string) (Mapping, error) {
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
	// Docker's parser says what it read as it read it: a newline in the
	// spec would end the error's line.
	if msg := err.Error(); strings.ContainsFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) {
		err = errors.New(strconv.Quote(msg))
	}
	return errdefs.Invalidf("invalid port spec %q: %w", s, err)
}

// parse reads a -p spec with Docker's own parser, which hands back one
// mapping per sandbox port, and joins them into one range. Without a
// protocol in the spec the mapping has proto.
func parse(s string, proto Protocol) (Mapping, error) {
	specs, err := nat.ParsePortSpec(s)
	if err != nil && strings.HasPrefix(err.Error(), "invalid ranges specified") {
		return Mapping{}, fmt.Errorf("%w (they differ in number)", err) // Docker's words say which, not why
	}
	if err != nil {
		return Mapping{}, err
	}
	first, last := specs[0], specs[len(specs)-1]
	m := Mapping{Proto: proto, Port: uint16(first.Port.Int()), PortEnd: uint16(last.Port.Int())}
	if strings.Contains(s, "/") {
		if m.Proto, err = ParseProtocol(first.Port.Proto()); err != nil {
			return m, err
		}
	}
	if m.HostIP, err = hostAddress(first.Binding.HostIP); err != nil {
		return m, err
	}
	if first.Binding.HostPort != "" {
		// A range of host ports for one sandbox port comes back whole.
		start, _, _ := nat.ParsePortRange(first.Binding.HostPort)
		_, end, _ := nat.ParsePortRange(last.Binding.HostPort)
		m.HostPort, m.HostPortEnd = uint16(start), uint16(end)
	}
	return m, nil
}

// ParseRange parses PORT[-END], ports from 1 to 65535.
func ParseRange(s string) (first, end uint16, err error) {
	a, b, err := nat.ParsePortRange(s)
	if err != nil || a == 0 {
		return 0, 0, fmt.Errorf("port %q is not a number from 1 to 65535 (or a range of them)", s)
	}
	return uint16(a), uint16(b), nil
}
