package bpf_test

import (
	"fmt"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/loader"
	"github.com/ebpfnet/ebpfnet/maps"
)

// natSearchMaxTries is bpf/README.md's promise for one packet's NAT port
// search: the flow's own port, then at most 128+64+32+16+8 ports of the
// range (as netfilter's nf_nat_l4proto_unique_tuple tries).
const natSearchMaxTries = 1 + 248

// A masqueraded flow never takes a tuple a publication answers: not by
// keeping its own port (8080, published by another sandbox; 61000, a
// published port inside the NAT range) nor by the port the search gives
// it. Otherwise the client's next connection to the published port is
// translated into the masquerading sandbox instead of the publishing one.
func TestMasqueradeNeverTakesAPublishedPort(t *testing.T) {
	for _, c := range []struct {
		name  string
		proto uint8
	}{{"tcp", 6}, {"udp", 17}} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBedWith(t, loader.Options{NATPortMin: 61000, NATPortMax: 61001})
			// web (the bed's first endpoint) publishes 8080 and 61000.
			must(t, nb.maps.PutPublication(maps.Publication{HostPort: 8080, Proto: c.proto, Addr: webAddr, Port: 80}))
			must(t, nb.maps.PutPublication(maps.Publication{HostPort: 61000, Proto: c.proto, Addr: webAddr, Port: 81}))
			attacker := nb.addEndpoint(t, netip.MustParseAddr("172.17.0.3"))

			for _, a := range []struct {
				sport, published uint16
				client           netip.AddrPort
				webPort          uint16
			}{
				{8080, 8080, ap(clientAddr, 40000), 80},   // its own port, published
				{61000, 61000, ap(clientAddr, 40001), 81}, // its own port, published, in the NAT range
			} {
				ret, out := nb.runOn(t, nb.dp.Endpoint.FromContainer, segment(c.proto, ap(attacker.addr, a.sport), a.client, false), attacker.ifindex)
				if ret == tcActRedirect {
					if got := verify(t, out); got.src.Port() == a.published {
						t.Errorf("the attacker's flow from port %d left as %s, a published tuple", a.sport, got.src)
					}
				}
				// The client's next flow to the published port reaches web.
				ret, out = nb.run(t, nb.dp.Uplink.UplinkIngress, segment(c.proto, a.client, ap(hostAddr, a.published), false))
				if got := verify(t, out); ret != tcActRedirect || got.dst != ap(webAddr, a.webPort) {
					t.Errorf("%s to the published port %d: verdict %d, to %s; want it published to %s", a.client, a.published, ret, got.dst, ap(webAddr, a.webPort))
				}
			}
			// The search, too: 61001 is taken (by the flow above), 61000
			// is free in conntrack but published; nothing is left.
			client := ap(clientAddr, 40001)
			ret, out := nb.runOn(t, nb.dp.Endpoint.FromContainer, segment(c.proto, ap(attacker.addr, 61001), client, false), attacker.ifindex)
			if ret != tcActShot {
				t.Errorf("with the one NAT port left published: verdict %d, from %s; want drop_no_nat_port", ret, verify(t, out).src)
			}
			ret, out = nb.run(t, nb.dp.Uplink.UplinkIngress, segment(c.proto, client, ap(hostAddr, 61000), false))
			if got := verify(t, out); ret != tcActRedirect || got.dst != ap(webAddr, 81) {
				t.Errorf("%s to the published port 61000: verdict %d, to %s; want it published to %s", client, ret, got.dst, ap(webAddr, 81))
			}
		})
	}
}

// A masqueraded flow keeps its own source port when it is free, as with
// netfilter, though the host may pick the same port for a connection of
// its own to the same server later: then the replies of that tuple are
// the host connection's, never redirected into the sandbox.
func TestHostConnectionOwnsItsReplies(t *testing.T) {
	for _, c := range []struct {
		name     string
		proto    uint8
		sockType int
	}{{"tcp", 6, syscall.SOCK_STREAM}, {"udp", 17, syscall.SOCK_DGRAM}} {
		t.Run(c.name, func(t *testing.T) {
			nb := newNATBedWith(t, loader.Options{NATPortMin: 61000, NATPortMax: 65535})
			server := ap(clientAddr, 7777)
			got := nb.mustVerdict(t, "flow from 61234", nb.dp.Endpoint.FromContainer, segment(c.proto, ap(webAddr, 61234), server, false), 0, tcActRedirect)
			if got.src != ap(hostAddr, 61234) {
				t.Errorf("a flow from 61234, in the NAT range, left from %s; want its own port kept", got.src)
			}
			got = nb.mustVerdict(t, "flow from 33000", nb.dp.Endpoint.FromContainer, segment(c.proto, ap(webAddr, 33000), server, false), 0, tcActRedirect)
			if got.src != ap(hostAddr, 33000) {
				t.Errorf("a flow from 33000 left from %s; want its own port kept", got.src)
			}
			// Until the host has a connection on that tuple, its replies
			// are the sandbox's.
			if ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, segment(c.proto, server, ap(hostAddr, 33000), false)); ret != tcActRedirect || verify(t, out).dst != ap(webAddr, 33000) {
				t.Fatalf("the server's reply to the sandbox's flow: verdict %d; want it redirected to the sandbox", ret)
			}

			// Later the host connects from 33000 to the same server: its
			// reply is the host's.
			var fd int
			must(t, namespace.Do(nb.ns, func() error {
				var err error
				if fd, err = syscall.Socket(syscall.AF_INET, c.sockType|syscall.SOCK_NONBLOCK, 0); err != nil {
					return err
				}
				if err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: 33000, Addr: hostAddr.As4()}); err != nil {
					return err
				}
				if err = syscall.Connect(fd, &syscall.SockaddrInet4{Port: int(server.Port()), Addr: server.Addr().As4()}); err != nil && err != syscall.EINPROGRESS {
					return fmt.Errorf("connect: %w", err)
				}
				return nil
			}))
			defer syscall.Close(fd)
			reply := segment(c.proto, server, ap(hostAddr, 33000), false)
			if c.proto == 6 {
				reply = tcpSegment(server, ap(hostAddr, 33000), syn|ack, 1000, 1)
			}
			if ret, out := nb.run(t, nb.dp.Uplink.UplinkIngress, reply); ret != tcActUnspec {
				t.Errorf("the server's reply to the host's connection from 33000: verdict %d, to %s; want it left to the host", ret, verify(t, out).dst)
			}
		})
	}
}

// fillNATRange makes every port of the range but those in free live
// towards dst, as flows of someone else would.
func fillNATRange(t *testing.T, nb *natbed, proto uint8, dst netip.AddrPort, min, max uint16, free func(uint16) bool) {
	t.Helper()
	live := bpf.DatapathCtEntry{Expires: uint64(maps.Now() + time.Hour)}
	var keys []bpf.DatapathFlow
	for port := uint32(min); port <= uint32(max); port++ {
		if !free(uint16(port)) {
			keys = append(keys, flowOf(proto, dst, ap(hostAddr, uint16(port))))
		}
	}
	vals := make([]bpf.DatapathCtEntry, len(keys))
	for i := range vals {
		vals[i] = live
	}
	if _, err := nb.dp.Maps.Ct.BatchUpdate(keys, vals, nil); err != nil {
		t.Fatal(err)
	}
}

// The NAT port search costs bounded work per packet, as netfilter's: 128
// ports from a random one, then ever smaller windows from random ones,
// 249 tries at most with the flow's own port. With the range towards one
// destination full but for a few ports, a flow may then be refused
// (drop_no_nat_port) though a port is free: that is the price of the
// bound, paid only when the range is nearly full.
func TestNATPortSearchIsBounded(t *testing.T) {
	nb := newNATBedWith(t, loader.Options{NATPortMin: 61000, NATPortMax: 65535}) // 4,536 ports
	dst := ap(clientAddr, 443)
	fillNATRange(t, nb, 6, dst, 61000, 65535, func(p uint16) bool { return p == 61500 || p == 63000 || p == 65000 })
	refused := 0
	for i := range 16 {
		before := nb.counter(t, "from_container", "nat_port_collision")
		dropsBefore := nb.counter(t, "from_container", "drop_no_nat_port")
		ret, out := nb.run(t, nb.dp.Endpoint.FromContainer, tcpSegment(ap(webAddr, 61000), dst, syn, uint32(i), 0))
		// Each flow comes from 61000, a port of the range that is taken.
		tries := nb.counter(t, "from_container", "nat_port_collision") - before
		if tries > natSearchMaxTries {
			t.Errorf("SYN %d tried %d ports; want at most %d", i, tries, natSearchMaxTries)
		}
		if ret == tcActShot {
			refused++
			if nb.counter(t, "from_container", "drop_no_nat_port") != dropsBefore+1 {
				t.Errorf("SYN %d refused but not counted as drop_no_nat_port", i)
			}
		} else if ret != tcActRedirect {
			t.Fatalf("SYN %d: verdict %d", i, ret)
		} else {
			// The port it found is free again for the next SYN.
			nb.expire(t, flowOf(6, dst, verify(t, out).src))
		}
		// The next SYN, a new flow from the same port, searches again.
		nb.expire(t, flowOf(6, ap(webAddr, 61000), dst))
	}
	if refused == 0 {
		t.Error("all 16 SYNs found one of 3 free ports among 4,536: the search went through the whole range")
	}
	t.Logf("%d of 16 SYNs refused with 3 of 4,536 ports free", refused)
}

// A range nine tenths full towards one destination still gives every new
// flow a port at once: the bound costs nothing until the range is nearly
// full.
func TestNATPortSearchFindsPortsInAFullishRange(t *testing.T) {
	nb := newNATBedWith(t, loader.Options{NATPortMin: 61000, NATPortMax: 65535})
	dst := ap(clientAddr, 53)
	fillNATRange(t, nb, 17, dst, 61000, 65535, func(uint16) bool { return randUint()%10 == 0 })
	// The flows' own ports are taken too: each searches the range.
	fillNATRange(t, nb, 17, dst, 40000, 40063, func(uint16) bool { return false })
	for i := range 64 {
		src := ap(webAddr, 40000+uint16(i))
		got := nb.mustVerdict(t, fmt.Sprintf("flow %d", i), nb.dp.Endpoint.FromContainer, segment(17, src, dst, false), 0, tcActRedirect)
		if got.src.Addr() != hostAddr || got.src.Port() < 61000 {
			t.Fatalf("flow %d left from %s; want a port of the NAT range", i, got.src)
		}
	}
	if d := nb.counter(t, "from_container", "drop_no_nat_port"); d != 0 {
		t.Errorf("%d flows found no port", d)
	}
}
