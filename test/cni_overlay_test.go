package test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// cniAddress is the address an ADD's result gives the container.
func cniAddress(t *testing.T, res string) string {
	t.Helper()
	var result struct{ IPs []struct{ Address string } }
	if err := json.Unmarshal([]byte(res), &result); err != nil || len(result.IPs) != 1 {
		t.Fatalf("ADD's result, want one address: %v\n%s", err, res)
	}
	return netip.MustParsePrefix(result.IPs[0].Address).Addr().String()
}

// TestCNIOverlay is a pod network across hosts: ebpfnet's CNI plugin in
// main mode on an overlay network of three hosts, through cnitool and,
// on one host, containerd's CRI. Pods get addresses
// unique in the cluster, reach each other across hosts, publish
// hostPorts on their own host; an address another host's pod holds is
// refused, and so is a MAC of the pod's own (the other hosts derive it
// from the address). A host lost for good (its daemon killed, its etcd
// member and namespace gone): the pods of the others keep talking, and
// its pods' addresses come back to the pool after its lease.
func TestCNIOverlay(t *testing.T) {
	t.Parallel()
	began := time.Now()
	phase := func(what string) { t.Logf("%4.1f s: %s", time.Since(began).Seconds(), what) }
	// A short lease: the test waits for one to end.
	c := testbed.NewCluster(t, 3, "discovery.ttl=5")
	phase("three hosts up")
	h0, h1, h2 := c.Hosts[0], c.Hosts[1], c.Hosts[2]
	out := h1.AddOutside()
	ov := h0.Name("pods")
	h0.MustCLI("network", "create", "-d", "overlay", "--subnet", "10.201.0.0/24", ov)
	cni := newCNI(t)
	cni.Spec = "1.0.0"
	for i, h := range c.Hosts {
		waitNetwork(t, h, ov)
		cni.Conflist(fmt.Sprintf("pods%d", i), map[string]any{"type": "ebpfnet", "network": ov, "socket": h.Socket(),
			"capabilities": map[string]bool{"portMappings": true, "ips": true, "mac": true}})
	}
	type pod struct {
		host int
		ns   string
		ip   string
	}
	add := func(host int, name string, env ...string) pod {
		t.Helper()
		ns := containerNS(t, c.Hosts[host], name)
		return pod{host, ns, cniAddress(t, cni.Must("add", fmt.Sprintf("pods%d", host), ns, env...))}
	}
	// Host 1's pod runs as the kubelet runs it, through containerd's CRI,
	// its hostPorts from the pod's port_mappings.
	criCNI := newCNI(t)
	criCNI.Spec = "1.0.0"
	criCNI.Conflist("pods", map[string]any{"type": "ebpfnet", "network": ov, "socket": h1.Socket(),
		"capabilities": map[string]bool{"portMappings": true}})
	cri := testbed.StartCRI(t, h1.NetNS, criCNI)
	phase("containerd up on host 1")
	web := cri.RunPod("web", "8080:7777/tcp", "8080:7777/udp")
	pods := []pod{add(0, "p0"), {1, web.NetNS, web.IP}, add(2, "p2"), add(2, "p2b")}
	seen := map[string]int{}
	for i, p := range pods {
		if j, ok := seen[p.ip]; ok {
			t.Fatalf("pods %d (host %d) and %d (host %d) both have %s", i, p.host, j, pods[j].host, p.ip)
		}
		seen[p.ip] = i
		testbed.Serve(t, p.ns)
	}
	for _, p := range pods {
		for _, o := range pods {
			if p.host != o.host {
				mustWork(t, fmt.Sprintf("pod on host %d to %s on host %d", p.host, o.ip, o.host), testbed.TCP(p.ns, o.ip))
			}
		}
	}

	phase("pods reach each other")
	cni.Must("check", "pods0", pods[0].ns)
	// hostPorts on the pod's own host alone.
	if peer := peerOf(t, out.NS, "tcp4", out.HostIP+":8080"); peer.Addr().String() != out.IP {
		t.Errorf("the pod saw %s, want the client's own address %s", peer.Addr(), out.IP)
	}
	mustWork(t, "outside to the UDP hostPort", testbed.UDPTo(out.NS, out.HostIP+":8080"))
	mustWork(t, "host 1 to 127.0.0.1:8080", testbed.TCPTo(h1.NetNS, "127.0.0.1:8080"))
	mustFail(t, "host 0 to 127.0.0.1:8080", testbed.TCPTo(h0.NetNS, "127.0.0.1:8080"))
	assertNoRuleNorProxy(t, h1, "8080")

	// Bad input changes nothing: another host's pod's address, a MAC.
	bad := containerNS(t, h0, "bad")
	for _, b := range []struct{ env, want string }{
		{`CAP_ARGS={"ips":["` + pods[2].ip + `"]}`, pods[2].ip},
		{`CAP_ARGS={"mac":"02:00:00:00:00:99"}`, "02:00:00:00:00:99"},
	} {
		if msg, err := cni.Run("add", "pods0", bad, b.env); err == nil || !strings.Contains(strings.SplitN(msg, "\n", 2)[0], b.want) {
			t.Errorf("ADD with %s: %v %s, want a one-line refusal naming %s", b.env, err, msg, b.want)
		}
	}
	if got := attachments(t, h0); len(got) != 1 {
		t.Errorf("after refused ADDs, host 0 has attachments %v, want its one pod's", got)
	}

	// Host 2 lost for good, a flow between hosts 0 and 1 running through.
	phase("host 2 lost")
	cv := converse(t, pods[0].ns, pods[1].ip)
	n := cv.check(t, "before host 2 was lost", 0)
	h2.Stop(syscall.SIGKILL)
	c.Etcd.Stop(2)
	for _, p := range pods[2:] {
		exec.Command("ip", "netns", "del", filepath.Base(p.ns)).Run()
	}
	h2.MustRun("ip", "netns", "del", filepath.Base(h2.NetNS))
	waitGoneFrom(t, h0, ov, pods[2].ip, 25*time.Second)
	phase("host 2's lease ended")
	n = cv.check(t, "after host 2 was lost", n)
	back := add(0, "back", `CAP_ARGS={"ips":["`+pods[2].ip+`"]}`)
	testbed.Serve(t, back.ns)
	mustWork(t, "host 1's pod to the pod that took host 2's pod's address", testbed.TCP(pods[1].ns, back.ip))
	cv.check(t, "after host 0 took host 2's pod's address", n)
	cv.end()

	// A pod removed gives its address back to the cluster: another host
	// takes it.
	phase("DEL")
	if err := cri.RemovePod(web.ID); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, h1, "after host 1's pod was removed")
	var again string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		ns := containerNS(t, h0, "again")
		res, err := cni.Run("add", "pods0", ns, `CAP_ARGS={"ips":["`+pods[1].ip+`"]}`)
		if err == nil {
			again = ns
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host 0 cannot take %s 10 s after host 1's pod was removed: %s", pods[1].ip, res)
		}
		exec.Command("ip", "netns", "del", filepath.Base(ns)).Run()
	}
	for _, ns := range []string{pods[0].ns, back.ns, again} {
		cni.Must("del", "pods0", ns)
	}
	assertNothingLeft(t, h0, "after DEL on host 0")
}
