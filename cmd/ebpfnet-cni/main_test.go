package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/test/testenv"
)

// daemon answers the API's attachment calls as the daemon would, and
// keeps what it was asked.
type daemon struct {
	api.Engine // the calls the plugin never makes
	attach     api.Attachment
	attached   []api.AttachmentCreate
	checked    []string // CONTAINERID:IFNAME@NETNS
	detached   []api.AttachmentRef
	collected  []api.AttachmentsCollect
	err        error // the answer to every call, when set
}

func (d *daemon) Attach(_ context.Context, req api.AttachmentCreate) (api.Attachment, error) {
	d.attached = append(d.attached, req)
	return d.attach, d.err
}

func (d *daemon) CheckAttachment(_ context.Context, ref api.AttachmentRef, netns string) error {
	d.checked = append(d.checked, ref.ContainerID+":"+ref.IfName+"@"+netns)
	return d.err
}

func (d *daemon) Detach(_ context.Context, ref api.AttachmentRef) error {
	d.detached = append(d.detached, ref)
	return d.err
}

func (d *daemon) CollectAttachments(_ context.Context, req api.AttachmentsCollect) ([]string, error) {
	d.collected = append(d.collected, req)
	return nil, d.err
}

func (d *daemon) Status(context.Context) (api.Status, error) { return api.Status{}, d.err }

// addRouted is ADD in a namespace whose default routes go via the
// gateways the daemon answered.
var addRouted = adder(func(string, net.IP) (bool, error) { return true, nil })

// routedNowhere is a namespace without default routes: a second
// network's.
func routedNowhere(string, net.IP) (bool, error) { return false, nil }

// serve serves d's API on a socket of its own, whose path it returns.
func serve(t testing.TB, d *daemon) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "ebpfnet.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.NewServer(d)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return socket
}

// run calls a command of the plugin as the runtime would, with the
// network configuration conf, and returns what it printed.
func run(t *testing.T, cmd func(*skel.CmdArgs) error, conf string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// Read as it is written: a result beyond the pipe's buffer would
	// block the command for ever.
	read := make(chan []byte)
	go func() {
		out, _ := io.ReadAll(r)
		r.Close()
		read <- out
	}()
	stdout := os.Stdout
	os.Stdout = w
	err = cmd(&skel.CmdArgs{ContainerID: "c1", Netns: "/run/netns/c1", IfName: "eth0", StdinData: []byte(conf)})
	os.Stdout = stdout
	w.Close()
	return string(<-read), err
}

// config is a network configuration of the plugin in spec version v,
// with the daemon at socket.
func config(v, socket, rest string) string {
	return `{"cniVersion":"` + v + `","name":"podnet","type":"ebpfnet","socket":"` + socket + `"` + rest + `}`
}

func TestParse(t *testing.T) {
	conf, _, err := parse([]byte(`{"cniVersion":"1.0.0","name":"podnet","type":"ebpfnet","network":"app",
		"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}],
			"ips":["10.88.0.9/16","fd00:88::9/64"],"mac":"02:42:0a:58:00:09","aliases":{"podnet":["web"],"other":["x"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	rc := conf.RuntimeConfig
	if conf.Network != "app" || conf.Name != "podnet" || conf.Socket != api.DefaultSocket ||
		len(rc.PortMappings) != 1 || rc.PortMappings[0] != (portMapping{HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "127.0.0.1"}) ||
		len(rc.IPs) != 2 || rc.MAC != "02:42:0a:58:00:09" || len(rc.Aliases["podnet"]) != 1 {
		t.Errorf("parsed %+v", conf)
	}
	if _, _, err := parse([]byte(`{"cniVersion":`)); err == nil || !strings.HasPrefix(err.Error(), "parse network configuration: ") {
		t.Errorf("a broken configuration: %v", err)
	}
	// Source lists: prefixes or addresses, an entry may list several.
	conf, _, err = parse([]byte(config("1.0.0", "/s", `,"network":"app","publishAllow":["192.0.2.0/24,2001:db8::/32"],"publishDeny":["192.0.2.7"]`)))
	want := api.Sources{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")},
		Deny: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32")}}
	if err != nil || !reflect.DeepEqual(conf.sources, want) {
		t.Errorf("source lists %+v, %v; want %+v", conf.sources, err, want)
	}
	if _, _, err := parse([]byte(config("1.0.0", "/s", `,"publishDeny":["lan"]`))); err == nil ||
		err.Error() != `publishDeny: invalid prefix "lan": want an address or CIDR such as 192.0.2.0/24` {
		t.Errorf("a bad source list: %v", err)
	}
	// Egress lists: prefixes or addresses; a name is refused, for the
	// runtime resolves names, not ebpfnet.
	conf, _, err = parse([]byte(config("1.0.0", "/s", `,"network":"app","egressAllow":["10.90.0.0/28,2001:db8::/64","192.0.2.7"]`)))
	if err != nil || !slices.Equal(conf.EgressAllow, []string{"10.90.0.0/28", "2001:db8::/64", "192.0.2.7/32"}) {
		t.Errorf("egress list %q, %v", conf.EgressAllow, err)
	}
	for bad, want := range map[string]string{
		"a.test":       `egressAllow: egress rule "a.test": names need ebpfnet's resolver, which CNI containers do not use: give prefixes`,
		"10.90.0.1/28": `egressAllow: egress rule "10.90.0.1/28": has host bits set (did you mean 10.90.0.0/28?)`,
	} {
		if _, _, err := parse([]byte(config("1.0.0", "/s", `,"egressAllow":["`+bad+`"]`))); err == nil || err.Error() != want {
			t.Errorf("egress rule %s: %v", bad, err)
		}
	}
	// A chained plugin gets the result of the plugin before it in the
	// configuration's own spec version.
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		conf, _, err := parse([]byte(config(v, "/s", `,"prevResult":`+string(prevResult(t, v)))))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if conf.Socket != "/s" || conf.PrevResult == nil || conf.PrevResult.Version() != v {
			t.Errorf("%s: socket %q, prevResult %+v", v, conf.Socket, conf.PrevResult)
		}
	}
}

// prevResult is what the bridge plugin hands on in spec version v: the
// bridge, the container's veth on it and its address.
func prevResult(t *testing.T, v string) []byte {
	t.Helper()
	inside := 2
	r := &current.Result{CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: "cni0"}, {Name: "veth1"}, {Name: "eth0", Sandbox: "/run/netns/c1"}},
		IPs: []*current.IPConfig{{Interface: &inside, Address: net.IPNet{IP: net.IPv4(10, 88, 0, 9), Mask: net.CIDRMask(16, 32)},
			Gateway: net.IPv4(10, 88, 0, 1)}}}
	converted, err := r.GetAsVersion(v)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(converted)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Port mappings come one per port of a range, and once per family for a
// port on every address; runtimes pick the host ports.
func TestMappings(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	got, err := mappings([]portMapping{
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp", HostIP: "0.0.0.0"},
		{HostPort: 8080, ContainerPort: 80, HostIP: "::"}, // tcp when none is named
		{HostPort: 5353, ContainerPort: 53, Protocol: "udp", HostIP: "127.0.0.1"},
	})
	want := []ports.Mapping{{Proto: ports.TCP, HostPort: 8080, Port: 80}, {Proto: ports.UDP, HostIP: lo, HostPort: 5353, Port: 53}}
	if err != nil || len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("mappings: %+v, %v; want %+v", got, err, want)
	}
	for _, c := range []struct {
		pm   portMapping
		want string
	}{
		{portMapping{HostPort: 0, ContainerPort: 7777, Protocol: "tcp"}, "invalid port mapping 0:7777/tcp: host and container ports must be 1-65535"},
		{portMapping{HostPort: 8080, ContainerPort: 70000, Protocol: "udp"}, "invalid port mapping 8080:70000/udp"},
		{portMapping{HostPort: 8080, ContainerPort: 7777, Protocol: "sctp"}, `port mapping 7777: protocol "sctp" is not tcp or udp`},
		{portMapping{HostPort: 8080, ContainerPort: 7777, HostIP: "nohost"}, `port mapping 8080: invalid host address "nohost"`},
	} {
		if _, err := mappings([]portMapping{c.pm}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.pm, err, c.want)
		}
	}
}

// ADD asks the daemon for the attachment, with the capabilities the
// runtime passed, and prints it as a result of the configuration's spec
// version.
func TestAdd(t *testing.T) {
	d := &daemon{attach: api.Attachment{Sandbox: "c1:eth0", Interface: "eth0", HostInterface: "veth0a1b", MacAddress: "02:42:0a:58:00:09", Mtu: 1500,
		Address: "10.88.0.9/16", Gateway: "10.88.0.1",
		AddressIPv6: "fd00:88::9/64", GatewayIPv6: "fd00:88::1"}}
	socket := serve(t, d)
	rest := `,"network":"app","publishDeny":["192.0.2.0/24"],"publishBalance":true,"egressAllow":["10.90.0.0/28"],"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],` +
		`"ips":["10.88.0.9/16","fd00:88::9/64"],"mac":"02:42:0a:58:00:09","aliases":{"podnet":["web"]}}`
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		out, err := run(t, addRouted, config(v, socket, rest))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		res, err := version.NewResult(v, []byte(out))
		if err != nil {
			t.Fatalf("%s: %v in %s", v, err, out)
		}
		if res.Version() != v {
			t.Errorf("%s: a result of version %s", v, res.Version())
		}
		r, err := current.NewResultFromResult(res)
		if err != nil {
			t.Fatal(err)
		}
		checkResult(t, v, r)
	}
	want := api.AttachmentCreate{Frontend: "cni", ContainerID: "c1", IfName: "eth0", NetNS: "/run/netns/c1", Network: "app",
		IP: netip.MustParseAddr("10.88.0.9"), IP6: netip.MustParseAddr("fd00:88::9"), MAC: "02:42:0a:58:00:09", Aliases: []string{"web"}, Group: "podnet",
		Publish: []ports.Mapping{{Proto: ports.TCP, HostPort: 8080, Port: 80}}, PublishSources: api.Sources{Deny: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, PublishBalance: true,
		EgressAllow: []string{"10.90.0.0/28"}}
	if len(d.attached) != 4 || !reflect.DeepEqual(d.attached[0], want) {
		t.Errorf("asked %+v, want %+v", d.attached, want)
	}
	if vs := supported().SupportedVersions(); !slices.Contains(vs, "0.3.1") || !slices.Contains(vs, "1.1.0") {
		t.Errorf("supported versions %v, want 0.3.1 to 1.1.0", vs)
	}

	// The spec's own words, version by version: 0.4.0 names each
	// address's family, 1.0.0 does not.
	out, _ := run(t, addRouted, config("0.4.0", socket, rest))
	var r040 types040.Result
	if err := json.Unmarshal([]byte(out), &r040); err != nil || r040.CNIVersion != "0.4.0" || len(r040.IPs) != 2 ||
		r040.IPs[0].Version != "4" || r040.IPs[1].Version != "6" {
		t.Errorf("0.4.0 result %s: %v", out, err)
	}
	out, _ = run(t, addRouted, config("1.0.0", socket, rest))
	if strings.Contains(out, `"version"`) || !strings.Contains(out, `"cniVersion": "1.0.0"`) {
		t.Errorf("1.0.0 result %s", out)
	}
}

// checkResult checks the attachment TestAdd's daemon answers, as a result
// of spec version v read back into the current version.
func checkResult(t *testing.T, v string, r *current.Result) {
	t.Helper()
	if len(r.Interfaces) != 2 || r.Interfaces[0].Name != "veth0a1b" || r.Interfaces[0].Sandbox != "" ||
		r.Interfaces[1].Name != "eth0" || r.Interfaces[1].Mac != "02:42:0a:58:00:09" || r.Interfaces[1].Sandbox != "/run/netns/c1" {
		t.Errorf("%s: interfaces %v", v, r.Interfaces)
	}
	if len(r.IPs) != 2 {
		t.Fatalf("%s: addresses %v", v, r.IPs)
	}
	for i, want := range []struct{ addr, gw string }{{"10.88.0.9/16", "10.88.0.1"}, {"fd00:88::9/64", "fd00:88::1"}} {
		ip := r.IPs[i]
		if ip.Address.String() != want.addr || ip.Gateway.String() != want.gw || ip.Interface == nil || *ip.Interface != 1 {
			t.Errorf("%s: address %d is %v", v, i, ip)
		}
	}
	if len(r.Routes) != 2 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[0].GW.String() != "10.88.0.1" ||
		r.Routes[1].Dst.String() != "::/0" || r.Routes[1].GW.String() != "fd00:88::1" {
		t.Errorf("%s: routes %v", v, r.Routes)
	}
}

// A second network of a namespace routes nothing by default, and an
// internal one has no gateway.
func TestResultOfSecondNetwork(t *testing.T) {
	r, err := resultOf(api.Attachment{Interface: "eth1", HostInterface: "veth2", Address: "10.89.0.5/24", Gateway: "10.89.0.1"}, "/ns", routedNowhere)
	if err != nil || len(r.IPs) != 1 || r.IPs[0].Gateway.String() != "10.89.0.1" || len(r.Routes) != 0 {
		t.Errorf("second network: %+v, %v", r, err)
	}
	r, err = resultOf(api.Attachment{Interface: "eth0", HostInterface: "veth3", Address: "10.90.0.5/24"}, "/ns", routedNowhere)
	if err != nil || len(r.IPs) != 1 || r.IPs[0].Gateway != nil || len(r.Routes) != 0 {
		t.Errorf("internal network: %+v, %v", r, err)
	}
	if _, err := resultOf(api.Attachment{Address: "10.90.0.5"}, "/ns", routedNowhere); err == nil || !strings.Contains(err.Error(), `invalid address "10.90.0.5"`) {
		t.Errorf("a bare address: %v", err)
	}
}

// ebpfnet gives one address per family: a runtime asking for two is
// refused before the daemon is asked.
func TestAddTwoAddressesOfAFamily(t *testing.T) {
	d := &daemon{}
	socket := serve(t, d)
	_, err := run(t, addRouted, config("1.0.0", socket, `,"network":"app","runtimeConfig":{"ips":["10.88.0.9/16","10.88.0.10/16"]}`))
	if err == nil || !strings.Contains(err.Error(), "one address per family") || len(d.attached) != 0 {
		t.Errorf("two IPv4 addresses: %v, asked %v", err, d.attached)
	}
}

// Chained, the plugin needs the result of a plugin that made a veth
// before it (bridge, ptp).
func TestAddChainedNeedsAVethBefore(t *testing.T) {
	d := &daemon{}
	socket := serve(t, d)
	if _, err := run(t, addRouted, config("1.0.0", socket, "")); err == nil || !strings.Contains(err.Error(), "chained mode (no \"network\") needs a prevResult") {
		t.Errorf("no prevResult: %v", err)
	}
	// The interfaces of this prevResult do not exist here, so none is a
	// veth.
	for _, v := range []string{"0.3.1", "0.4.0", "1.0.0"} {
		_, err := run(t, addRouted, config(v, socket, `,"prevResult":`+string(prevResult(t, v))))
		if err == nil || !strings.Contains(err.Error(), "prevResult has no veth with an IPv4 address for eth0") {
			t.Errorf("%s: %v", v, err)
		}
	}
	if len(d.attached) != 0 {
		t.Errorf("the daemon was asked %v", d.attached)
	}
}

func TestDelCheckGC(t *testing.T) {
	d := &daemon{}
	socket := serve(t, d)
	ref := api.AttachmentRef{ContainerID: "c1", IfName: "eth0"}
	if _, err := run(t, del, config("1.0.0", socket, "")); err != nil || len(d.detached) != 1 || d.detached[0] != ref {
		t.Errorf("DEL: %v, detached %v", err, d.detached)
	}
	if _, err := run(t, check, config("1.0.0", socket, `,"prevResult":`+string(prevResult(t, "1.0.0")))); err != nil ||
		len(d.checked) != 1 || d.checked[0] != "c1:eth0@/run/netns/c1" {
		t.Errorf("CHECK: %v, checked %v", err, d.checked)
	}
	valid := `,"network":"app","cni.dev/valid-attachments":[{"containerID":"c2","ifname":"eth0"}]`
	if _, err := run(t, gc, config("1.1.0", socket, valid)); err != nil || len(d.collected) != 1 {
		t.Fatalf("GC: %v, collected %v", err, d.collected)
	}
	if c := d.collected[0]; c.Frontend != "cni" || c.Network != "app" || c.Group != "podnet" || len(c.Keep) != 1 ||
		c.Keep[0] != (api.AttachmentRef{ContainerID: "c2", IfName: "eth0"}) {
		t.Errorf("GC asked %+v", c)
	}
	// Chained, GC collects on the network that stands for the plugins'.
	run(t, gc, config("1.1.0", socket, ""))
	if c := d.collected[1]; c.Network != "cni-podnet" || c.Keep == nil || len(c.Keep) != 0 {
		t.Errorf("chained GC asked %+v", c)
	}
	// A network never attached to has nothing to collect.
	d.err = errdefs.NotFoundf("network app")
	if _, err := run(t, gc, config("1.1.0", socket, valid)); err != nil {
		t.Errorf("GC of an unknown network: %v", err)
	}
	if _, err := run(t, check, config("1.0.0", socket, "")); err == nil || !strings.Contains(err.Error(), "network app") {
		t.Errorf("CHECK of what the daemon does not know: %v", err)
	}
}

// STATUS says whether the daemon answers, in the spec's own code.
func TestStatus(t *testing.T) {
	socket := serve(t, &daemon{})
	if _, err := run(t, status, config("1.1.0", socket, "")); err != nil {
		t.Errorf("STATUS of a daemon that answers: %v", err)
	}
	_, err := run(t, status, config("1.1.0", filepath.Join(t.TempDir(), "none.sock"), ""))
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS without a daemon: %v, want error code %d", err, types.ErrPluginNotAvailable)
	}
}

// routedVia reads the namespace's own default routes: a result reports a
// default route via a gateway only where the namespace has one.
func TestRoutedVia(t *testing.T) {
	testenv.RequirePrivileges(t)
	netns := testenv.HostNamespace(t, testenv.Prefix("cni"))
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		la := netlink.NewLinkAttrs()
		la.Name = "eth0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "peer0"}); err != nil {
			return err
		}
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.88.0.9/16")
		if err := errors.Join(netlink.AddrAdd(l, addr), netlink.LinkSetUp(l)); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.88.0.1")})
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		gw   string
		want bool
	}{{"10.88.0.1", true}, {"10.88.0.2", false}, {"fd00:88::1", false}} {
		if got, err := routedVia(netns, net.ParseIP(c.gw)); got != c.want || err != nil {
			t.Errorf("default route via %s: %v, %v; want %v", c.gw, got, err, c.want)
		}
	}
	if _, err := routedVia("/run/netns/none-such", net.ParseIP("10.88.0.1")); err == nil {
		t.Error("a missing namespace's routes read without error")
	}
}
