package testbed

import (
	"net"
	"time"

	"github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/namespace"
)

// ServeDNS runs a DNS server on addr, UDP and TCP, in the namespace at
// nsPath; the returned function stops it (the test's end does too).
func ServeDNS(tb TB, nsPath, addr string, h dns.Handler) (stop func()) {
	tb.Helper()
	var (
		pc net.PacketConn
		ln net.Listener
	)
	err := namespace.Do(nsPath, func() (err error) {
		if pc, err = net.ListenPacket("udp4", addr); err != nil {
			return err
		}
		ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		tb.Fatalf("DNS server in %s: %v", nsPath, err)
	}
	udp, tcp := &dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	stop = func() { pc.Close(); ln.Close() }
	tb.Cleanup(stop)
	return stop
}

// Query asks server (host:port) a question from the namespace at nsPath,
// over "udp" or "tcp".
func Query(nsPath, network, server, name string, qtype uint16) (*dns.Msg, time.Duration, error) {
	var (
		resp *dns.Msg
		took time.Duration
	)
	err := namespace.Do(nsPath, func() (err error) {
		c := dns.Client{Net: network, Timeout: 5 * time.Second}
		resp, took, err = c.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(name), qtype), server)
		return err
	})
	return resp, took, err
}
