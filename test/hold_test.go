package test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// thiefEnv turns the test binary into a host process that tries to take
// ports: see thief.
const thiefEnv = "EBPFNET_TEST_THIEF"

func TestMain(m *testing.M) {
	if spec := os.Getenv(thiefEnv); spec != "" {
		os.Exit(thief(spec))
	}
	code := m.Run()
	testbed.RemoveBuilds()
	os.Exit(code)
}

// thief drops root for the user and group spec names ("UID:GID"), then
// tries to bind each proto/address:port that follows, plainly and with
// SO_REUSEADDR and SO_REUSEPORT set, and prints what each attempt got: ok
// or the errno's name.
func thief(spec string) int {
	fields := strings.Fields(spec)
	var uid, gid int
	if _, err := fmt.Sscanf(fields[0], "%d:%d", &uid, &gid); err != nil {
		fmt.Fprintf(os.Stderr, "thief: bad user %q: %v\n", fields[0], err)
		return 2
	}
	// Go applies these to every thread of the process.
	if err := errors.Join(syscall.Setgroups(nil), syscall.Setgid(gid), syscall.Setuid(uid)); err != nil || os.Geteuid() != uid {
		fmt.Fprintf(os.Stderr, "thief: become %d:%d: %v\n", uid, gid, err)
		return 2
	}
	for _, target := range fields[1:] {
		proto, addr, _ := strings.Cut(target, "/")
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "thief: bad target %q\n", target)
			return 2
		}
		for _, reuse := range []bool{false, true} {
			fmt.Printf("%s %s %s\n", target, bindMode(reuse), tryBind(proto, ap, reuse))
		}
	}
	return 0
}

func bindMode(reuse bool) string {
	if reuse {
		return "reuse"
	}
	return "plain"
}

func tryBind(proto string, ap netip.AddrPort, reuse bool) string {
	typ := unix.SOCK_STREAM
	if proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	family := unix.AF_INET
	var sa unix.Sockaddr
	if ap.Addr().Is6() { // [::] or ::ffff:a.b.c.d: an IPv6 socket takes IPv4 ports too
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}
	} else {
		sa = &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return unix.ErrnoName(err.(unix.Errno))
	}
	defer unix.Close(fd)
	if reuse {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return unix.ErrnoName(err.(unix.Errno))
	}
	if typ == unix.SOCK_STREAM {
		if err := unix.Listen(fd, 1); err != nil {
			return "listen " + unix.ErrnoName(err.(unix.Errno))
		}
	}
	return "ok"
}

// bindAsNobody runs a process of user nobody in the host namespace that
// tries to bind each target ("tcp/0.0.0.0:8080"), and returns what each
// attempt got, by "target mode".
func bindAsNobody(t *testing.T, h *testbed.Host, targets ...string) map[string]string {
	t.Helper()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), thiefEnv+"="+nobody.Uid+":"+nobody.Gid+" "+strings.Join(targets, " "))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// The child starts on this thread, so in the host namespace.
	if err := namespace.Do(h.NetNS, cmd.Run); err != nil {
		t.Fatalf("bind as nobody: %v\n%s", err, stderr.String())
	}
	got := map[string]string{}
	for line := range strings.Lines(stdout.String()) {
		f := strings.Fields(line)
		got[f[0]+" "+f[1]] = f[2]
	}
	if len(got) != 2*len(targets) {
		t.Fatalf("bind as nobody: %d answers for %d targets:\n%s%s", len(got), len(targets), stdout.String(), stderr.String())
	}
	return got
}

// mustBeHeld fails unless user nobody's every bind of targets is refused
// by the bind hook (EPERM).
func mustBeHeld(t *testing.T, h *testbed.Host, targets ...string) {
	t.Helper()
	got := bindAsNobody(t, h, targets...)
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if got[k] != "EPERM" {
			t.Errorf("nobody's bind %s: %s, want EPERM", k, got[k])
		}
	}
}

// mustBeFree fails unless user nobody can bind (and for TCP listen on)
// each of targets.
func mustBeFree(t *testing.T, h *testbed.Host, targets ...string) {
	t.Helper()
	got := bindAsNobody(t, h, targets...)
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if got[k] != "ok" {
			t.Errorf("nobody's bind %s: %s, want it to work", k, got[k])
		}
	}
}

func TestPublishedPortsAreHeld(t *testing.T) {
	t.Parallel()
	h, out := newPublishingHost(t)
	web, other := h.Name("web"), h.Name("other")
	h.MustCLI("sandbox", "create", web, "-p", "8080:7777", "-p", "8080:7777/udp", "-p", "127.0.0.1:8081:7777")
	h.MustCLI("sandbox", "create", other)
	testbed.Serve(t, h.NS(web))

	// No local user can take a published port, on any address.
	held := []string{"tcp/0.0.0.0:8080", "tcp/" + hostIP + ":8080", "tcp/127.0.0.1:8080",
		"udp/0.0.0.0:8080", "udp/" + hostIP + ":8080", "udp/127.0.0.1:8080", "tcp/127.0.0.1:8081", "tcp/0.0.0.0:8081",
		"tcp/[::]:8080", "udp/[::]:8080", "tcp/[::ffff:" + hostIP + "]:8080", "tcp/[::ffff:127.0.0.1]:8081", "tcp/[::]:8081"}
	refused := h.ProgramCounter("socket", "drop_port_held")
	mustBeHeld(t, h, held...)
	if n := h.ProgramCounter("socket", "drop_port_held") - refused; n != uint64(2*len(held)) {
		t.Errorf("the bind hook counted %d refused binds, want %d", n, 2*len(held))
	}
	// Held, not served: the traffic still goes to the sandbox.
	mustWork(t, "outside to 8080 with the port held", testbed.TCPTo(out.NS, hostIP+":8080"))
	mustWork(t, "udp from outside to 8080 with the port held", testbed.UDPTo(out.NS, hostIP+":8080"))
	mustWork(t, "host to 127.0.0.1:8081 with the port held", testbed.TCPTo(h.NetNS, "127.0.0.1:8081"))
	// What is not published stays free: another port, another protocol,
	// another address of a port published on one address alone, and
	// port 0 (the kernel's choice).
	mustBeFree(t, h, "tcp/0.0.0.0:8083", "udp/127.0.0.1:8081", "tcp/"+hostIP+":8081", "tcp/0.0.0.0:0", "udp/0.0.0.0:0",
		"tcp/[::]:8083", "tcp/[::ffff:"+hostIP+"]:8081")
	// The hook acts in the daemon's namespace alone: a sandbox binds the
	// port for itself.
	for _, target := range []string{"tcp/0.0.0.0:8080", "udp/0.0.0.0:8080"} {
		proto, addr, _ := strings.Cut(target, "/")
		var got string
		namespace.Do(h.NS(other), func() error { got = tryBind(proto, netip.MustParseAddrPort(addr), false); return nil })
		if got != "ok" {
			t.Errorf("bind %s in a sandbox: %s, want it to work", target, got)
		}
	}
	if st := h.Status(); st.HeldPorts != 3 {
		t.Errorf("status: %d host ports held, want 3", st.HeldPorts)
	}
	if st := h.MustCLI("status"); !slices.Contains(strings.Split(st, "\n"), "published host ports held from other binds: 3") {
		t.Errorf("ebpfnet status does not say 3 ports are held:\n%s", st)
	}

	// A failed publish holds nothing: 8095 came before 8080 failed.
	if msg, err := h.CLI("publish", "8095:7777", "8080:7777", other); err == nil || !strings.Contains(msg, "already published") {
		t.Fatalf("publish over a published port: %v %s", err, msg)
	}
	mustBeFree(t, h, "tcp/0.0.0.0:8095")

	// Unpublishing frees the ports, and so does removing the sandbox.
	h.MustCLI("unpublish", "8080", web)
	mustBeFree(t, h, "tcp/0.0.0.0:8080", "tcp/"+hostIP+":8080", "udp/0.0.0.0:8080")
	mustBeHeld(t, h, "tcp/0.0.0.0:8081")
	h.MustCLI("publish", "8090:7777", "8090:7777/udp", other)
	mustBeHeld(t, h, "tcp/0.0.0.0:8090", "udp/0.0.0.0:8090")
	h.MustCLI("sandbox", "rm", other)
	mustBeFree(t, h, "tcp/0.0.0.0:8090", "udp/0.0.0.0:8090")

	// The hook is pinned: a killed daemon holds the ports all the same,
	// and the one that comes back holds them still.
	h.MustCLI("publish", "8080:7777", "8080:7777/udp", web)
	h.Stop(syscall.SIGKILL)
	mustBeHeld(t, h, held...)
	mustWork(t, "outside to 8080 with the daemon dead", testbed.TCPTo(out.NS, hostIP+":8080"))
	h.Start()
	mustBeHeld(t, h, held...)
	mustWork(t, "outside to 8080 after restart", testbed.TCPTo(out.NS, hostIP+":8080"))
	if st := h.Status(); st.HeldPorts != 3 {
		t.Errorf("status after restart: %d host ports held, want 3", st.HeldPorts)
	}
}

// A port a host process has bound cannot be published, however the
// process bound it: the daemon's probe binds without SO_REUSEADDR, which
// a socket that set it would otherwise let share the port.
func TestPublishingAPortInUse(t *testing.T) {
	t.Parallel()
	h, _ := newPublishingHost(t)
	web := h.Name("web")
	h.MustCLI("sandbox", "create", web)
	var fds []int
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	bound := func(typ int, port int, listen bool) {
		t.Helper()
		err := namespace.Do(h.NetNS, func() error {
			fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				return err
			}
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port}); err != nil {
				return err
			}
			if listen {
				return unix.Listen(fd, 1)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	bound(unix.SOCK_STREAM, 8084, true)
	bound(unix.SOCK_STREAM, 8085, false)
	bound(unix.SOCK_DGRAM, 8086, false)
	for _, c := range []struct{ spec, want string }{
		{"8084:7777", "host port 8084/tcp is in use by a process on the host"},
		{hostIP + ":8084:7777", "host port " + hostIP + ":8084/tcp is in use by a process on the host"},
		{"8085:7777", "host port 8085/tcp is in use by a process on the host"},
		{"8086:7777/udp", "host port 8086/udp is in use by a process on the host"},
	} {
		if msg, err := h.CLI("publish", c.spec, web); err == nil || !strings.Contains(msg, c.want) {
			t.Errorf("publish %s over a host socket: %v %q, want %q", c.spec, err, msg, c.want)
		}
	}
	if st := h.Status(); st.HeldPorts != 0 {
		t.Errorf("failed publishes left %d host ports held", st.HeldPorts)
	}
	// Another protocol of a port in use is free.
	h.MustCLI("publish", "8086:7777", web)
}
