package api_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/api/apitest"
)

// Whatever a local client sends, the server answers: a body it cannot
// decode is a 4xx, and nothing it sends brings a 5xx from an engine that
// never fails, or a panic.
func FuzzRequestBodies(f *testing.F) {
	routes := []string{"POST /v1/networks", "POST /v1/networks/prune", "POST /v1/networks/n/connect", "POST /v1/networks/n/disconnect",
		"POST /v1/sandboxes", "POST /v1/sandboxes/s/publish", "POST /v1/sandboxes/s/unpublish", "POST /v1/attachments",
		"POST /v1/attachments/collect", "DELETE /v1/sandboxes/s?force=yes", "GET /v1/networks/%25zz", "GET /v1/attachments/c/eth0?netns=%00"}
	for i, body := range []string{
		`{"Name":"app","Subnets":["172.19.0.0/16","fd00::/64"],"Gateways":["172.19.0.1"],"Options":{"com.docker.network.bridge.name":"br0"}}`,
		`{"Sandbox":"web","IP":"172.19.0.5","IP6":"fd00::5","Aliases":["db"]}`,
		`{"Name":"web","Networks":["app"],"Publish":[{"HostIP":"127.0.0.1","HostPort":8080,"Port":80,"Proto":"tcp"}],"DNS":["9.9.9.9"]}`,
		`{"Mappings":[{"HostPort":8080,"HostPortEnd":8090,"Port":80,"PortEnd":90,"Proto":"udp"}]}`,
		`{"Frontend":"cni","ContainerID":"c1","IfName":"eth0","NetNS":"/run/netns/c1","Network":"app","IP":"10.0.0.5",` +
			`"Chained":{"Bridge":"cni0","HostInterface":"veth1","Address":"10.0.0.5/24","Gateway":"10.0.0.1"}}`,
		`{"Frontend":"cni","Network":"app","Group":"g","Keep":[{"ContainerID":"c1","IfName":"eth0"}]}`,
		`{"Name":"x","Subnets":["nonsense"]}`, `{"Unknown":1}`, `[]`, `null`, ``, `{"Mappings":[]}`,
	} {
		f.Add(uint8(i), body)
	}
	srv := httptest.NewServer(api.NewServer(apitest.Nop{}))
	f.Cleanup(srv.Close)
	f.Fuzz(func(t *testing.T, route uint8, body string) {
		method, path, _ := strings.Cut(routes[int(route)%len(routes)], " ")
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode >= 500 {
			t.Errorf("%s %s with %q: %d", method, path, body, res.StatusCode)
		}
	})
}
