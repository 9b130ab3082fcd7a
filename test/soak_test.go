package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/vishvananda/netlink"

	"github.com/ebpfnet/ebpfnet/bpf"
	"github.com/ebpfnet/ebpfnet/control/api"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// soakConfig is how long and how hard TestSoak churns. make test runs
// the short defaults; make soak sets SOAK_TIME (and so the long ones).
type soakConfig struct {
	duration  time.Duration // of the churn, checks included
	every     time.Duration // between full checks
	sandboxes int           // the most the churn keeps at once
	networks  int
	rate      float64 // operations per second, at most
	workers   int     // operations in flight at once
	seed      uint64
	out       string // where make soak writes the chart and the samples
}

func soakConfigFromEnv(t *testing.T) soakConfig {
	t.Helper()
	c := soakConfig{duration: 75 * time.Second, every: 25 * time.Second, sandboxes: 60, networks: 6, rate: 20, workers: 3,
		seed: rand.Uint64(), out: os.Getenv("SOAK_OUT")}
	if v := os.Getenv("SOAK_TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_TIME=%q: %v", v, err)
		}
		c = soakConfig{duration: d, every: time.Minute, sandboxes: 1000, networks: 20, rate: 50, workers: 4, seed: c.seed, out: c.out}
	}
	for _, v := range []struct {
		env string
		to  *int
	}{{"SOAK_SANDBOXES", &c.sandboxes}, {"SOAK_NETWORKS", &c.networks}} {
		if s := os.Getenv(v.env); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive number", v.env, s)
			}
			*v.to = n
		}
	}
	if s := os.Getenv("SOAK_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SOAK_SEED=%q: %v", s, err)
		}
		c.seed = n
	}
	return c
}

// soakNet is one of the networks the churn uses.
type soakNet struct {
	name     string
	kind     string // bridge, dual, internal, macvlan, small
	subnet   netip.Prefix
	capacity int    // addresses its endpoints may take
	prober   string // a sandbox that stays, to probe the others from
}

// publishes says whether sandboxes publish ports on the network: those
// with a way out.
func (n *soakNet) publishes() bool { return n.kind != "internal" && n.kind != "macvlan" }

// soakSandbox is what the churn asked of one sandbox (or CNI container).
type soakSandbox struct {
	name   string
	ns     string // its namespace's path
	cni    string // the network of a CNI container, which has no other
	nets   []*soakNet
	ports  []uint16          // host ports it was given and still holds in the model
	open   map[uint16]string // the protocol of those the outside client may reach
	busy   bool
	stop   func() // its echo server
	closed bool
}

// soak is the state of one run: the model of what was asked, guarded by
// mu; gate stops the churn and the traffic while a check runs.
type soak struct {
	t    *testing.T
	cfg  soakConfig
	h    *testbed.Host
	out  testbed.Outside
	cni  *testbed.CNI
	gate sync.RWMutex

	mu        sync.Mutex
	rng       *rand.Rand
	nets      []*soakNet
	sbs       map[string]*soakSandbox
	freePorts []uint16
	used      map[string][]netip.Addr // addresses handed out, by network
	seq       int
	ops       map[string]int // done, by operation
	opErrors  []string
	traffic   struct{ ok, failed int }
	samples   []soakSample
	start     time.Time
	netCycles int
	// dockerNet is the network Docker's plugin calls make endpoints on,
	// one cycle at a time (dockerCycling).
	dockerNet     string
	dockerCycling bool
	parents       []string // the interfaces setup made for macvlan networks
	// tableFulls is the kernel's count of full neighbour tables when a
	// check started; neighbourMisses counts the probes that failed for it.
	tableFulls      int
	neighbourMisses int
	// cgroupLinks is how many cgroup hooks the daemon pinned at the start.
	cgroupLinks int
}

// TestSoak churns sandboxes, endpoints, publications, CNI attachments and
// Docker's plugin calls at random (seeded: SOAK_SEED replays a run) while
// traffic runs through published ports and masquerade, and checks every so often that all the
// store records works, that nothing it does not record is left in the
// kernel, the pins, the maps or IPAM, and that the daemon's goroutines,
// open files and memory stay flat. make soak runs it for SOAK_TIME at
// full size; make test runs it for a minute and a half.
func TestSoak(t *testing.T) {
	cfg := soakConfigFromEnv(t)
	t.Logf("soak: seed %d (SOAK_SEED=%d replays the operations), %s, up to %d sandboxes on %d networks, %.0f operations/s",
		cfg.seed, cfg.seed, cfg.duration, cfg.sandboxes, cfg.networks, cfg.rate)
	if cfg.sandboxes > soakDefaultTable {
		sizeNeighbourTables(t, cfg.sandboxes)
	}
	h, out := newPublishingHost(t)
	s := &soak{t: t, cfg: cfg, h: h, out: out, cni: newCNI(t), rng: rand.New(rand.NewPCG(cfg.seed, 0x50a4)),
		sbs: map[string]*soakSandbox{}, used: map[string][]netip.Addr{}, ops: map[string]int{}}
	for p := uint16(20000); p < 20000+uint16(min(4*cfg.sandboxes, 30000)); p++ {
		s.freePorts = append(s.freePorts, p)
	}
	t.Cleanup(s.cleanup)
	base := s.sample()
	cgroup, _ := os.ReadDir(filepath.Join(h.BPFFS(), "cgroup-links"))
	s.cgroupLinks = len(cgroup)
	s.setup()

	ctx, cancel := context.WithTimeout(t.Context(), cfg.duration)
	defer cancel()
	var wg sync.WaitGroup
	limiter := time.NewTicker(time.Duration(float64(time.Second) / cfg.rate))
	defer limiter.Stop()
	for range cfg.workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				select {
				case <-ctx.Done():
				case <-limiter.C:
					s.gate.RLock()
					s.operate(ctx)
					s.gate.RUnlock()
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() { s.sendTraffic(ctx) })
	}
	wg.Go(func() {
		tick := time.NewTicker(cfg.every / 6)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				s.record(s.sample())
			}
		}
	})
	check := time.NewTicker(cfg.every)
	checks := 0
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-check.C:
			s.gate.Lock()
			checks++
			s.check(fmt.Sprintf("check %d", checks), 200)
			s.gate.Unlock()
		}
	}
	check.Stop()
	wg.Wait()
	if t.Failed() {
		return
	}
	s.check("the end", 0)
	s.ipamFree()
	s.record(s.sample())
	peak := s.summary()
	s.drain()
	s.check("after removing everything", 0)
	end := s.settled(base)
	s.record(end)
	s.judge(base, end, peak)
	if cfg.out != "" {
		if err := writeSoakReport(cfg, s.samples, s.ops, s.traffic.ok, s.traffic.failed, base, end); err != nil {
			t.Errorf("write the soak's chart: %v", err)
		}
	}
}

// setup creates the networks, one of each kind in turn, and a prober on
// each.
func (s *soak) setup() {
	s.t.Helper()
	kinds := []string{"bridge", "dual", "internal", "macvlan", "small"}
	for i := range s.cfg.networks {
		n := &soakNet{name: s.h.Name(fmt.Sprintf("n%d", i)), kind: kinds[i%len(kinds)]}
		req := api.NetworkCreate{Name: n.name}
		n.subnet = netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/22", 100+i))
		n.capacity = 1021
		switch n.kind {
		case "dual":
			yes := true
			req.EnableIPv6 = &yes
			req.Subnets = []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("fd5a:0:%x::/64", i))}
		case "internal":
			req.Internal = true
		case "macvlan":
			// A parent has one macvlan network: the first takes the
			// uplink, the others a veth of their own whose peer is up
			// (macvlan children need carrier).
			parent := "uplink0"
			if i >= len(kinds) {
				parent = fmt.Sprintf("mv%d", i)
				s.h.InHost("ip", "link", "add", parent, "type", "veth", "peer", "name", parent+"p")
				s.h.InHost("ip", "link", "set", parent, "up")
				s.h.InHost("ip", "link", "set", parent+"p", "up")
				s.parents = append(s.parents, parent, parent+"p")
			}
			req.Driver = "macvlan"
			req.Options = map[string]string{"parent": parent}
		case "small":
			n.subnet = netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/26", 100+i))
			n.capacity = 61
		}
		req.Subnets = append(req.Subnets, n.subnet)
		if _, err := s.h.Client.CreateNetwork(s.t.Context(), req); err != nil {
			s.t.Fatalf("create network %s (%s): %v", n.name, n.kind, err)
		}
		n.prober = s.h.Name(fmt.Sprintf("probe%d", i))
		if _, err := s.h.Client.CreateSandbox(s.t.Context(), api.SandboxCreate{Name: n.prober, Networks: []string{n.name}}); err != nil {
			s.t.Fatalf("create prober %s: %v", n.prober, err)
		}
		s.nets = append(s.nets, n)
		s.cni.Conflist(n.name, map[string]any{"type": "ebpfnet", "network": n.name, "socket": s.h.Socket(),
			"capabilities": map[string]bool{"portMappings": true}})
	}
	s.dockerNet = pluginID(s.h, "docker")
	if err := s.h.PluginCall("/NetworkDriver.CreateNetwork", map[string]any{"NetworkID": s.dockerNet,
		"Options":  map[string]any{"com.docker.network.generic": map[string]any{}},
		"IPv4Data": []map[string]any{{"AddressSpace": "LocalDefault", "Pool": dockerSubnet + ".0/24", "Gateway": dockerSubnet + ".1/24"}},
	}, nil); err != nil {
		s.t.Fatalf("create the Docker network: %v", err)
	}
}

// operate does one random operation, chosen to keep the population near
// the most the run allows once it has grown there.
func (s *soak) operate(ctx context.Context) {
	s.mu.Lock()
	n := len(s.sbs)
	op := s.pick(n)
	var sb *soakSandbox
	if op != "create" && op != "cni-add" && op != "network-cycle" && op != "docker-cycle" {
		sb = s.pickSandbox(func(sb *soakSandbox) bool {
			switch op {
			case "cni-del":
				return sb.cni != ""
			case "remove":
				return sb.cni == ""
			case "publish":
				return sb.cni == "" && len(sb.nets) > 0 && sb.nets[0].publishes()
			case "unpublish":
				return sb.cni == "" && len(sb.ports) > 0
			case "connect":
				return sb.cni == "" && len(sb.nets) < 3
			case "disconnect":
				return sb.cni == "" && len(sb.nets) > 1
			}
			return false
		})
		if sb == nil {
			s.mu.Unlock()
			return
		}
		sb.busy = true
	}
	s.seq++
	seq := s.seq
	r := rand.New(rand.NewPCG(s.rng.Uint64(), uint64(seq)))
	s.mu.Unlock()
	// Not ctx: an operation cut off at the end would leave the model
	// unsure of what the daemon did.
	err := s.do(s.t.Context(), op, sb, seq, r)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sb != nil {
		sb.busy = false
	}
	if err != nil {
		s.opErrors = append(s.opErrors, fmt.Sprintf("%s #%d: %v", op, seq, err))
		s.t.Errorf("%s #%d: %v", op, seq, err)
		return
	}
	s.ops[op]++
}

// pick chooses an operation: creations dominate while the population is
// below half the most, removals once it is near the most.
func (s *soak) pick(n int) string {
	create, remove := 30, 10
	switch {
	case n < s.cfg.sandboxes/2:
		create, remove = 60, 5
	case n >= s.cfg.sandboxes:
		create, remove = 0, 40
	}
	weights := []struct {
		op string
		w  int
	}{{"create", create}, {"remove", remove}, {"publish", 15}, {"unpublish", 10}, {"connect", 8}, {"disconnect", 8},
		{"cni-add", create / 4}, {"cni-del", remove / 4}, {"network-cycle", 1}, {"docker-cycle", 2}}
	total := 0
	for _, w := range weights {
		total += w.w
	}
	x := s.rng.IntN(total)
	for _, w := range weights {
		if x < w.w {
			return w.op
		}
		x -= w.w
	}
	return "create"
}

// pickSandbox is a random idle sandbox that ok accepts, nil if none.
func (s *soak) pickSandbox(ok func(*soakSandbox) bool) *soakSandbox {
	names := make([]string, 0, len(s.sbs))
	for name, sb := range s.sbs {
		if !sb.busy && ok(sb) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names) // map order is random, the seed's choices are not
	return s.sbs[names[s.rng.IntN(len(names))]]
}

// takePort is a host port no publication of the model holds, the one
// freed longest ago.
func (s *soak) takePort() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.freePorts[0]
	s.freePorts = s.freePorts[1:]
	return p
}

func (s *soak) releasePorts(ps ...uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.freePorts = append(s.freePorts, ps...)
}

// sources are random source lists for a publication: none, an allow list
// that holds the outside client, one that does not, or a deny of it; and
// whether they let the outside client in.
func (s *soak) sources(r *rand.Rand) (ports.Sources, bool) {
	p := netip.MustParsePrefix
	switch r.IntN(4) {
	case 1:
		return ports.Sources{Allow: []netip.Prefix{p("10.99.0.0/24"), p(fmt.Sprintf("198.51.100.%d/32", r.IntN(256)))}}, true
	case 2:
		return ports.Sources{Allow: []netip.Prefix{p("192.0.2.0/24")}}, false
	case 3:
		return ports.Sources{Allow: []netip.Prefix{p("10.0.0.0/8")}, Deny: []netip.Prefix{p(s.out.IP + "/32")}}, false
	}
	return ports.Sources{}, true
}

// published notes a port sb was given, open to the outside client or not.
func (s *soak) published(sb *soakSandbox, m ports.Mapping, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sb.ports = append(sb.ports, m.HostPort)
	if open {
		if sb.open == nil {
			sb.open = map[uint16]string{}
		}
		sb.open[m.HostPort] = string(m.Proto)
	}
}

func (s *soak) mapping(r *rand.Rand) ports.Mapping {
	proto := ports.TCP
	if r.IntN(3) == 0 {
		proto = ports.UDP
	}
	return ports.Mapping{Proto: proto, HostPort: s.takePort(), Port: testbed.EchoPort}
}

// do runs one operation against the daemon and updates the model.
func (s *soak) do(ctx context.Context, op string, sb *soakSandbox, seq int, r *rand.Rand) error {
	c := s.h.Client
	switch op {
	case "create":
		net := s.nets[r.IntN(len(s.nets))]
		name := s.h.Name(fmt.Sprintf("s%d", seq))
		req := api.SandboxCreate{Name: name, Networks: []string{net.name}}
		open := false
		if net.publishes() && r.IntN(3) == 0 {
			req.Publish = []ports.Mapping{s.mapping(r)}
			req.PublishSources, open = s.sources(r)
		}
		sbox, err := c.CreateSandbox(ctx, req)
		if err != nil {
			for _, m := range req.Publish {
				s.releasePorts(m.HostPort)
			}
			if s.full(net) {
				return nil
			}
			return fmt.Errorf("create %s on %s: %w", name, net.name, err)
		}
		nsb := &soakSandbox{name: name, ns: s.h.NS(name), nets: []*soakNet{net}}
		for _, m := range req.Publish {
			s.published(nsb, m, open)
		}
		stop, err := testbed.ServeUntilStopped(nsb.ns, testbed.EchoPort)
		if err != nil {
			return err
		}
		nsb.stop = stop
		s.mu.Lock()
		s.sbs[name] = nsb
		s.noteAddresses(sbox)
		s.mu.Unlock()
	case "remove":
		sb.stop()
		if err := c.RemoveSandbox(ctx, sb.name, true); err != nil {
			return fmt.Errorf("remove %s: %w", sb.name, err)
		}
		s.forget(sb)
	case "publish":
		m := s.mapping(r)
		sources, open := s.sources(r)
		if _, err := c.Publish(ctx, sb.name, api.Ports{Mappings: []ports.Mapping{m}, Sources: sources}); err != nil {
			s.releasePorts(m.HostPort)
			return fmt.Errorf("publish %d on %s: %w", m.HostPort, sb.name, err)
		}
		s.published(sb, m, open)
	case "unpublish":
		p := sb.ports[r.IntN(len(sb.ports))]
		if _, err := c.Unpublish(ctx, sb.name, []ports.Mapping{{HostPort: p}}); err != nil {
			return fmt.Errorf("unpublish %d of %s: %w", p, sb.name, err)
		}
		s.mu.Lock()
		sb.ports = slices.DeleteFunc(sb.ports, func(q uint16) bool { return q == p })
		delete(sb.open, p)
		s.mu.Unlock()
		s.releasePorts(p)
	case "connect":
		var candidates []*soakNet
		for _, n := range s.nets {
			if !slices.Contains(sb.nets, n) && !s.full(n) {
				candidates = append(candidates, n)
			}
		}
		if len(candidates) == 0 {
			return nil
		}
		n := candidates[r.IntN(len(candidates))]
		if err := c.Connect(ctx, n.name, api.Connect{Sandbox: sb.name}); err != nil {
			if s.full(n) {
				return nil
			}
			return fmt.Errorf("connect %s to %s: %w", sb.name, n.name, err)
		}
		s.mu.Lock()
		sb.nets = append(sb.nets, n)
		s.mu.Unlock()
		if sbox, err := c.Sandbox(ctx, sb.name); err == nil {
			s.mu.Lock()
			s.noteAddresses(sbox)
			s.mu.Unlock()
		}
	case "disconnect":
		// Never the first network: its endpoint holds the publications.
		i := 1 + r.IntN(len(sb.nets)-1)
		if err := c.Disconnect(ctx, sb.nets[i].name, api.Disconnect{Sandbox: sb.name}); err != nil {
			return fmt.Errorf("disconnect %s from %s: %w", sb.name, sb.nets[i].name, err)
		}
		s.mu.Lock()
		sb.nets = slices.Delete(sb.nets, i, i+1)
		s.mu.Unlock()
	case "cni-add":
		return s.cniAdd(ctx, seq, r)
	case "cni-del":
		sb.stop()
		if out, err := s.cni.Run("del", sb.cni, sb.ns); err != nil {
			return fmt.Errorf("cnitool del %s %s: %v: %s", sb.cni, sb.ns, err, lastLine(out))
		}
		if out, err := exec.Command("ip", "netns", "del", filepath.Base(sb.ns)).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns del %s: %v: %s", sb.ns, err, out)
		}
		s.forget(sb)
	case "network-cycle":
		return s.networkCycle(ctx, seq)
	case "docker-cycle":
		return s.dockerCycle(ctx, seq)
	}
	return nil
}

// full says whether a network may have no address left for one more
// endpoint: then a refusal is no finding.
func (s *soak) full(n *soakNet) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	count := 1 // the prober
	for _, sb := range s.sbs {
		if slices.Contains(sb.nets, n) {
			count++
		}
	}
	return count >= n.capacity-s.cfg.workers
}

func (s *soak) forget(sb *soakSandbox) {
	s.mu.Lock()
	delete(s.sbs, sb.name)
	sb.closed = true
	s.mu.Unlock()
	s.releasePorts(sb.ports...)
}

// noteAddresses keeps the addresses a sandbox was given, for ipamFree.
func (s *soak) noteAddresses(sb api.Sandbox) {
	for net, ep := range sb.NetworkSettings.Networks {
		if a, err := netip.ParseAddr(ep.IPAddress); err == nil && !slices.Contains(s.used[net], a) {
			s.used[net] = append(s.used[net], a)
		}
	}
}

// cniAdd attaches a new namespace to a network with cnitool and ebpfnet's
// CNI plugin, with a port mapping half the time.
func (s *soak) cniAdd(ctx context.Context, seq int, r *rand.Rand) error {
	var nets []*soakNet
	for _, n := range s.nets {
		if n.kind == "bridge" || n.kind == "dual" {
			nets = append(nets, n)
		}
	}
	n := nets[r.IntN(len(nets))]
	if s.full(n) {
		return nil
	}
	name := s.h.Name(fmt.Sprintf("c%d", seq))
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	sb := &soakSandbox{name: name, ns: "/run/netns/" + name, cni: n.name, nets: []*soakNet{n}}
	var env []string
	if r.IntN(2) == 0 {
		p := s.takePort()
		s.published(sb, ports.Mapping{Proto: ports.TCP, HostPort: p}, true)
		env = append(env, testbed.PortMappings(fmt.Sprintf("%d:%d/tcp", p, testbed.EchoPort)))
	}
	s.mu.Lock()
	s.sbs[name] = sb // before the ADD: the checks then expect its namespace
	sb.busy = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		sb.busy = false
		s.mu.Unlock()
	}()
	if out, err := s.cni.Run("add", n.name, sb.ns, env...); err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		s.forget(sb)
		if s.full(n) {
			return nil
		}
		return fmt.Errorf("cnitool add %s %s: %v: %s", n.name, sb.ns, err, lastLine(out))
	}
	exec.Command("ip", "-n", name, "link", "set", "lo", "up").Run()
	stop, err := testbed.ServeUntilStopped(sb.ns, testbed.EchoPort)
	if err != nil {
		return err
	}
	s.mu.Lock()
	sb.stop = stop
	s.mu.Unlock()
	return nil
}

// networkCycle creates a network, a sandbox publishing a port on it, and
// removes both: what a network leaves behind piles up.
func (s *soak) networkCycle(ctx context.Context, seq int) error {
	s.mu.Lock()
	if s.netCycles < 0 { // one at a time: they share a subnet
		s.mu.Unlock()
		return nil
	}
	s.netCycles = -s.netCycles - 1
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.netCycles = -s.netCycles
		s.mu.Unlock()
	}()
	c := s.h.Client
	name, sbName := s.h.Name(fmt.Sprintf("cycle%d", seq)), s.h.Name(fmt.Sprintf("cs%d", seq))
	if _, err := c.CreateNetwork(ctx, api.NetworkCreate{Name: name, Subnets: []netip.Prefix{netip.MustParsePrefix("10.250.0.0/24")}}); err != nil {
		return fmt.Errorf("create network %s: %w", name, err)
	}
	p := s.takePort()
	defer s.releasePorts(p)
	_, err := c.CreateSandbox(ctx, api.SandboxCreate{Name: sbName, Networks: []string{name},
		Publish: []ports.Mapping{{Proto: ports.TCP, HostPort: p, Port: testbed.EchoPort}}})
	if err != nil {
		c.RemoveNetwork(ctx, name)
		return fmt.Errorf("create %s on %s: %w", sbName, name, err)
	}
	if err := c.RemoveSandbox(ctx, sbName, true); err != nil {
		return fmt.Errorf("remove %s: %w", sbName, err)
	}
	if err := c.RemoveNetwork(ctx, name); err != nil {
		return fmt.Errorf("remove network %s: %w", name, err)
	}
	return nil
}

// dockerSubnet is the /24 of the Docker network's endpoints, as Docker's
// own IPAM would hand out.
const dockerSubnet = "10.251.0"

// pluginID is a Docker-like ID (64 hex digits) for what, on host h.
func pluginID(h *testbed.Host, what string) string {
	sum := sha256.Sum256([]byte(h.Prefix + what))
	return hex.EncodeToString(sum[:])
}

// dockerCycle does what dockerd does for `docker run -p` and `docker rm`
// through the plugin, one at a time: CreateEndpoint, Join, moving the
// interface into the container and configuring it as dockerd does,
// ProgramExternalConnectivity, a probe through the published port, then
// RevokeExternalConnectivity, Leave and DeleteEndpoint.
func (s *soak) dockerCycle(ctx context.Context, seq int) (err error) {
	s.mu.Lock()
	if s.dockerCycling {
		s.mu.Unlock()
		return nil
	}
	s.dockerCycling = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.dockerCycling = false
		s.mu.Unlock()
	}()
	h := s.h
	eid, name := pluginID(h, fmt.Sprintf("ep%d", seq)), h.Name(fmt.Sprintf("d%d", seq))
	ids := map[string]any{"NetworkID": s.dockerNet, "EndpointID": eid}
	addr := fmt.Sprintf("%s.%d", dockerSubnet, 2+seq%250)
	run := func(args ...string) error {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("ip", "netns", "add", name); err != nil {
		return err
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	if err := h.PluginCall("/NetworkDriver.CreateEndpoint", map[string]any{"NetworkID": s.dockerNet, "EndpointID": eid,
		"Interface": map[string]any{"Address": addr + "/24"}}, nil); err != nil {
		return fmt.Errorf("CreateEndpoint %s: %w", addr, err)
	}
	var joined struct {
		InterfaceName struct{ SrcName string }
		Gateway       string
	}
	err = h.PluginCall("/NetworkDriver.Join", map[string]any{"NetworkID": s.dockerNet, "EndpointID": eid, "SandboxKey": "/run/netns/" + name}, &joined)
	if err == nil {
		host := filepath.Base(h.NetNS)
		err = errors.Join(run("ip", "-n", host, "link", "set", joined.InterfaceName.SrcName, "netns", name),
			run("ip", "-n", name, "link", "set", joined.InterfaceName.SrcName, "name", "eth0"),
			run("ip", "-n", name, "addr", "add", addr+"/24", "dev", "eth0"),
			run("ip", "-n", name, "link", "set", "eth0", "up"), run("ip", "-n", name, "link", "set", "lo", "up"),
			run("ip", "-n", name, "route", "add", "default", "via", joined.Gateway))
	}
	if err == nil {
		p := s.takePort()
		defer s.releasePorts(p)
		err = h.PluginCall("/NetworkDriver.ProgramExternalConnectivity", map[string]any{"NetworkID": s.dockerNet, "EndpointID": eid,
			"Options": map[string]any{"com.docker.network.portmap": []map[string]any{{"Proto": 6, "Port": testbed.EchoPort, "HostPort": p}}}}, nil)
		if err == nil {
			var stop func()
			if stop, err = testbed.ServeUntilStopped("/run/netns/"+name, testbed.EchoPort); err == nil {
				err = probeEcho(s.out.NS, "tcp", fmt.Sprintf("%s:%d", hostIP, p))
				stop()
			}
		}
		if err != nil {
			err = fmt.Errorf("docker endpoint %s published on %d: %w", addr, p, err)
		}
	}
	// Whatever failed, dockerd takes the endpoint down so.
	return errors.Join(err, h.PluginCall("/NetworkDriver.RevokeExternalConnectivity", ids, nil),
		h.PluginCall("/NetworkDriver.Leave", ids, nil), h.PluginCall("/NetworkDriver.DeleteEndpoint", ids, nil))
}

// sendTraffic sends traffic meanwhile: outside to published ports, sandboxes
// out through masquerade. It only counts: the churn may remove what it
// aims at. The sandbox it uses is kept busy so that no removal races it.
func (s *soak) sendTraffic(ctx context.Context) {
	for ctx.Err() == nil {
		s.gate.RLock()
		s.mu.Lock()
		sb := s.pickSandbox(func(sb *soakSandbox) bool { return sb.stop != nil && sb.nets[0].publishes() })
		if sb != nil {
			sb.busy = true
		}
		s.mu.Unlock()
		if sb != nil {
			var err error
			if len(sb.open) > 0 && rand.IntN(2) == 0 {
				for port, proto := range sb.open {
					err = probeOnce(s.out.NS, proto, fmt.Sprintf("%s:%d", hostIP, port))
					break
				}
			} else {
				err = testbed.TCP(sb.ns, s.out.IP)
			}
			s.mu.Lock()
			sb.busy = false
			if err == nil {
				s.traffic.ok++
			} else {
				s.traffic.failed++
			}
			s.mu.Unlock()
		}
		s.gate.RUnlock()
		time.Sleep(20 * time.Millisecond)
	}
}

// probeEcho is a TCP or UDP echo through addr from the namespace at ns, with
// two retries: probes run beside the churn on two shared cores.
func probeEcho(ns, network, addr string) error {
	var err error
	for range 3 {
		if err = probeOnce(ns, network, addr); err == nil {
			return nil
		}
	}
	return err
}

func probeOnce(ns, network, addr string) error {
	if network == "udp" {
		return testbed.UDPTo(ns, addr)
	}
	return testbed.TCPTo(ns, addr)
}

// diagnose looks again at a failed probe. The kernel's neighbour tables
// hold gc_thresh3 entries (1,024 by default) for every namespace of the
// machine together, and past gc_thresh2 (512) evict entries, unresolved
// ones included, every 5 s (forced_gc_runs); full, they refuse new ones
// (table_fulls). With a thousand sandboxes, each with its gateway's
// entry and the probers with one per neighbour, a probe may so fail for
// a few seconds with nothing wrong in ebpfnet. A probe that fails while
// the kernel evicts or refuses neighbours, and answers 10 s later, is
// counted and not failed; any other failure is.
func (s *soak) diagnose(ns, proto, dst string, err error) error {
	host, _, _ := net.SplitHostPort(dst)
	neigh, _ := exec.Command("ip", "-n", filepath.Base(ns), "neigh", "show", host).CombinedOutput()
	time.Sleep(10 * time.Second)
	if probeOnce(ns, proto, dst) != nil {
		return fmt.Errorf("%w, and still 10 s later (neighbour: %q)", err, strings.TrimSpace(string(neigh)))
	}
	if neighbourTableFulls() > s.tableFulls {
		s.mu.Lock()
		s.neighbourMisses++
		s.mu.Unlock()
		return nil
	}
	return fmt.Errorf("%w, though the kernel evicted no neighbours; it answers 10 s later (neighbour: %q)", err, strings.TrimSpace(string(neigh)))
}

// neighbourTableFulls is how often the kernel's ARP and NDP tables were
// full, or evicted entries for being near it, since it started
// (/proc/net/stat, a row per CPU).
func neighbourTableFulls() int {
	n := 0
	for _, table := range []string{"arp_cache", "ndisc_cache"} {
		data, err := os.ReadFile("/proc/net/stat/" + table)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		head := strings.Fields(lines[0])
		for _, name := range []string{"table_fulls", "forced_gc_runs"} {
			col := slices.Index(head, name)
			for _, line := range lines[1:] {
				if f := strings.Fields(line); col >= 0 && col < len(f) {
					v, _ := strconv.ParseInt(f[col], 16, 64)
					n += int(v)
				}
			}
		}
	}
	return n
}

// reachable says whether the outside client may open flows to a binding:
// the most specific prefix holding it decides; none, an allow list
// refuses it.
func reachable(b api.PortBinding, client netip.Addr) bool {
	best, allow := -1, len(b.Allow) == 0
	for _, l := range []struct {
		prefixes []netip.Prefix
		allow    bool
	}{{b.Allow, true}, {b.Deny, false}} {
		for _, p := range l.prefixes {
			if p.Contains(client) && p.Bits() > best {
				best, allow = p.Bits(), l.allow
			}
		}
	}
	return allow
}

// soakDefaultTable is how many sandboxes the kernel's default neighbour
// tables (gc_thresh3, 1,024 entries for every namespace together) serve:
// beyond it, as on any host of that many containers, Docker's or
// Kubernetes', the host's operator sizes them.
const soakDefaultTable = 500

// sizeNeighbourTables sizes the machine's neighbour tables, both
// families', for n sandboxes, as an operator of a host of n containers
// does (sysctl net.ipv4.neigh.default.gc_thresh1/2/3), until the test
// ends: the sandboxes' gateways are permanent entries, outside the
// collector's count, but a check's probes and their answers are two
// entries each, which the collector keeps 5 s at least.
func sizeNeighbourTables(t *testing.T, n int) {
	t.Helper()
	for _, family := range []string{"ipv4", "ipv6"} {
		for i, size := range []int{n, 4 * n, 8 * n} {
			key := fmt.Sprintf("/proc/sys/net/%s/neigh/default/gc_thresh%d", family, i+1)
			was, err := os.ReadFile(key)
			if err != nil {
				t.Fatal(err)
			}
			must(t, os.WriteFile(key, []byte(strconv.Itoa(size)), 0o644))
			t.Cleanup(func() { os.WriteFile(key, was, 0o644) })
		}
	}
}

// soakProbesPerSecond is how many probes a check starts a second: two
// neighbour entries each, kept 5 s, stay well inside the kernel's table.
const soakProbesPerSecond = 40

// check probes what the store records, sample of them (all with sample
// 0), and looks for anything it does not record.
func (s *soak) check(when string, sample int) {
	t := s.t
	t.Helper()
	start := time.Now()
	ctx := t.Context()
	s.tableFulls = neighbourTableFulls()
	sbs, err := s.h.Client.Sandboxes(ctx)
	if err != nil {
		t.Fatalf("%s: list sandboxes: %v", when, err)
	}
	nets, err := s.h.Client.Networks(ctx)
	if err != nil {
		t.Fatalf("%s: list networks: %v", when, err)
	}
	var failures []string
	fail := func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) }

	// The store names what the churn made, no more, no less.
	recorded := map[string]api.Sandbox{}
	cniAttachments := 0
	for _, sb := range sbs {
		if strings.HasPrefix(sb.Name, "cnitool-") {
			cniAttachments++
			continue
		}
		recorded[sb.Name] = sb
	}
	s.mu.Lock()
	wantCNI := 0
	var want []string
	for _, sb := range s.sbs {
		if sb.cni != "" {
			wantCNI++
		} else {
			want = append(want, sb.name)
		}
	}
	for _, n := range s.nets {
		want = append(want, n.prober)
	}
	s.mu.Unlock()
	for _, name := range want {
		if _, ok := recorded[name]; !ok {
			fail("sandbox %s was made and never removed, but the store does not name it", name)
		}
	}
	if len(recorded) != len(want) {
		fail("the store names %d sandboxes, the churn left %d", len(recorded), len(want))
	}
	if cniAttachments != wantCNI {
		fail("the store names %d CNI attachments, the churn left %d", cniAttachments, wantCNI)
	}

	// Every endpoint answers its network's prober, every publication the
	// outside client it lets in (and refuses one it does not), and
	// sandboxes with a way out reach the outside.
	probers := map[string]string{}
	for _, n := range s.nets {
		probers[n.name] = s.h.NS(n.prober)
	}
	type probeJob struct {
		what           string
		ns, proto, dst string
		blocked        bool // the job is to see it refused
	}
	var jobs []probeJob
	probed := 0
	s.mu.Lock()
	order := s.rng.Perm(len(sbs))
	s.mu.Unlock()
	for _, i := range order {
		sb := sbs[i]
		if sample > 0 && probed >= sample {
			break
		}
		if slices.ContainsFunc(s.nets, func(n *soakNet) bool { return n.prober == sb.Name }) {
			continue
		}
		probed++
		for net, ep := range sb.NetworkSettings.Networks {
			from, ok := probers[net]
			if !ok {
				continue
			}
			for _, a := range []string{ep.IPAddress, ep.GlobalIPv6Address} {
				if a != "" {
					jobs = append(jobs, probeJob{what: fmt.Sprintf("endpoint %s of %s on %s", a, sb.Name, net), ns: from, proto: "tcp", dst: echoAddr(a)})
				}
			}
		}
		for port, bindings := range sb.NetworkSettings.Ports {
			_, proto, _ := strings.Cut(port, "/")
			for _, b := range bindings {
				if b.HostIP != "" && b.HostIP != "0.0.0.0" {
					continue
				}
				jobs = append(jobs, probeJob{what: fmt.Sprintf("publication %s/%s of %s (allow %v, deny %v)", b.HostPort, proto, sb.Name, b.Allow, b.Deny),
					ns: s.out.NS, proto: proto, dst: hostIP + ":" + b.HostPort, blocked: !reachable(b, netip.MustParseAddr(s.out.IP))})
			}
		}
	}
	var (
		next  = make(chan probeJob)
		jobMu sync.Mutex
		wg    sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for j := range next {
				var err error
				if j.blocked {
					if err = probeOnce(j.ns, j.proto, j.dst); err == nil {
						err = fmt.Errorf("let %s in, which its lists refuse", s.out.IP)
					} else {
						err = nil
					}
				} else {
					err = probeEcho(j.ns, j.proto, j.dst)
				}
				if err != nil && !j.blocked {
					err = s.diagnose(j.ns, j.proto, j.dst, err)
				}
				if err != nil {
					jobMu.Lock()
					fail("%s: %v", j.what, err)
					jobMu.Unlock()
				}
			}
		})
	}
	// Every namespace's neighbours share one table (gc_thresh3, 1,024
	// entries by default), whose collector evicts no entry younger than
	// 5 s, and a probe of an endpoint makes two (the prober's of it, its of
	// the prober): a thousand endpoints probed at once fill it, and ARP
	// fails for the rest. Probes start no faster than the table turns
	// over.
	pace := time.NewTicker(time.Second / soakProbesPerSecond)
	defer pace.Stop()
	for _, j := range jobs {
		<-pace.C
		next <- j
	}
	close(next)
	wg.Wait()
	// What the host's interfaces hold follows them through the host
	// watcher, a moment after a change: leftovers are looked for again
	// for a few seconds before they count.
	var leaks []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		leaks = nil
		s.leaks(when, sbs, nets, func(format string, args ...any) { leaks = append(leaks, fmt.Sprintf(format, args...)) })
		if len(leaks) == 0 || time.Now().After(deadline) {
			break
		}
	}
	failures = append(failures, leaks...)
	s.record(s.sample())
	t.Logf("%s: %d sandboxes, %d probed, %d networks, in %s; operations so far %v; traffic %d answered, %d not; %d probes failed while the kernel evicted neighbours",
		when, len(sbs), probed, len(nets), time.Since(start).Round(time.Millisecond), s.opCounts(), s.traffic.ok, s.traffic.failed, s.neighbourMisses)
	if len(failures) > 0 {
		if len(failures) > 40 {
			failures = append(failures[:40], fmt.Sprintf("and %d more", len(failures)-40))
		}
		t.Fatalf("%s:\n%s", when, strings.Join(failures, "\n"))
	}
}

// lastLine is the last line of a command's output, where cnitool says
// what went wrong.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// echoAddr is addr:EchoPort.
func echoAddr(addr string) string { return net.JoinHostPort(addr, strconv.Itoa(testbed.EchoPort)) }

func (s *soak) opCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.ops)
}

// leaks looks for what the store does not name: interfaces, namespaces,
// /etc/netns entries, pins, map entries and conntrack entries of removed
// addresses.
func (s *soak) leaks(when string, sbs []api.Sandbox, nets []api.Network, fail func(string, ...any)) {
	hostIfaces := map[string]bool{"lo": true, "uplink0": true}
	for _, p := range s.parents {
		hostIfaces[p] = true
	}
	addrs := map[netip.Addr]bool{}
	ports := map[[2]uint16]bool{} // host port, protocol
	var subnets []netip.Prefix
	gateways := map[netip.Addr]bool{}
	for _, n := range nets {
		if b := n.Options["com.docker.network.bridge.name"]; b != "" {
			hostIfaces[b] = true
		}
		for _, c := range n.IPAM.Config {
			if p, err := netip.ParsePrefix(c.Subnet); err == nil {
				subnets = append(subnets, p)
			}
			if g, err := netip.ParseAddr(c.Gateway); err == nil {
				gateways[g] = true
			}
		}
	}
	for _, n := range s.nets {
		subnets = append(subnets, n.subnet)
	}
	subnets = append(subnets, netip.MustParsePrefix("10.250.0.0/24"), netip.MustParsePrefix("fd5a::/32"))
	namespaces := map[string]bool{s.h.Prefix + "-host": true, s.h.Prefix + "-out": true}
	etc := map[string]bool{}
	for _, sb := range sbs {
		if sb.NetworkSettings.SandboxKey != "" && !strings.HasPrefix(sb.Name, "cnitool-") {
			namespaces[filepath.Base(sb.NetworkSettings.SandboxKey)] = true
			etc[sb.Name] = true
		}
		for _, ep := range sb.NetworkSettings.Networks {
			if ep.HostInterface != "" {
				hostIfaces[ep.HostInterface] = true
			}
			for _, a := range []string{ep.IPAddress, ep.GlobalIPv6Address} {
				if ip, err := netip.ParseAddr(a); err == nil {
					addrs[ip] = true
				}
			}
		}
		for port, bindings := range sb.NetworkSettings.Ports {
			proto := uint16(6)
			if strings.HasSuffix(port, "/udp") {
				proto = 17
			}
			for _, b := range bindings {
				if p, err := strconv.Atoi(b.HostPort); err == nil {
					ports[[2]uint16{uint16(p), proto}] = true
				}
			}
		}
	}
	s.mu.Lock()
	for _, sb := range s.sbs {
		if sb.cni != "" {
			namespaces[filepath.Base(sb.ns)] = true
		}
	}
	s.mu.Unlock()

	// Interfaces of the host namespace, and the pins of their programs.
	ifindex := map[uint32]bool{}
	hostAddrs := map[netip.Addr]bool{}
	err := namespace.Do(s.h.NetNS, func() error {
		as, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				hostAddrs[ip.Unmap()] = true
			}
		}
		links, err := netlink.LinkList()
		for _, l := range links {
			name := l.Attrs().Name
			if !hostIfaces[name] {
				fail("interface %s (%s) in the host namespace: no network or endpoint names it", name, l.Type())
			}
			if l.Type() == "veth" && hostIfaces[name] {
				ifindex[uint32(l.Attrs().Index)] = true
			}
		}
		return err
	})
	if err != nil {
		fail("list the host's interfaces: %v", err)
	}
	pinned, _ := os.ReadDir(filepath.Join(s.h.BPFFS(), "links"))
	for _, e := range pinned {
		if !hostIfaces[e.Name()] {
			fail("pinned links of %s, which no network or endpoint names", e.Name())
		}
	}
	cgroup, _ := os.ReadDir(filepath.Join(s.h.BPFFS(), "cgroup-links"))
	if len(cgroup) != s.cgroupLinks {
		fail("%d pinned cgroup links, %d at the start", len(cgroup), s.cgroupLinks)
	}

	// Namespaces and /etc/netns entries.
	entries, _ := filepath.Glob("/run/netns/" + s.h.Prefix + "*")
	for _, e := range entries {
		if !namespaces[filepath.Base(e)] {
			fail("namespace %s: no sandbox or CNI container has it", e)
		}
	}
	etcEntries, _ := os.ReadDir(filepath.Join(filepath.Dir(s.h.ResolvConf()), "etc", "netns"))
	for _, e := range etcEntries {
		if !etc[e.Name()] {
			fail("/etc/netns/%s: no sandbox has it", e.Name())
		}
	}

	// Map entries.
	inSubnets := func(a netip.Addr) bool {
		for _, p := range subnets {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	forMap(s.h, "endpoints", fail, func(k bpf.DatapathAddr, _ bpf.DatapathEndpointInfo) {
		if a := netip.AddrFrom16(k.B).Unmap(); !addrs[a] {
			fail("endpoints holds %s, which no endpoint has", a)
		}
	})
	forMap(s.h, "host_addrs", fail, func(k bpf.DatapathAddr, _ uint32) {
		if a := netip.AddrFrom16(k.B).Unmap(); !hostAddrs[a] {
			fail("host_addrs holds %s, which no interface of the host has", a)
		}
	})
	forMap(s.h, "ifaces", fail, func(k uint32, v bpf.DatapathIfaceInfo) {
		if !ifindex[k] {
			fail("ifaces holds ifindex %d (%s), no endpoint's interface", k, netip.AddrFrom16(v.Addr.B).Unmap())
		}
	})
	forMap(s.h, "publications", fail, func(k bpf.DatapathPublicationKey, _ bpf.DatapathPublication) {
		if !ports[[2]uint16{ntohs(k.Port), uint16(k.Proto)}] {
			fail("publications holds port %d/%d, which no sandbox publishes", ntohs(k.Port), k.Proto)
		}
	})
	forMap(s.h, "held_ports", fail, func(k bpf.DatapathHeldPortKey, _ uint32) {
		if !ports[[2]uint16{ntohs(k.Port), uint16(k.Proto)}] {
			fail("held_ports holds port %d/%d, which no sandbox publishes", ntohs(k.Port), k.Proto)
		}
	})
	forMap(s.h, "published_ports", fail, func(k bpf.DatapathTargetKey, _ uint32) {
		if a := netip.AddrFrom16(k.Addr.B).Unmap(); !addrs[a] {
			fail("published_ports holds %s:%d, which no endpoint has", a, ntohs(k.Port))
		}
	})
	forMap(s.h, "source_ranges", fail, func(k bpf.DatapathSourceKey, _ bpf.DatapathSourceAction) {
		if k.Pub.Port != 0 && !ports[[2]uint16{ntohs(k.Pub.Port), uint16(k.Pub.Proto)}] {
			fail("source_ranges holds a list of port %d/%d, which no sandbox publishes", ntohs(k.Pub.Port), k.Pub.Proto)
		}
	})
	ctCheck := func(table string) func(bpf.DatapathFlow, bpf.DatapathCtEntry) {
		return func(k bpf.DatapathFlow, v bpf.DatapathCtEntry) {
			for _, a := range []bpf.DatapathAddr{k.Saddr, k.Daddr, v.Nat.Saddr, v.Nat.Daddr} {
				ip := netip.AddrFrom16(a.B).Unmap()
				if inSubnets(ip) && !addrs[ip] && !gateways[ip] {
					fail("%s holds a flow of %s, which no endpoint has: %s:%d -> %s:%d", table, ip,
						netip.AddrFrom16(k.Saddr.B).Unmap(), k.Sport, netip.AddrFrom16(k.Daddr.B).Unmap(), k.Dport)
					return
				}
			}
		}
	}
	forMap(s.h, "ct", fail, ctCheck("ct"))
	forMap(s.h, "ct_new", fail, ctCheck("ct_new"))
	networks := 0
	forMap(s.h, "networks", fail, func(uint32, bpf.DatapathNetworkInfo) { networks++ })
	if networks > len(nets) {
		fail("networks holds %d networks, the store %d", networks, len(nets))
	}
}

// ntohs is a port as the maps hold it (network order) in host order.
func ntohs(p uint16) uint16 { return p>>8 | p<<8 }

// forMap calls fn with every entry of a pinned map.
func forMap[K, V any](h *testbed.Host, name string, fail func(string, ...any), fn func(K, V)) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(h.BPFFS(), name), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		fail("open pinned %s: %v", name, err)
		return
	}
	defer m.Close()
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		fn(k, v)
	}
	if err := it.Err(); err != nil {
		fail("read %s: %v", name, err)
	}
}

// ipamFree checks that the addresses endpoints were given and gave back
// are free again: a sandbox asking for each (up to 10 a network) gets it.
func (s *soak) ipamFree() {
	t := s.t
	t.Helper()
	ctx := t.Context()
	sbs, err := s.h.Client.Sandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	held := map[netip.Addr]bool{}
	for _, sb := range sbs {
		for _, ep := range sb.NetworkSettings.Networks {
			if a, err := netip.ParseAddr(ep.IPAddress); err == nil {
				held[a] = true
			}
		}
	}
	tried := 0
	for _, n := range s.nets {
		k := 0
		for _, a := range s.used[n.name] {
			if held[a] || k >= 10 {
				continue
			}
			k++
			name := s.h.Name(fmt.Sprintf("ipam%d", tried))
			tried++
			if _, err := s.h.Client.CreateSandbox(ctx, api.SandboxCreate{Name: name, Networks: []string{n.name}, IP: a}); err != nil {
				t.Errorf("%s was given back on %s, but a sandbox asking for it is refused: %v", a, n.name, err)
				continue
			}
			if err := s.h.Client.RemoveSandbox(ctx, name, true); err != nil {
				t.Errorf("remove %s: %v", name, err)
			}
		}
	}
	t.Logf("IPAM: %d addresses given back were free again", tried)
}

// drain removes everything the churn made, networks included.
func (s *soak) drain() {
	t := s.t
	t.Helper()
	ctx := t.Context()
	s.mu.Lock()
	sbs := slices.Collect(maps.Values(s.sbs))
	s.mu.Unlock()
	for _, sb := range sbs {
		var err error
		if sb.cni != "" {
			sb.stop()
			if out, e := s.cni.Run("del", sb.cni, sb.ns); e != nil {
				err = fmt.Errorf("%v: %s", e, out)
			}
			exec.Command("ip", "netns", "del", filepath.Base(sb.ns)).Run()
		} else {
			sb.stop()
			err = s.h.Client.RemoveSandbox(ctx, sb.name, true)
		}
		if err != nil {
			t.Errorf("remove %s: %v", sb.name, err)
		}
		s.forget(sb)
	}
	for _, n := range s.nets {
		if err := s.h.Client.RemoveSandbox(ctx, n.prober, true); err != nil {
			t.Errorf("remove %s: %v", n.prober, err)
		}
		if err := s.h.Client.RemoveNetwork(ctx, n.name); err != nil {
			t.Errorf("remove network %s: %v", n.name, err)
		}
	}
	s.nets = nil
	if err := s.h.PluginCall("/NetworkDriver.DeleteNetwork", map[string]any{"NetworkID": s.dockerNet}, nil); err != nil {
		t.Errorf("remove the Docker network: %v", err)
	}
}

// cleanup stops the echo servers and removes the CNI namespaces of a run
// that failed before draining; the host's cleanup removes the rest.
func (s *soak) cleanup() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sb := range s.sbs {
		if sb.stop != nil {
			sb.stop()
		}
		if sb.cni != "" {
			s.cni.Run("del", sb.cni, sb.ns)
			exec.Command("ip", "netns", "del", filepath.Base(sb.ns)).Run()
		}
	}
}

// soakSample is the daemon's health at one moment.
type soakSample struct {
	At         time.Duration // since the run started
	Sandboxes  int           // the model's, CNI containers included
	RSS        float64       // bytes
	Goroutines float64
	FDs        float64
	MapEntries map[string]int
	at         time.Time
}

// sample reads the daemon's RSS and open files from /proc, its
// goroutines from /metrics and map fill from status.
func (s *soak) sample() soakSample {
	pid := s.h.DaemonPID()
	smp := soakSample{at: time.Now(), MapEntries: map[string]int{}}
	s.mu.Lock()
	smp.Sandboxes = len(s.sbs)
	s.mu.Unlock()
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				smp.RSS = kb * 1024
			}
		}
	}
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		smp.FDs = float64(len(fds))
	}
	smp.Goroutines = goroutines(s.h)
	if st, err := s.h.Client.Status(s.t.Context()); err == nil {
		for _, m := range st.Maps {
			smp.MapEntries[m.Map] = m.Entries
		}
	}
	return smp
}

func (s *soak) record(smp soakSample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.start.IsZero() {
		s.start = smp.at
	}
	smp.At = smp.at.Sub(s.start)
	s.samples = append(s.samples, smp)
}

// goroutines scrapes go_goroutines from the daemon's /metrics, -1 if it
// cannot.
func goroutines(h *testbed.Host) float64 {
	// No keep-alive: an idle connection per scrape would be the test's
	// own leak of a goroutine and a file in the daemon.
	c := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", h.Socket())
		}}}
	resp, err := c.Get("http://ebpfnet/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil || families["go_goroutines"] == nil || len(families["go_goroutines"].Metric) == 0 {
		return -1
	}
	return families["go_goroutines"].Metric[0].GetGauge().GetValue()
}

// summary logs the run's operations and returns the largest sample.
func (s *soak) summary() soakSample {
	s.mu.Lock()
	defer s.mu.Unlock()
	var peak soakSample
	for _, smp := range s.samples {
		if smp.Sandboxes >= peak.Sandboxes {
			peak = smp
		}
	}
	total := 0
	for _, n := range s.ops {
		total += n
	}
	s.t.Logf("ran %d operations (%v) in %s: %.1f/s; traffic: %d probes answered, %d not (the churn removes their ends)",
		total, s.ops, s.cfg.duration, float64(total)/s.cfg.duration.Seconds(), s.traffic.ok, s.traffic.failed)
	return peak
}

// settled waits for the daemon's goroutines and files to come back to
// the baseline with nothing left (goroutines of removed sandboxes end on
// their own time), and returns the last sample.
func (s *soak) settled(base soakSample) soakSample {
	deadline := time.Now().Add(20 * time.Second)
	for {
		smp := s.sample()
		if (smp.Goroutines <= base.Goroutines+soakGoroutineSlack && smp.FDs <= base.FDs+soakFDSlack) || time.Now().After(deadline) {
			return smp
		}
		time.Sleep(time.Second)
	}
}

// What a daemon with nothing but its networks may hold above the
// baseline, a daemon as just started: idle HTTP connections of the API
// and their goroutines.
const (
	soakGoroutineSlack = 10
	soakFDSlack        = 5
)

// judge fails the run on growth. With everything removed, goroutines and
// open files must be back at the start's (within a small slack), and
// every map of entries per object back to its start; memory may stay
// what the peak took (Go returns it slowly), but no more than 1.5 times
// the peak sample's.
func (s *soak) judge(base, end, peak soakSample) {
	t := s.t
	t.Logf("daemon: RSS %.1f MB at the start, %.1f MB at the peak (%d sandboxes), %.1f MB at the end; goroutines %v -> %v -> %v; open files %v -> %v -> %v",
		base.RSS/1e6, peak.RSS/1e6, peak.Sandboxes, end.RSS/1e6, base.Goroutines, peak.Goroutines, end.Goroutines, base.FDs, peak.FDs, end.FDs)
	if end.Goroutines > base.Goroutines+soakGoroutineSlack {
		t.Errorf("the daemon has %v goroutines with everything removed, %v at the start", end.Goroutines, base.Goroutines)
	}
	if end.FDs > base.FDs+soakFDSlack {
		t.Errorf("the daemon has %v open files with everything removed, %v at the start", end.FDs, base.FDs)
	}
	for name, n := range end.MapEntries {
		switch name {
		case "ct", "ct_new", "ct_sources", "ct_released", "frags", "sk_peers":
			continue // flows of the traffic, which expire on their own
		case "host_addrs":
			continue // the host's, which leaks checks against its interfaces
		}
		if n > base.MapEntries[name] {
			t.Errorf("map %s holds %d entries with everything removed, %d at the start", name, n, base.MapEntries[name])
		}
	}
	if end.RSS > 1.5*peak.RSS && end.RSS > base.RSS+50e6 {
		t.Errorf("the daemon's RSS grew to %.1f MB with everything removed, from %.1f MB at the peak", end.RSS/1e6, peak.RSS/1e6)
	}
	// Over the run, with the population near its most, per sandbox:
	// the second half of the samples against the first.
	var steady []soakSample
	for _, smp := range s.samples {
		if smp.Sandboxes >= s.cfg.sandboxes*3/4 {
			steady = append(steady, smp)
		}
	}
	if len(steady) >= 6 {
		half := len(steady) / 2
		per := func(ss []soakSample, f func(soakSample) float64) float64 {
			var sum float64
			for _, smp := range ss {
				sum += f(smp) / float64(smp.Sandboxes)
			}
			return sum / float64(len(ss))
		}
		for _, m := range []struct {
			name  string
			f     func(soakSample) float64
			limit float64 // growth allowed, as a ratio
		}{{"goroutines", func(x soakSample) float64 { return x.Goroutines }, 1.15},
			{"open files", func(x soakSample) float64 { return x.FDs }, 1.15},
			{"RSS", func(x soakSample) float64 { return x.RSS }, 1.3}} {
			a, b := per(steady[:half], m.f), per(steady[half:], m.f)
			t.Logf("%s per sandbox near the most: %.3g in the first half, %.3g in the second", m.name, a, b)
			if b > m.limit*a {
				t.Errorf("the daemon's %s per sandbox grew from %.3g to %.3g over the run (more than %.0f%%)", m.name, a, b, (m.limit-1)*100)
			}
		}
	}
}
