package engine

import (
	"net"
	"net/netip"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/dns"
)

// TestDialInHostIPv6 forwards through the engine's own path, from its
// host namespace, to real servers there on ::1 and on a link-local address
// named with its zone, over UDP and TCP.
func TestDialInHostIPv6(t *testing.T) {
	te := newTestEngine(t)
	upA, upB := te.name("ua"), te.name("ub")
	linkLocal := netip.MustParseAddr("fe80::53").WithZone(upA)
	var pcs []net.PacketConn
	var lns []net.Listener
	err := te.inHost(func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: upA}, PeerName: upB}); err != nil {
			return err
		}
		a, err := netlink.LinkByName(upA)
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("fe80::53"), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(a, addr); err != nil {
			return err
		}
		for _, l := range []string{upA, upB} {
			if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: l}}); err != nil {
				return err
			}
		}
		for _, server := range []string{"[::1]:53", netip.AddrPortFrom(linkLocal, 53).String()} {
			pc, err := net.ListenPacket("udp6", server)
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
			ln, err := net.Listen("tcp6", server)
			if err != nil {
				return err
			}
			lns = append(lns, ln)
		}
		return nil
	})
	t.Cleanup(func() {
		for _, c := range pcs {
			c.Close()
		}
		for _, l := range lns {
			l.Close()
		}
	})
	if err != nil {
		t.Fatalf("serve DNS on IPv6 in the host namespace: %v", err)
	}
	answer := mdns.HandlerFunc(func(w mdns.ResponseWriter, q *mdns.Msg) {
		resp := new(mdns.Msg).SetReply(q)
		resp.Answer = append(resp.Answer, &mdns.AAAA{
			Hdr:  mdns.RR_Header{Name: q.Question[0].Name, Rrtype: mdns.TypeAAAA, Class: mdns.ClassINET, Ttl: 60},
			AAAA: net.ParseIP("2001:db8::1"),
		})
		w.WriteMsg(resp)
	})
	for i := range pcs {
		go (&mdns.Server{PacketConn: pcs[i], Handler: answer}).ActivateAndServe()
		go (&mdns.Server{Listener: lns[i], Handler: answer}).ActivateAndServe()
	}
	// The veth's carrier comes up when the kernel gets to it, later on a
	// loaded host: the link-local server is reachable only then. Asked
	// directly until it answers, it is ready for the engine's path.
	te.awaitServer(t, netip.AddrPortFrom(linkLocal, 53))

	r := dns.NewResolver(te.dialUpstream)
	for _, server := range []netip.AddrPort{netip.MustParseAddrPort("[::1]:53"), netip.AddrPortFrom(linkLocal, 53)} {
		r.SetView(dns.NewView(map[string]dns.Asker{"client": {Networks: []string{"n"}, Forward: true, Upstreams: []netip.AddrPort{server}}}, nil))
		for _, network := range []string{"udp", "tcp"} {
			// A name per network, or the second would come from the cache.
			resp := r.Answer("client", new(mdns.Msg).SetQuestion(network+".outside.example.", mdns.TypeAAAA), network)
			if len(resp.Answer) != 1 {
				t.Errorf("ask %s over %s: %v", server, network, resp)
			}
		}
	}
}

// awaitServer waits, up to 20 s, until the DNS server at server in the
// host namespace answers a query over UDP.
func (te testEngine) awaitServer(t *testing.T, server netip.AddrPort) {
	t.Helper()
	c := &mdns.Client{Net: "udp", Timeout: time.Second}
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		err = te.inHost(func() error {
			_, _, err := c.Exchange(new(mdns.Msg).SetQuestion("ready.example.", mdns.TypeAAAA), server.String())
			return err
		})
		if err == nil {
			return
		}
	}
	t.Fatalf("DNS server %s does not answer: %v", server, err)
}
