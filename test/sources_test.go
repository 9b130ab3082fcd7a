package test

import (
	"strings"
	"syscall"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// A publication's source lists decide who reaches it from outside, over
// TC and over XDP uplinks, in both families: the most specific prefix
// wins, and with an allowed prefix everyone else is refused, counted as
// drop_source_range and shown by monitor. Changing the lists applies to
// new flows at once while established ones go on; host processes are the
// host's own and reach the port whatever the lists say.
func TestPublishSourceLists(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct{ name, program string }{{"tc", "uplink"}, {"xdp", "uplink_xdp"}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			var out testbed.Outside
			h := testbed.NewHostWith(t, func(h *testbed.Host) {
				out = h.AddOutside()
				checksumOffload(t, h, out, false)
				outName := strings.TrimPrefix(out.NS, "/run/netns/")
				for _, a := range []string{"10.99.0.5/24", "10.99.0.20/24"} {
					h.MustRun("ip", "-n", outName, "addr", "add", a, "dev", "eth0")
				}
				h.MustRun("ip", "-n", outName, "addr", "add", "2001:db8:99::20/64", "dev", "eth0", "nodad")
			}, "--uplink-mode", mode.name)
			netName, web := h.Name("net"), h.Name("web")
			h.MustCLI("network", "create", "--ipv6", netName)
			h.MustCLI("sandbox", "create", web, "--network", netName, "-p", "8080:7777", "-p", "8080:7777/udp")
			testbed.ServeOn(t, h.NS(web), 7777)
			four, six := hostIP+":8080", "["+out.HostIP6+"]:8080"
			mustWork(t, "tcp from 10.99.0.20 before any list", echoFrom(out.NS, "tcp", four, "10.99.0.20:0"))

			// Lists given to ports published already take their place.
			got := h.MustCLI("publish", "--allow", "10.99.0.0/28", "--allow", "2001:db8:99::/124", "--deny", "10.99.0.2",
				"8080:7777", "8080:7777/udp", web)
			if !strings.Contains(got, "allow 10.99.0.0/28,2001:db8:99::/124 deny 10.99.0.2/32") {
				t.Errorf("publish printed %q, want the lists", got)
			}
			if port := h.MustCLI("port", web); strings.Count(port, "allow 10.99.0.0/28,2001:db8:99::/124 deny 10.99.0.2/32") != 2 {
				t.Errorf("ebpfnet port shows:\n%s\nwant the lists on both bindings", port)
			}
			m := startMonitor(t, h, "--type", "drop")
			waitMonitoring(t, h, "drop")
			refused := h.ProgramCounter(mode.program, "drop_source_range")
			for _, c := range []struct {
				network, addr, local string
				open                 bool
			}{
				{"tcp", four, "10.99.0.5:0", true},
				{"udp", four, "10.99.0.5:0", true},
				{"tcp", four, "10.99.0.2:0", false},  // denied, more specific than the allow
				{"tcp", four, "10.99.0.20:0", false}, // in no allowed prefix
				{"udp", four, "10.99.0.20:0", false},
				{"tcp", six, "[2001:db8:99::2]:0", true},
				{"tcp", six, "[2001:db8:99::20]:0", false},
			} {
				err := echoFrom(out.NS, c.network, c.addr, c.local)
				if c.open && err != nil {
					t.Errorf("%s from %s to %s: %v, want it let in", c.network, c.local, c.addr, err)
				} else if !c.open && err == nil {
					t.Errorf("%s from %s to %s was let in, want it refused", c.network, c.local, c.addr)
				}
			}
			// A refused TCP client sends its SYN again while it waits: at
			// least one drop per refused attempt.
			if n := h.ProgramCounter(mode.program, "drop_source_range") - refused; n < 4 {
				t.Errorf("%s/drop_source_range counted %d, want at least one per refused attempt (4)", mode.program, n)
			}
			m.waitFor(t, "a drop_source_range event", func(ev api.Event) bool {
				return ev.Verdict == "drop_source_range" && ev.Program == mode.program && strings.HasPrefix(ev.Before.Src, "10.99.0.2")
			})

			// The host's own processes are not checked.
			mustWork(t, "tcp from the host to 127.0.0.1:8080", echoFrom(h.NetNS, "tcp", "127.0.0.1:8080", ""))

			// New lists: the connection let in goes on, new ones follow them.
			c, err := testbed.Dial(out.NS, "tcp", four, "10.99.0.5:0")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := testbed.Peer(c); err != nil {
				t.Fatal(err)
			}
			h.MustCLI("publish", "--allow", "192.0.2.0/24", "8080:7777", web)
			if _, err := testbed.Peer(c); err != nil {
				t.Errorf("the connection let in before the lists changed: %v, want it to go on", err)
			}
			if err := echoFrom(out.NS, "tcp", four, "10.99.0.5:0"); err == nil {
				t.Error("a new connection from 10.99.0.5 was let in after its prefix left the lists")
			}
			if err := echoFrom(out.NS, "udp", four, "10.99.0.5:0"); err != nil {
				t.Errorf("udp from 10.99.0.5, whose lists did not change: %v", err)
			}

			// Bad lists are refused in one line naming the value, and change
			// nothing.
			for _, bad := range [][]string{
				{"--allow", "10.99.0.1/24"},
				{"--allow", "10.0.0.0/8", "--deny", "10.0.0.0/8"},
				{"--deny", "lan"},
			} {
				before := h.MustCLI("port", web)
				msg, err := h.CLI(append(append([]string{"publish"}, bad...), "8080:7777", web)...)
				if err == nil || strings.Contains(strings.TrimSpace(msg), "\n") {
					t.Errorf("publish %v: %v %q, want one line refusing it", bad, err, msg)
				}
				if after := h.MustCLI("port", web); after != before {
					t.Errorf("publish %v changed the ports:\n%s\nto\n%s", bad, before, after)
				}
			}
		})
	}
}

// The daemon's lists hold for the ports published without lists of their
// own or of their network; a network's lists (its ebpfnet.publish.allow
// and .deny options) for the ports published on it without lists of
// their own; and a sandbox reaching a published port (hairpin) is checked
// as a client outside is.
func TestPublishSourceListsByDefault(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t, "--publish-allow", "10.99.0.0/24", "--publish-deny", "10.99.0.2")
	plain, lan := h.Name("plain"), h.Name("lan")
	h.MustCLI("network", "create", plain)
	h.MustCLI("network", "create", "-o", "ebpfnet.publish.allow=10.99.0.2/32,"+"172.16.0.0/12", lan)
	a, b, c := h.Name("a"), h.Name("b"), h.Name("c")
	h.MustCLI("sandbox", "create", a, "--network", plain, "-p", "8080:7777")
	h.MustCLI("sandbox", "create", b, "--network", lan, "-p", "8081:7777")
	h.MustCLI("sandbox", "create", c, "--network", plain, "-p", "8082:7777", "--publish-allow", "0.0.0.0/0")
	for _, sb := range []string{a, b, c} {
		testbed.ServeOn(t, h.NS(sb), 7777)
	}
	outName := strings.TrimPrefix(out.NS, "/run/netns/")
	h.MustRun("ip", "-n", outName, "addr", "add", "10.99.0.5/24", "dev", "eth0")
	for _, c := range []struct {
		port, local string
		open        bool
	}{
		{"8080", "10.99.0.5:0", true},  // the daemon's allow
		{"8080", "10.99.0.2:0", false}, // the daemon's deny
		{"8081", "10.99.0.2:0", true},  // its network's allow
		{"8081", "10.99.0.5:0", false}, // not in its network's
		{"8082", "10.99.0.2:0", true},  // its own
	} {
		err := echoFrom(out.NS, "tcp", hostIP+":"+c.port, c.local)
		if c.open != (err == nil) {
			t.Errorf("from %s to port %s: %v, want open %v", c.local, c.port, err, c.open)
		}
	}
	// b's network lets sandboxes in (172.16.0.0/12), a's does not.
	if err := echoFrom(h.NS(b), "tcp", hostIP+":8081", ""); err != nil {
		t.Errorf("%s to its own port by hairpin: %v", b, err)
	}
	if err := echoFrom(h.NS(a), "tcp", hostIP+":8080", ""); err == nil {
		t.Errorf("%s reached its own port by hairpin, which the daemon's lists refuse", a)
	}
	if n := h.ProgramCounter("from_container", "drop_source_range"); n == 0 {
		t.Error("from_container/drop_source_range counted no refused hairpin")
	}
	// The lists survive a restart of the daemon.
	h.Stop(syscall.SIGTERM)
	h.Start()
	if err := echoFrom(out.NS, "tcp", hostIP+":8080", "10.99.0.2:0"); err == nil {
		t.Error("after a restart, 10.99.0.2 reached port 8080, which the daemon's deny refuses")
	}
	if err := echoFrom(out.NS, "tcp", hostIP+":8081", "10.99.0.2:0"); err != nil {
		t.Errorf("after a restart, 10.99.0.2 to port 8081: %v", err)
	}
}
