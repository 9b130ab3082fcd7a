package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// The CNI side of the testbed: two containers behind the reference bridge
// plugin (Debian's containernetworking-plugins), attached by cnitool in
// the host namespace. One has its ports published by the reference portmap
// plugin (iptables), the other by ebpfnet chained in portmap's place.
type cniSide struct {
	c *testbed.CNI
}

const (
	cniPortmapPort  = 9380
	cniPortmapIperf = 9381
	cniEbpfnetPort  = 9480
	cniEbpfnetIperf = 9481
	clientPM        = "10.99.0.6" // the client of the portmap container
	clientCE        = "10.99.0.7" // the client of the chained ebpfnet container
	clientMon       = "10.99.0.8" // ebpfnet-tc's path again, while a monitor listens
	cniTimedPort    = 7001
	cniOtherPorts   = 20000 // where the N-1 other mappings start
)

// cniNetworks are the two configurations, by name: bridge then portmap,
// bridge then ebpfnet.
var cniNetworks = []string{"portmap", "ebpfnet"}

func (b *bed) startCNI() {
	c := testbed.NewCNI(b.r)
	c.In, c.Spec = b.host, "1.0.0" // the newest Debian's plugins speak
	c.Conflist("portmap", bridgePlugin(b.r, "cbpm0", "10.91.0.0/16"), portmapPlugin)
	c.Conflist("ebpfnet", bridgePlugin(b.r, "cbeb0", "10.90.0.0/16"), map[string]any{"type": "ebpfnet", "socket": b.h.Socket(),
		"capabilities": map[string]bool{"portMappings": true}})
	b.cni = cniSide{c: c}
	for network, ports := range map[string][2]int{"portmap": {cniPortmapPort, cniPortmapIperf}, "ebpfnet": {cniEbpfnetPort, cniEbpfnetIperf}} {
		ns := b.cniContainer(network, "server", testbed.PortMappings(fmt.Sprintf("%d:%d/tcp", ports[0], echoPort),
			fmt.Sprintf("%d:%d/udp", ports[0], echoPort), fmt.Sprintf("%d:%d/tcp", ports[1], iperfPort)))
		b.background(ns, b.self, "serve", fmt.Sprint(echoPort))
		b.background(ns, "iperf3", "-s", "-p", fmt.Sprint(iperfPort))
	}
}

// bridgePlugin is the reference bridge plugin on bridge dev, the gateway
// of subnet, masquerading, as containerd's example configuration has it.
func bridgePlugin(r *runner, dev, subnet string) map[string]any {
	return map[string]any{"type": "bridge", "bridge": dev, "isGateway": true, "ipMasq": true, "hairpinMode": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": r.TempDir(), "ranges": [][]map[string]string{{{"subnet": subnet}}},
			"routes": []map[string]string{{"dst": "0.0.0.0/0"}}}}
}

// portmapPlugin is the reference portmap plugin after bridgePlugin.
var portmapPlugin = map[string]any{"type": "portmap", "snat": true, "capabilities": map[string]bool{"portMappings": true}}

// cniContainer makes a namespace and attaches it to a CNI network with
// cnitool's environment env; both go when the run ends.
func (b *bed) cniContainer(network, name string, env ...string) string {
	ns := b.h.Name("cni" + network + name)
	b.sh("ip", "netns", "add", ns)
	b.sh("ip", "-n", ns, "link", "set", "lo", "up")
	b.r.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	b.cni.c.Must("add", network, "/run/netns/"+ns, env...)
	b.r.Cleanup(func() { b.cni.c.Run("del", network, "/run/netns/"+ns, env...) })
	return ns
}

// cniAddTimings times cnitool ADD (and DEL, untimed) of a container with
// one port mapping on each network, with n-1 mappings of another
// container present there.
func (b *bed) cniAddTimings(n, times int) []Timing {
	var out []Timing
	for _, network := range cniNetworks {
		// The others, at most 1000 mappings a container: CAP_ARGS is one
		// environment string, which the kernel caps at 128 KiB. They go
		// before the next network is measured: portmap's rules would slow
		// every iptables call the bridge plugin makes there.
		var others []func()
		for first := cniOtherPorts; first < cniOtherPorts+n-1; first += 1000 {
			var pms []map[string]any
			for port := first; port < min(first+1000, cniOtherPorts+n-1); port++ {
				pms = append(pms, map[string]any{"hostPort": port, "containerPort": port, "protocol": "tcp"})
			}
			capArgs, _ := json.Marshal(map[string]any{"portMappings": pms})
			ns := b.cniContainer(network, fmt.Sprintf("o%d-%d", n, first), "CAP_ARGS="+string(capArgs))
			others = append(others, func() { b.cni.c.Run("del", network, "/run/netns/"+ns, "CAP_ARGS="+string(capArgs)) })
		}
		t := Timing{What: "CNI ADD, bridge + " + network, N: n}
		ns := b.h.Name("cnitimed")
		b.sh("ip", "netns", "add", ns)
		for range times {
			env := testbed.PortMappings(fmt.Sprintf("%d:%d/tcp", cniTimedPort, echoPort))
			t0 := time.Now()
			b.cni.c.Must("add", network, "/run/netns/"+ns, env)
			t.Ms = append(t.Ms, ms(time.Since(t0)))
			b.cni.c.Must("del", network, "/run/netns/"+ns, env)
		}
		b.sh("ip", "netns", "del", ns)
		for _, del := range others {
			del()
		}
		out = append(out, t)
	}
	return out
}
