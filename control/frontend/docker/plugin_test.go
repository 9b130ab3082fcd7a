package docker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/apiengine"
	"github.com/ebpfnet/ebpfnet/control/engine"
	"github.com/ebpfnet/ebpfnet/control/frontend/docker"
	"github.com/ebpfnet/ebpfnet/test/enginetest"
)

// pluginEnv is an engine in a private namespace, its Docker plugin handler
// served by httptest and its CLI API served by another.
type pluginEnv struct {
	eng    *engine.Engine
	plugin string
	cli    *httptest.Server
	netns  string // a namespace to join endpoints to
}

func newPluginEnv(t *testing.T) pluginEnv {
	t.Helper()
	e, cfg, _ := enginetest.New(t, "dpt")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := docker.Handler(apiengine.New(e), log)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go h.Serve(l)
	t.Cleanup(func() { l.Close() })
	cs := httptest.NewServer(api.NewServer(apiengine.New(e)))
	t.Cleanup(cs.Close)
	return pluginEnv{e, "http://" + l.Addr().String(), cs, cfg.NetNS}
}

// call posts a plugin call and decodes its answer; it returns the Err field.
func (r pluginEnv) call(t *testing.T, path string, req any, resp any) string {
	t.Helper()
	body, _ := json.Marshal(req)
	res, err := http.Post(r.plugin+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	var e struct{ Err string }
	json.Unmarshal(data, &e)
	if resp != nil && e.Err == "" {
		if err := json.Unmarshal(data, resp); err != nil {
			t.Fatalf("%s: decode %s: %v", path, data, err)
		}
	}
	return e.Err
}

func (r pluginEnv) cliDo(t *testing.T, method, path string, req any) (int, string) {
	t.Helper()
	var body io.Reader
	if req != nil {
		b, _ := json.Marshal(req)
		body = bytes.NewReader(b)
	}
	hr, _ := http.NewRequest(method, r.cli.URL+path, body)
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(data)
}

func randomID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// createDefaultIPAMNetwork creates a network as Docker does with its own
// (default) IPAM: the subnet and gateway in IPv4Data.
func (r pluginEnv) createDefaultIPAMNetwork(t *testing.T, subnet, gw string) string {
	t.Helper()
	nid := randomID()
	req := map[string]any{"NetworkID": nid, "Options": map[string]any{"com.docker.network.generic": map[string]any{}},
		"IPv4Data": []map[string]any{{"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": gw}}}
	if e := r.call(t, "/NetworkDriver.CreateNetwork", req, nil); e != "" {
		t.Fatalf("CreateNetwork: %s", e)
	}
	return nid
}

// Docker's --mac-address reaches CreateEndpoint as Interface.MacAddress and
// Docker sets that MAC on the interface it moves into the container. The
// plugin must either keep that MAC (the datapath delivers to it) or refuse:
// it does neither, so the datapath sends to 02:42:<ip> and the container
// drops every packet.
func TestPluginKeepsDockersMAC(t *testing.T) {
	r := newPluginEnv(t)
	nid := r.createDefaultIPAMNetwork(t, "172.31.7.0/24", "172.31.7.1/24")
	eid := randomID()
	const mac = "02:aa:bb:cc:dd:ee"
	var resp struct {
		Interface struct{ Address, MacAddress string }
	}
	e := r.call(t, "/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": nid, "EndpointID": eid,
		"Interface": map[string]any{"Address": "172.31.7.5/24", "MacAddress": mac}}, &resp)
	if e != "" {
		return // refusing is a correct answer
	}
	sb, err := apiengine.New(r.eng).Sandbox(context.Background(), eid)
	if err != nil {
		t.Fatal(err)
	}
	for name, ep := range sb.NetworkSettings.Networks {
		if ep.MacAddress != mac {
			t.Errorf("Docker asked for MAC %s and was told yes (answer %+v), but the engine keeps endpoint %s on %s with MAC %s, the one the datapath delivers to",
				mac, resp.Interface, eid[:12], name, ep.MacAddress)
		}
	}
}

// A network Docker creates with its own IPAM (AddressSpace LocalDefault)
// must not adopt a pool that ebpfnet's IPAM handed out for another Docker
// network (e.g. a builtin-bridge network created with --ipam-driver
// ebpfnet): the plugin matches requested pools by subnet alone.
func TestPluginAdoptsOnlyPoolsOfItsAddressSpace(t *testing.T) {
	r := newPluginEnv(t)
	// docker network create -d bridge --ipam-driver ebpfnet --subnet 172.30.0.0/16 other
	var pool struct{ PoolID, Pool string }
	if e := r.call(t, "/IpamDriver.RequestPool", map[string]any{"AddressSpace": "ebpfnet", "Pool": "172.30.0.0/16"}, &pool); e != "" {
		t.Fatal(e)
	}
	var addr struct{ Address string }
	if e := r.call(t, "/IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID, "Address": "172.30.0.2"}, &addr); e != "" {
		t.Fatal(e)
	}
	// docker network create -d ebpfnet --subnet 172.30.0.0/16 mine (Docker's default IPAM)
	nid := randomID()
	req := map[string]any{"NetworkID": nid, "Options": map[string]any{},
		"IPv4Data": []map[string]any{{"AddressSpace": "LocalDefault", "Pool": "172.30.0.0/16", "Gateway": "172.30.0.1/16"}}}
	e := r.call(t, "/NetworkDriver.CreateNetwork", req, nil)
	if e != "" {
		return // refusing the overlap is a correct answer
	}
	t.Errorf("a LocalDefault network on 172.30.0.0/16 was accepted: it adopted pool %s that ebpfnet's IPAM handed to another network", pool.PoolID)
	// Docker's default IPAM now hands its first container 172.30.0.2, the
	// address the other network's container holds.
	eid := randomID()
	if e := r.call(t, "/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": nid, "EndpointID": eid,
		"Interface": map[string]any{"Address": "172.30.0.2/16"}}, nil); e == "" {
		t.Errorf("and an endpoint took 172.30.0.2, an address ebpfnet's IPAM handed to the other network")
	} else {
		t.Logf("CreateEndpoint: %s", e)
	}
}

// ebpfnet network prune (the CLI API) removes Docker's networks that have
// no container yet: Docker still lists them and every docker run on them
// then fails.
func TestCLIPruneSparesDockersNetworks(t *testing.T) {
	r := newPluginEnv(t)
	nid := r.createDefaultIPAMNetwork(t, "172.31.8.0/24", "172.31.8.1/24")
	code, body := r.cliDo(t, http.MethodPost, "/v1/networks/prune", nil)
	t.Logf("prune: %d %s", code, strings.TrimSpace(body))
	e := r.call(t, "/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": nid, "EndpointID": randomID(),
		"Interface": map[string]any{"Address": "172.31.8.2/24"}}, nil)
	if e != "" {
		t.Errorf("after a CLI prune, Docker's network %s is gone from ebpfnet: CreateEndpoint: %s", nid[:12], e)
	}
}

// The CLI API unpublishes the ports of a Docker container's endpoint:
// docker port still shows them, and nothing reaches the container.
func TestCLILeavesDockersPortsAlone(t *testing.T) {
	r := newPluginEnv(t)
	nid := r.createDefaultIPAMNetwork(t, "172.31.9.0/24", "172.31.9.1/24")
	eid := randomID()
	if e := r.call(t, "/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": nid, "EndpointID": eid,
		"Interface": map[string]any{"Address": "172.31.9.2/24"}}, nil); e != "" {
		t.Fatal(e)
	}
	if e := r.call(t, "/NetworkDriver.Join", map[string]any{"NetworkID": nid, "EndpointID": eid, "SandboxKey": r.netns}, nil); e != "" {
		t.Fatal(e)
	}
	t.Cleanup(func() { r.call(t, "/NetworkDriver.Leave", map[string]any{"NetworkID": nid, "EndpointID": eid}, nil) })
	pm := []map[string]any{{"Proto": 6, "IP": "172.31.9.2", "Port": 80, "HostIP": "", "HostPort": 18080, "HostPortEnd": 18080}}
	if e := r.call(t, "/NetworkDriver.ProgramExternalConnectivity", map[string]any{"NetworkID": nid, "EndpointID": eid,
		"Options": map[string]any{"com.docker.network.portmap": pm}}, nil); e != "" {
		t.Fatal(e)
	}
	code, body := r.cliDo(t, http.MethodPost, "/v1/sandboxes/docker-"+eid[:12]+"/unpublish",
		map[string]any{"Mappings": []map[string]any{{"HostPort": 18080}}})
	if code/100 == 2 {
		t.Errorf("the CLI API unpublished Docker's port 18080 of endpoint %s: %d %s", eid[:12], code, strings.TrimSpace(body))
	}
	code, body = r.cliDo(t, http.MethodPost, "/v1/sandboxes/docker-"+eid[:12]+"/publish",
		map[string]any{"Mappings": []map[string]any{{"Proto": "tcp", "HostPort": 18081, "Port": 22}}})
	if code/100 == 2 {
		t.Errorf("the CLI API published port 18081 on Docker's endpoint %s, which Docker does not know: %d %s", eid[:12], code, strings.TrimSpace(body))
	}
}

// On a network whose pool ebpfnet's IPAM handed out, CreateEndpoint only
// checks that the address was requested, not that no other endpoint holds
// it: two endpoints share one address, and their map entries (keyed by
// address) overwrite each other.
func TestPluginHoldsARequestedAddressOnce(t *testing.T) {
	r := newPluginEnv(t)
	var pool struct{ PoolID, Pool string }
	if e := r.call(t, "/IpamDriver.RequestPool", map[string]any{"AddressSpace": "ebpfnet", "Pool": "172.29.0.0/16"}, &pool); e != "" {
		t.Fatal(e)
	}
	var gw, addr struct{ Address string }
	if e := r.call(t, "/IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID,
		"Options": map[string]string{"RequestAddressType": "com.docker.network.gateway"}}, &gw); e != "" {
		t.Fatal(e)
	}
	nid := randomID()
	if e := r.call(t, "/NetworkDriver.CreateNetwork", map[string]any{"NetworkID": nid, "Options": map[string]any{},
		"IPv4Data": []map[string]any{{"AddressSpace": "ebpfnet", "Pool": pool.Pool, "Gateway": gw.Address}}}, nil); e != "" {
		t.Fatal(e)
	}
	if e := r.call(t, "/IpamDriver.RequestAddress", map[string]any{"PoolID": pool.PoolID}, &addr); e != "" {
		t.Fatal(e)
	}
	a, b := randomID(), randomID()
	for _, id := range []string{a, b} {
		e := r.call(t, "/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": nid, "EndpointID": id,
			"Interface": map[string]any{"Address": addr.Address}}, nil)
		if id == b && e == "" {
			t.Errorf("endpoints %s and %s both hold %s on network %s", a[:12], b[:12], addr.Address, nid[:12])
		}
	}
}

// The CLI API can neither make a network pass for Docker's nor remove one
// of Docker's.
func TestCLICannotForgeOrRemoveDockersNetworks(t *testing.T) {
	r := newPluginEnv(t)
	nid := r.createDefaultIPAMNetwork(t, "172.31.10.0/24", "172.31.10.1/24")
	if code, body := r.cliDo(t, http.MethodPost, "/v1/networks", map[string]any{"Name": "forged", "Frontend": "docker"}); code != http.StatusBadRequest {
		t.Errorf("a CLI network claiming to be Docker's: %d %s, want 400", code, body)
	}
	if code, body := r.cliDo(t, http.MethodDelete, "/v1/networks/"+nid, nil); code != http.StatusConflict {
		t.Errorf("CLI removal of Docker's network: %d %s, want 409", code, body)
	}
	if e := r.call(t, "/NetworkDriver.DeleteNetwork", map[string]any{"NetworkID": nid}, nil); e != "" {
		t.Errorf("Docker's own DeleteNetwork: %s", e)
	}
}

// docker network create --ipv6 -d ebpfnet --ipam-driver ebpfnet: Docker
// asks the IPAM for a pool per family (V6), and an address of each for the
// gateway and the endpoint; CreateNetwork carries IPv6Data, CreateEndpoint
// AddressIPv6, and Join answers GatewayIPv6, with which Docker routes the
// container's IPv6.
func TestPluginDualStack(t *testing.T) {
	r := newPluginEnv(t)
	var p4, p6 struct{ PoolID, Pool string }
	if e := r.call(t, "/IpamDriver.RequestPool", map[string]any{"AddressSpace": "ebpfnet", "Pool": "172.28.0.0/16"}, &p4); e != "" {
		t.Fatal(e)
	}
	if e := r.call(t, "/IpamDriver.RequestPool", map[string]any{"AddressSpace": "ebpfnet", "V6": true}, &p6); e != "" {
		t.Fatal(e)
	}
	if !strings.HasPrefix(p6.Pool, "fd") || !strings.HasSuffix(p6.Pool, "::/64") {
		t.Fatalf("IPv6 pool without a subnet: %s, want a /64 of the host's ULA /48", p6.Pool)
	}
	var gw4, gw6, a4, a6 struct{ Address string }
	gateway := map[string]string{"RequestAddressType": "com.docker.network.gateway"}
	for _, c := range []struct {
		pool string
		opts map[string]string
		out  *struct{ Address string }
	}{{p4.PoolID, gateway, &gw4}, {p6.PoolID, gateway, &gw6}, {p4.PoolID, nil, &a4}, {p6.PoolID, nil, &a6}} {
		if e := r.call(t, "/IpamDriver.RequestAddress", map[string]any{"PoolID": c.pool, "Options": c.opts}, c.out); e != "" {
			t.Fatal(e)
		}
	}
	nid := randomID()
	if e := r.call(t, "/NetworkDriver.CreateNetwork", map[string]any{"NetworkID": nid, "Options": map[string]any{"com.docker.network.enable_ipv6": true},
		"IPv4Data": []map[string]any{{"AddressSpace": "ebpfnet", "Pool": p4.Pool, "Gateway": gw4.Address}},
		"IPv6Data": []map[string]any{{"AddressSpace": "ebpfnet", "Pool": p6.Pool, "Gateway": gw6.Address}}}, nil); e != "" {
		t.Fatal(e)
	}
	n, err := apiengine.New(r.eng).Network(context.Background(), "docker-"+nid[:12])
	if err != nil || !n.EnableIPv6 || len(n.IPAM.Config) != 2 || n.IPAM.Config[1].Subnet != p6.Pool {
		t.Fatalf("network: %+v, %v", n, err)
	}
	eid := randomID()
	var created struct {
		Interface struct{ Address, AddressIPv6 string }
	}
	if e := r.call(t, "/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": nid, "EndpointID": eid,
		"Interface": map[string]any{"Address": a4.Address, "AddressIPv6": a6.Address}}, &created); e != "" {
		t.Fatal(e)
	}
	if created.Interface.AddressIPv6 != "" {
		t.Errorf("CreateEndpoint answered AddressIPv6 %s where Docker gave one", created.Interface.AddressIPv6)
	}
	var joined struct{ Gateway, GatewayIPv6 string }
	if e := r.call(t, "/NetworkDriver.Join", map[string]any{"NetworkID": nid, "EndpointID": eid, "SandboxKey": r.netns}, &joined); e != "" {
		t.Fatal(e)
	}
	t.Cleanup(func() { r.call(t, "/NetworkDriver.Leave", map[string]any{"NetworkID": nid, "EndpointID": eid}, nil) })
	if want := strings.Split(gw6.Address, "/")[0]; joined.GatewayIPv6 != want || joined.Gateway != strings.Split(gw4.Address, "/")[0] {
		t.Errorf("Join: %+v, want GatewayIPv6 %s", joined, want)
	}
	sb, err := apiengine.New(r.eng).Sandbox(context.Background(), eid)
	if err != nil {
		t.Fatal(err)
	}
	if ep := sb.NetworkSettings.Networks[n.Name]; ep.GlobalIPv6Address+"/64" != a6.Address {
		t.Errorf("endpoint: %+v, want IPv6 address %s", ep, a6.Address)
	}
	// An IPv6 address on a network without IPv6 is refused.
	v4only := r.createDefaultIPAMNetwork(t, "172.27.0.0/24", "172.27.0.1/24")
	if e := r.call(t, "/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": v4only, "EndpointID": randomID(),
		"Interface": map[string]any{"Address": "172.27.0.2/24", "AddressIPv6": "fd00::2/64"}}, nil); !strings.Contains(e, "fd00::2") {
		t.Errorf("CreateEndpoint with an IPv6 address on an IPv4-only network: %q", e)
	}
}
