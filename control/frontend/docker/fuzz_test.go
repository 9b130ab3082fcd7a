package docker_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/api/apitest"
	"github.com/ebpfnet/ebpfnet/control/frontend/docker"
)

// Whatever Docker (or anything on the plugin's socket) sends, the plugin
// answers a JSON object: a response, or {"Err": "…"} naming what it
// refused; it never panics and never hangs.
func FuzzPluginCalls(f *testing.F) {
	calls := []string{"/Plugin.Activate", "/NetworkDriver.GetCapabilities", "/NetworkDriver.CreateNetwork", "/NetworkDriver.DeleteNetwork",
		"/NetworkDriver.CreateEndpoint", "/NetworkDriver.EndpointOperInfo", "/NetworkDriver.DeleteEndpoint", "/NetworkDriver.Join",
		"/NetworkDriver.Leave", "/NetworkDriver.ProgramExternalConnectivity", "/NetworkDriver.RevokeExternalConnectivity",
		"/NetworkDriver.DiscoverNew", "/NetworkDriver.DiscoverDelete", "/IpamDriver.GetCapabilities", "/IpamDriver.GetDefaultAddressSpaces",
		"/IpamDriver.RequestPool", "/IpamDriver.ReleasePool", "/IpamDriver.RequestAddress", "/IpamDriver.ReleaseAddress"}
	for i, body := range []string{
		`{"NetworkID":"n1","Options":{"com.docker.network.generic":{"com.docker.network.bridge.name":"br0","com.docker.network.enable_ipv6":"true"}},` +
			`"IPv4Data":[{"AddressSpace":"ebpfnet","Pool":"172.20.0.0/16","Gateway":"172.20.0.1/16"}],"IPv6Data":[{"Pool":"fd00::/64","Gateway":"fd00::1/64"}]}`,
		`{"NetworkID":"n1","EndpointID":"e1","Interface":{"Address":"172.20.0.2/16","AddressIPv6":"fd00::2/64","MacAddress":"02:42:ac:14:00:02"}}`,
		`{"NetworkID":"n1","EndpointID":"e1","SandboxKey":"/var/run/docker/netns/x"}`,
		`{"NetworkID":"n1","EndpointID":"e1","Options":{"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"127.0.0.1","HostPort":8080,"HostPortEnd":8080}]}}`,
		`{"AddressSpace":"ebpfnet","Pool":"172.20.0.0/16","SubPool":"172.20.5.0/24","V6":false}`,
		`{"PoolID":"p1","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}`,
		`{"PoolID":"p1","Address":"172.20.0.300"}`, `{}`, ``, `[`, `{"Options":{"com.docker.network.portmap":"x"}}`,
	} {
		f.Add(uint8(i), body)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go docker.Handler(apitest.Nop{}, slog.New(slog.NewTextHandler(io.Discard, nil))).Serve(l)
	f.Cleanup(func() { l.Close() })
	url := "http://" + l.Addr().String()
	client := &http.Client{Timeout: 5 * time.Second}
	f.Fuzz(func(t *testing.T, call uint8, body string) {
		path := calls[int(call)%len(calls)]
		res, err := client.Post(url+path, "application/vnd.docker.plugins.v1.2+json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("%s with %q: %v", path, body, err)
		}
		defer res.Body.Close()
		var answer map[string]any
		if err := json.NewDecoder(res.Body).Decode(&answer); err != nil {
			t.Errorf("%s with %q: the answer is no JSON object: %v", path, body, err)
		}
	})
}
