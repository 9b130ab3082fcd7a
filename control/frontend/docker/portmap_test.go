package docker

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
)

// Docker sends a port published on every address once per family, and
// the port range end even when it leaves the host port to the driver.
func TestPortMappings(t *testing.T) {
	var raw any
	json.Unmarshal([]byte(`[
		{"Proto":6,"IP":"172.18.0.2","Port":80,"HostIP":"0.0.0.0","HostPort":8080,"HostPortEnd":8080},
		{"Proto":6,"IP":"172.18.0.2","Port":80,"HostIP":"::","HostPort":8080,"HostPortEnd":8080},
		{"Proto":17,"IP":"172.18.0.2","Port":53,"HostIP":"127.0.0.1","HostPort":0,"HostPortEnd":5400}
	]`), &raw)
	got, err := portMappings(raw)
	want := []ports.Mapping{
		{Proto: ports.TCP, HostPort: 8080, HostPortEnd: 8080, Port: 80},
		{Proto: ports.UDP, HostIP: netip.MustParseAddr("127.0.0.1"), Port: 53},
	}
	if err != nil || len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("portMappings: %+v, %v; want %+v", got, err, want)
	}
	for _, c := range []struct{ portmap, want string }{
		{`[{"Proto":132,"Port":80}]`, "port 80: protocol 132 is not tcp or udp (ebpfnet publishes tcp and udp)"},
		{`[{"Proto":6,"Port":80,"HostIP":"nohost"}]`, `port 80: invalid host address "nohost"`},
	} {
		json.Unmarshal([]byte(c.portmap), &raw)
		if _, err := portMappings(raw); err == nil || err.Error() != c.want || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want %q", c.portmap, err, c.want)
		}
	}
}
