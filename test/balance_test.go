package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// serveName serves, on TCP port in the namespace at ns, its name: each
// connection gets it first, then an echo of what it sends, until the
// test ends.
func serveName(t *testing.T, ns string, port int, name string) {
	t.Helper()
	testbed.ServeTCP(t, ns, "tcp", port, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Minute)) // a long-lived connection's
		if _, err := io.WriteString(c, name+"\n"); err == nil {
			io.Copy(c, c)
		}
	})
}

// nameOf reads the name a serveName server sends first.
func nameOf(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// spread opens n connections to addr from the namespace at ns, each from
// one of the local addresses in turn ("" for the kernel's), and counts
// the backends that answered; a connection that fails is an error.
func spread(t *testing.T, ns, addr string, locals []string, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	failed := 0
	for i := range n {
		local := locals[i%len(locals)]
		c, err := testbed.Dial(ns, "tcp", addr, local)
		if err == nil {
			var name string
			name, err = nameOf(c)
			c.Close()
			got[name]++
		}
		if err != nil {
			if failed++; failed <= 3 {
				t.Errorf("connection %d to %s from %q: %v", i, addr, local, err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d connections to %s failed", failed, n, addr)
	}
	return got
}

// wantShares fails unless each of names got a share of n within 5
// points of its due, and nobody else any.
func wantShares(t *testing.T, what string, got map[string]int, names []string, n int) {
	t.Helper()
	t.Logf("%s: %v of %d", what, got, n)
	due := 1 / float64(len(names))
	for _, name := range names {
		if share := float64(got[name]) / float64(n); share < due-0.05 || share > due+0.05 {
			t.Errorf("%s: %s got %.1f%% of %d connections, want %.1f%% ± 5 points (%v)", what, name, 100*share, n, 100*due, got)
		}
	}
	if len(got) != len(names) {
		t.Errorf("%s: connections went to %v, want %v alone", what, got, names)
	}
}

// balancedBed is a host (with an XDP uplink when xdp) whose outside has
// eleven addresses, locals, and three sandboxes, webs, on netName, each
// serving its name on 7777 and publishing 8080:7777 with --balance.
func balancedBed(t *testing.T, xdp bool) (h *testbed.Host, out testbed.Outside, locals []string, netName string, webs []string) {
	t.Helper()
	var flags []string
	if xdp {
		flags = []string{"--uplink-mode", "xdp"}
	}
	locals = []string{"10.99.0.2:0"}
	h = testbed.NewHostWith(t, func(h *testbed.Host) {
		out = h.AddOutside()
		if xdp {
			checksumOffload(t, h, out, false)
		}
		outName := strings.TrimPrefix(out.NS, "/run/netns/")
		for i := 10; i < 20; i++ {
			h.MustRun("ip", "-n", outName, "addr", "add", fmt.Sprintf("10.99.0.%d/24", i), "dev", "eth0")
			locals = append(locals, fmt.Sprintf("10.99.0.%d:0", i))
		}
	}, flags...)
	netName = h.Name("net")
	h.MustCLI("network", "create", netName)
	for _, s := range []string{"web1", "web2", "web3"} {
		web := h.Name(s)
		h.MustCLI("sandbox", "create", web, "--network", netName)
		serveName(t, h.NS(web), 7777, web)
		if got := h.MustCLI("publish", "--balance", "8080:7777", web); !strings.Contains(got, "balanced") {
			t.Errorf("publish --balance printed %q, want the binding balanced", got)
		}
		webs = append(webs, web)
	}
	return h, out, locals, netName, webs
}

// Three sandboxes publishing 8080 with --balance share it: connections
// from outside (from several addresses) and from host processes
// (127.0.0.1, through the socket hooks) spread over the three, each a
// third within 5 points; a second publisher without --balance is refused
// in one line. A backend unpublished takes no new connection while its
// established one goes on; the daemon's kill -9 and restart keeps the
// port, its backends and the connections.
func TestBalancedPort(t *testing.T) {
	t.Parallel()
	h, out, locals, netName, webs := balancedBed(t, false)
	other := h.Name("other")
	h.MustCLI("sandbox", "create", other, "--network", netName)
	msg, err := h.CLI("publish", "8080:7777", other)
	if err == nil || !strings.Contains(msg, "8080") || strings.Contains(strings.TrimSpace(msg), "\n") {
		t.Errorf("publishing 8080 without --balance: %v %q, want one line naming 8080", err, msg)
	}
	if port := h.MustCLI("port", webs[0]); !strings.Contains(port, strings.Join([]string{webs[0] + ":7777", webs[1] + ":7777", webs[2] + ":7777"}, ",")) {
		t.Errorf("ebpfnet port %s shows:\n%s\nwant the three backends", webs[0], port)
	}

	const n = 3000
	four := hostIP + ":8080"
	outside := spread(t, out.NS, four, locals, n)
	wantShares(t, "from outside", outside, webs, n)
	// The datapath counts each backend's new flows; host processes'
	// connections are the socket hooks', which count none.
	metrics := scrape(t, h)
	for _, web := range webs {
		backend := net.JoinHostPort(h.IP(web, netName), "7777")
		if got := value(metrics, "ebpfnet_backend_flows_total", map[string]string{"backend": backend, "proto": "tcp"}); got != float64(outside[web]) {
			t.Errorf("ebpfnet_backend_flows_total of %s (%s) is %v, want %d", web, backend, got, outside[web])
		}
	}
	wantBackendStatus(t, h, netName, webs, outside)
	wantShares(t, "from the host to 127.0.0.1", spread(t, h.NetNS, "127.0.0.1:8080", []string{""}, n), webs, n)

	// A long-lived connection to the backend about to leave.
	var long net.Conn
	for i := 0; long == nil && i < 30; i++ {
		c, err := testbed.Dial(out.NS, "tcp", four, locals[i%len(locals)])
		if err != nil {
			t.Fatal(err)
		}
		if name, err := nameOf(c); err == nil && name == webs[2] {
			long = c
			continue
		}
		c.Close()
	}
	if long == nil {
		t.Fatalf("no connection of 30 reached %s", webs[2])
	}
	defer long.Close()
	echo := func(what string) {
		t.Helper()
		long.SetDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.WriteString(long, "ping"); err != nil {
			t.Errorf("%s: the established connection to %s: %v", what, webs[2], err)
		} else if _, err := io.ReadFull(long, buf); err != nil || string(buf) != "ping" {
			t.Errorf("%s: the established connection to %s answered %q, %v", what, webs[2], buf, err)
		}
	}
	h.MustCLI("unpublish", "8080", webs[2])
	echo("after its backend was unpublished")
	wantShares(t, "from outside, one backend gone", spread(t, out.NS, four, locals, n), webs[:2], n)
	wantShares(t, "from the host, one backend gone", spread(t, h.NetNS, "127.0.0.1:8080", []string{""}, n), webs[:2], n)

	h.Stop(syscall.SIGKILL)
	echo("with the daemon down")
	h.Start()
	echo("after the daemon's restart")
	if port := h.MustCLI("port", webs[0]); !strings.Contains(port, webs[0]+":7777,"+webs[1]+":7777 ") && !strings.HasSuffix(strings.TrimSpace(port), webs[0]+":7777,"+webs[1]+":7777") {
		t.Errorf("after the restart, ebpfnet port %s shows:\n%s\nwant the two backends left", webs[0], port)
	}
	wantShares(t, "from outside, after the restart", spread(t, out.NS, four, locals, n), webs[:2], n)

	// The last backends' removal frees the port.
	h.MustCLI("sandbox", "rm", "-f", webs[0])
	wantShares(t, "from outside, one backend left", spread(t, out.NS, four, locals, 30), webs[1:2], 30)
	h.MustCLI("unpublish", "8080", webs[1])
	mustFail(t, "outside to 8080 once no sandbox publishes it", echoFrom(out.NS, "tcp", four, ""))
	h.MustCLI("publish", "8080:7777", other)
}

// wantBackendStatus fails unless ebpfnet status shows, for each of webs,
// its backend (ADDR:7777 on netName) in its sandbox with the new flows
// it took.
func wantBackendStatus(t *testing.T, h *testbed.Host, netName string, webs []string, flows map[string]int) {
	t.Helper()
	var st api.Status
	if err := json.Unmarshal([]byte(h.MustCLI("status", "-o", "json")), &st); err != nil {
		t.Fatalf("status -o json: %v", err)
	}
	text := h.MustCLI("status")
	for _, web := range webs {
		backend := net.JoinHostPort(h.IP(web, netName), "7777")
		want := api.BackendFlows{Backend: backend, Sandbox: web, Proto: "tcp", Flows: uint64(flows[web])}
		if !slices.Contains(st.BackendFlows, want) {
			t.Errorf("status shows backends %+v, want %+v among them", st.BackendFlows, want)
		}
		if row := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(web) + `\s+` + regexp.QuoteMeta(backend+"/tcp") + `\s+` + fmt.Sprint(flows[web]) + `$`); !row.MatchString(text) {
			t.Errorf("ebpfnet status shows:\n%s\nwant a row for %s's backend %s with %d new flows", text, web, backend, flows[web])
		}
	}
}

// On an XDP uplink the native program chooses the backend of a
// connection from outside as TC does: three backends a third each within
// 5 points, every one DNAT'd by the XDP program, and a backend
// unpublished takes no new connection.
func TestBalancedPortOnXDP(t *testing.T) {
	t.Parallel()
	h, out, locals, netName, webs := balancedBed(t, true)
	const n = 1500
	four := hostIP + ":8080"
	dnat := h.ProgramCounter("uplink_xdp", "dnat")
	got := spread(t, out.NS, four, locals, n)
	wantShares(t, "from outside through XDP", got, webs, n)
	if d := h.ProgramCounter("uplink_xdp", "dnat") - dnat; d < n {
		t.Errorf("uplink_xdp counted %d dnat, want at least one per connection (%d)", d, n)
	}
	wantBackendStatus(t, h, netName, webs, got)
	h.MustCLI("unpublish", "8080", webs[0])
	wantShares(t, "from outside through XDP, one backend gone", spread(t, out.NS, four, locals, n), webs[1:], n)
}

// docker compose up --scale web=3 with ports ["8080:7777"], as Docker
// does it: three containers run with -p 8080:7777 on a network created
// with -o ebpfnet.balance=true share the host port, and connections from
// outside spread over the three; on a network without the option a
// second container is refused the port.
func TestDockerBalancedPort(t *testing.T) {
	t.Parallel()
	h, out, d := dockerHost(t)
	d.MustCLI("network", "create", "-d", h.Prefix, "-o", "ebpfnet.balance=true", "scaled")
	var webs []string
	for _, name := range []string{"web-1", "web-2", "web-3"} {
		d.MustCLI("run", "-d", "--name", name, "--network", "scaled", "-p", "8080:7777", "busybox", "sleep", "600")
		serveName(t, d.MustCLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", name), 7777, name)
		webs = append(webs, name)
	}
	const n = 1500
	wantShares(t, "from outside", spread(t, out.NS, hostIP+":8080", []string{""}, n), webs, n)
	if got := endpointOf(t, h, d, "web-1", "scaled").NetworkSettings.Ports["7777/tcp"]; len(got) != 1 || len(got[0].Backends) != 3 {
		t.Errorf("web-1's publication %+v, want its three backends", got)
	}
	d.MustCLI("network", "create", "-d", h.Prefix, "single")
	d.MustCLI("run", "-d", "--name", "solo-1", "--network", "single", "-p", "8090:7777", "busybox", "sleep", "600")
	if msg, err := d.CLI("run", "-d", "--name", "solo-2", "--network", "single", "-p", "8090:7777", "busybox", "sleep", "600"); err == nil || !strings.Contains(msg, "8090") {
		t.Errorf("a second container publishing 8090 without balance: %v %s, want refused naming 8090", err, msg)
	}
	d.MustCLI("rm", "-f", "web-3")
	wantShares(t, "from outside, web-3 gone", spread(t, out.NS, hostIP+":8080", []string{""}, n), webs[:2], n)
}

// CNI containers whose plugin configuration says "publishBalance": true
// share the host port their portMappings name, as publish --balance
// does, in main mode and chained after the reference ptp plugin, and
// CHECK finds each one's backend there; one whose configuration does not
// is refused the port, and a DEL takes its container out.
func TestCNIBalancedPort(t *testing.T) {
	t.Parallel()
	for _, chained := range []bool{false, true} {
		t.Run(map[bool]string{false: "main", true: "chained"}[chained], func(t *testing.T) {
			t.Parallel()
			h, out := newPublishingHost(t)
			c := newCNI(t)
			h.MustCLI("network", "create", "--subnet", "10.97.0.0/24", h.Name("cninet"))
			conflist := func(name, subnet string, balance bool) {
				if !chained {
					c.Conflist(name, map[string]any{"type": "ebpfnet", "network": h.Name("cninet"), "socket": h.Socket(),
						"publishBalance": balance, "capabilities": map[string]bool{"portMappings": true}})
					return
				}
				c.In = filepath.Base(h.NetNS) // ptp builds in the namespace it runs in
				c.Spec = "1.0.0"              // the reference plugins' newest
				plugins := ptpPlugins(t, h, subnet)
				plugins[len(plugins)-1]["publishBalance"] = balance
				c.Conflist(name, plugins...)
			}
			conflist("bal", "10.93.0.0/24", true)
			conflist("plain", "10.93.1.0/24", false)
			var names []string
			nss := map[string]string{}
			for _, name := range []string{"c1", "c2", "c3"} {
				ns := containerNS(t, h, name)
				c.Must("add", "bal", ns, testbed.PortMappings("8080:7777/tcp"))
				serveName(t, ns, 7777, name)
				names, nss[name] = append(names, name), ns
			}
			const n = 1500
			wantShares(t, "from outside", spread(t, out.NS, hostIP+":8080", []string{""}, n), names, n)
			if msg, err := c.Run("add", "plain", containerNS(t, h, "c4"), testbed.PortMappings("8080:7777/tcp")); err == nil || !strings.Contains(msg, "8080") {
				t.Errorf("ADD of 8080 without publishBalance: %v %s, want refused naming 8080", err, msg)
			}
			// CHECK finds each container's backend in the shared port.
			for _, name := range names {
				c.Must("check", "bal", nss[name], testbed.PortMappings("8080:7777/tcp"))
			}
			c.Must("del", "bal", nss["c3"])
			wantShares(t, "from outside, c3 deleted", spread(t, out.NS, hostIP+":8080", []string{""}, n), names[:2], n)
		})
	}
}
