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

// EveryAddress gives the host address a mapping is asked for with, as the
// engine keeps it: an unspecified address of either family (0.0.0.0, ::)
// means every address of the host, of both families, as Docker's -p
// 8080:80 publishes on 0.0.0.0 and [::]. Runtimes that send such a port
// twice, once per family, send one mapping (Append).
func EveryAddress(a netip.Addr) netip.Addr {
	if a.IsUnspecified() {
		return netip.Addr{}
	}
	return a
}

// Append adds m to ms unless ms has it already: a port a runtime sends
// once per family (0.0.0.0 and ::) is one mapping of every address.
func Append(ms []Mapping, m Mapping) []Mapping {
	if slices.Contains(ms, m) {
		return ms
	}
	return append(ms, m)
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
