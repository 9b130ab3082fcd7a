package ports

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// Protocol is a transport protocol that ports are published for; its
// string form is also its form on the wire and in the store.
type Protocol string

// The protocols the datapath translates.
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// ParseProtocol accepts "tcp" and "udp".
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case TCP, UDP:
		return p, nil
	}
	return "", errdefs.Invalidf("protocol %q is not tcp or udp", s)
}

// ProtocolNumbered is the protocol of an IPPROTO number, as Docker's
// portmap names it (6 tcp, 17 udp, 132 sctp).
func ProtocolNumbered(n int) (Protocol, error) {
	switch n {
	case unix.IPPROTO_TCP:
		return TCP, nil
	case unix.IPPROTO_UDP:
		return UDP, nil
	}
	return "", errdefs.Invalidf("protocol %d is not tcp or udp", n)
}

// Number is the protocol's IPPROTO number, as packets and the maps carry it.
func (p Protocol) Number() uint8 {
	if p == UDP {
		return unix.IPPROTO_UDP
	}
	return unix.IPPROTO_TCP
}

// Mapping publishes sandbox ports Port-PortEnd on host ports
// HostPort-HostPortEnd of HostIP. An end of zero is the start: one port.
//
// As a request to publish: no HostPort means a free host port of the
// ephemeral range for each sandbox port; a host range with one sandbox
// port means the first free port of that range.
//
// As a filter of what to unpublish, zero fields match anything: no Proto
// either protocol, no HostIP any address, no Port any sandbox port.
type Mapping struct {
	Proto       Protocol   `json:"Proto,omitempty"`
	HostIP      netip.Addr `json:"HostIP,omitzero"`
	HostPort    uint16     `json:"HostPort,omitempty"`
	HostPortEnd uint16     `json:"HostPortEnd,omitempty"`
	Port        uint16     `json:"Port,omitempty"`
	PortEnd     uint16     `json:"PortEnd,omitempty"`
}

// Add adds m, published on the host address hostIP as a frontend is
// handed it, to ms. No address, or an unspecified one of either family
// (0.0.0.0, ::), is every address of the host, of both families, as
// Docker's -p 8080:80 publishes on 0.0.0.0 and [::]. Runtimes send such a
// port once per family: a mapping ms has already is not added again.
func Add(ms []Mapping, m Mapping, hostIP string) ([]Mapping, error) {
	var err error
	if m.HostIP, err = hostAddress(hostIP); err != nil {
		return ms, err
	}
	if slices.Contains(ms, m) {
		return ms, nil
	}
	return append(ms, m), nil
}

// hostAddress is the host address s names, as a Mapping keeps it: the
// zero Addr for every address.
func hostAddress(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return a, errdefs.Invalidf("invalid host address %q", s)
	}
	if a.IsUnspecified() {
		return netip.Addr{}, nil
	}
	return a, nil
}

// HostPorts is the host port range, both ends set.
func (m Mapping) HostPorts() (first, end uint16) { return m.HostPort, max(m.HostPortEnd, m.HostPort) }

// Ports is the sandbox port range, both ends set.
func (m Mapping) Ports() (first, end uint16) { return m.Port, max(m.PortEnd, m.Port) }

// CheckPublish checks a request to publish.
func (m Mapping) CheckPublish() error {
	if _, err := ParseProtocol(string(m.Proto)); err != nil {
		return err
	}
	if m.Port == 0 {
		return errdefs.Invalidf("no sandbox port given")
	}
	return m.checkRanges()
}

// CheckFilter checks a filter of publications.
func (m Mapping) CheckFilter() error {
	if m.Proto != "" {
		if _, err := ParseProtocol(string(m.Proto)); err != nil {
			return err
		}
	}
	if m.HostPort == 0 && m.Port == 0 {
		return errdefs.Invalidf("no port given")
	}
	return m.checkRanges()
}

func (m Mapping) checkRanges() error {
	if m.HostPortEnd != 0 && m.HostPortEnd < m.HostPort || m.PortEnd != 0 && m.PortEnd < m.Port {
		return errdefs.Invalidf("port range ends before it starts")
	}
	if m.HostPort == 0 && m.HostPortEnd != 0 {
		return errdefs.Invalidf("host port range %d-%d has no start", m.HostPort, m.HostPortEnd)
	}
	hostFirst, hostEnd := m.HostPorts()
	first, end := m.Ports()
	if m.HostPort != 0 && m.Port != 0 && end != first && hostEnd-hostFirst != end-first {
		return errdefs.Invalidf("host ports %d-%d and sandbox ports %d-%d differ in number", hostFirst, hostEnd, first, end)
	}
	return nil
}

// String is the mapping in docker run's -p form, as messages show it.
func (m Mapping) String() string {
	var s string
	switch {
	case m.HostIP.Is6():
		s = "[" + m.HostIP.String() + "]:"
	case m.HostIP.IsValid():
		s = m.HostIP.String() + ":"
	}
	switch {
	case m.Port == 0:
		s += portRange(m.HostPorts())
	case m.HostPort == 0:
		if m.HostIP.IsValid() {
			s += ":" // docker run -p's form: no host port between the colons
		}
		s += portRange(m.Ports())
	default:
		s += portRange(m.HostPorts()) + ":" + portRange(m.Ports())
	}
	if m.Proto != "" {
		s += "/" + string(m.Proto)
	}
	return s
}

func portRange(a, b uint16) string {
	if a == b {
		return strconv.Itoa(int(a))
	}
	return fmt.Sprintf("%d-%d", a, b)
}

// CheckPublications checks requests to publish before anything is looked
// up.
func CheckPublications(specs []Mapping) error {
	for _, m := range specs {
		if err := m.CheckPublish(); err != nil {
			return errdefs.Invalidf("invalid port mapping %q: %w", m, err)
		}
	}
	return nil
}
