package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// Maps wraps the maps of one loaded datapath.
type Maps struct {
	m *bpf.DatapathMaps
}

// New wraps loaded maps.
func New(m *bpf.DatapathMaps) *Maps { return &Maps{m: m} }

// Network is what the datapath knows about a bridge network.
type Network struct {
	Index       uint32
	Subnet      netip.Prefix
	Gateway     netip.Addr
	GatewayMAC  net.HardwareAddr // the bridge's: the source of frames delivered to endpoints
	ICCDisabled bool
	Internal    bool
	Masquerade  bool
	// StackRoutes leaves the flows the datapath does not translate to the
	// host's stack, untracked (a chained network: its plugin masquerades).
	StackRoutes bool
	// Direct is who outside the host may reach sandbox ports by routing
	// to their addresses (the gateway mode).
	Direct DirectAccess
	// The network's IPv6 side, when it has one (Subnet6 valid): its own
	// masquerade and gateway mode, as Docker's gateway_mode_ipv6.
	Subnet6     netip.Prefix
	Gateway6    netip.Addr
	Masquerade6 bool
	Direct6     DirectAccess
	// Tunnel is an overlay network's VXLAN device (ifindex), where frames
	// for endpoints on other hosts go; 0 for a network of this host alone.
	Tunnel uint32
}

// DirectAccess is what a network's gateway mode lets outside clients reach
// by routing to a sandbox's address rather than through a published host
// port.
type DirectAccess uint8

const (
	DirectNone      DirectAccess = iota // Docker's "nat" and "isolated": published host ports only
	DirectPublished                     // "routed": the sandbox ports that are published
	DirectAll                           // "nat-unprotected": every port
)

// Iface is an endpoint's host-side interface.
type Iface struct {
	Ifindex uint32
	Network uint32     // the network's Index
	Addr    netip.Addr // the endpoint's IPv4 address
	Addr6   netip.Addr // its IPv6 address, if any
	// MAC is the hardware address the endpoint sends from, where ebpfnet
	// made its veth: frames from any other are dropped. Nil: not checked.
	MAC net.HardwareAddr
	// XDPTarget says the interface takes frames XDP redirects (a veth
	// whose peer is in NAPI mode): the uplinks' XDP path may deliver to it.
	XDPTarget bool
	// Egress and Ingress are the endpoint's bandwidth limits: of what its
	// sandbox sends, and of what reaches it.
	Egress, Ingress Rate
}

// Endpoint is where packets for one of an endpoint's addresses (of either
// family) are delivered.
type Endpoint struct {
	Addr    netip.Addr
	Ifindex uint32 // host side of its veth
	Network uint32
	MAC     net.HardwareAddr
}

// Publication is a published host port and where it leads.
type Publication struct {
	// HostAddr is the host address, or every address of the host of a
	// family: 0.0.0.0 (or an invalid address) for IPv4, :: for IPv6.
	HostAddr netip.Addr
	HostPort uint16
	Proto    uint8 // IPPROTO_TCP or IPPROTO_UDP
	Addr     netip.Addr
	Port     uint16
	// Sources are who may open flows to it; none: everyone, or the
	// daemon's default (Desired.DefaultSources).
	Sources Sources
	// Backends, when not nil, make it a balanced publication (publish
	// --balance): its new flows are spread over them (maglevTable), and
	// Addr and Port are unused.
	Backends []Backend
}

// Balanced reports whether p is a balanced publication.
func (p Publication) Balanced() bool { return p.Backends != nil }

// addr16 gives an address as the datapath holds it (union addr): IPv6 as it
// is, IPv4 v4-mapped. An invalid address gives ::.
func addr16(a netip.Addr) bpf.DatapathAddr {
	if !a.IsValid() {
		return bpf.DatapathAddr{}
	}
	return bpf.DatapathAddr{B: a.Unmap().As16()}
}

// Addr is the address the datapath holds as a, the inverse of addr16.
func Addr(a bpf.DatapathAddr) netip.Addr { return netip.AddrFrom16(a.B).Unmap() }

// be16 gives the uint16 whose in-memory bytes are port in network order.
func be16(port uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], port)
	return binary.NativeEndian.Uint16(b[:])
}

func mac6(hw net.HardwareAddr) (out [6]uint8) {
	copy(out[:], hw)
	return out
}

func networkValue(n Network) bpf.DatapathNetworkInfo {
	var common bpf.DatapathNetworkFlag
	if n.ICCDisabled {
		common |= bpf.DatapathNetworkFlagNETWORK_ICC_DISABLED
	}
	if n.Internal {
		common |= bpf.DatapathNetworkFlagNETWORK_INTERNAL
	}
	if n.StackRoutes {
		common |= bpf.DatapathNetworkFlagNETWORK_STACK_ROUTES
	}
	v := bpf.DatapathNetworkInfo{
		Flags:      common | familyFlags(n.Masquerade, n.Direct),
		Gateway:    addr16(n.Gateway),
		GatewayMac: mac6(n.GatewayMAC),
		Tunnel:     n.Tunnel,
	}
	if n.Subnet6.IsValid() {
		v.Flags6 = common | familyFlags(n.Masquerade6, n.Direct6)
		v.Gateway6 = addr16(n.Gateway6)
	}
	return v
}

// familyFlags are the flags each family of a network has its own of.
func familyFlags(masquerade bool, direct DirectAccess) (f bpf.DatapathNetworkFlag) {
	if masquerade {
		f |= bpf.DatapathNetworkFlagNETWORK_MASQUERADE
	}
	switch direct {
	case DirectPublished:
		f |= bpf.DatapathNetworkFlagNETWORK_DIRECT_PUBLISHED
	case DirectAll:
		f |= bpf.DatapathNetworkFlagNETWORK_DIRECT_ALL
	}
	return f
}

// subnetKey is a subnet's key in the subnets trie: an IPv4 subnet
// v4-mapped, its prefix 96 bits longer.
func subnetKey(p netip.Prefix) bpf.DatapathSubnetKey {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return bpf.DatapathSubnetKey{Prefixlen: uint32(bits), Addr: addr16(p.Addr())}
}

// subnetBits is the prefix length of a subnet as subnetKey wrote it.
func subnetBits(k bpf.DatapathSubnetKey) int {
	if Addr(k.Addr).Is4() {
		return int(k.Prefixlen) - 96
	}
	return int(k.Prefixlen)
}

// subnets are a network's subnets, one per family it has.
func (n Network) subnets() []netip.Prefix {
	if n.Subnet6.IsValid() {
		return []netip.Prefix{n.Subnet, n.Subnet6}
	}
	return []netip.Prefix{n.Subnet}
}

func publicationKey(p Publication) bpf.DatapathPublicationKey {
	host := p.HostAddr
	if !host.IsValid() {
		host = netip.IPv4Unspecified()
	}
	return bpf.DatapathPublicationKey{Addr: addr16(host), Port: be16(p.HostPort), Proto: p.Proto}
}

func publicationValue(p Publication) bpf.DatapathPublication {
	if p.Balanced() {
		return bpf.DatapathPublication{Flags: uint8(bpf.DatapathPublicationFlagPUBLICATION_BALANCED)}
	}
	return bpf.DatapathPublication{Addr: addr16(p.Addr), Port: be16(p.Port)}
}

func balanced(v bpf.DatapathPublication) bool {
	return v.Flags&uint8(bpf.DatapathPublicationFlagPUBLICATION_BALANCED) != 0
}

// publicationTable gives p's maglev table, when p is balanced.
func publicationTable(p Publication) (*bpf.DatapathMaglevTable, error) {
	if !p.Balanced() {
		return nil, nil
	}
	t, err := maglevTable(p.Backends)
	if err != nil {
		return nil, fmt.Errorf("publish %s:%d: %w", p.HostAddr, p.HostPort, err)
	}
	return &t, nil
}

// targetsOf gives the sandbox ports the publication of key, whose value
// is v, leads to: v's, or a balanced one's backends as its table has them.
func (m *Maps) targetsOf(key bpf.DatapathPublicationKey, v bpf.DatapathPublication) ([]bpf.DatapathTargetKey, error) {
	if !balanced(v) {
		return []bpf.DatapathTargetKey{targetKey(v, key.Proto)}, nil
	}
	var t bpf.DatapathMaglevTable
	if err := m.m.Maglev.Lookup(key, &t); err != nil {
		return nil, ignoreMissing(err)
	}
	return tableTargets(&t, key.Proto), nil
}

// tableTargets gives the sandbox ports of table t's backends, for proto.
func tableTargets(t *bpf.DatapathMaglevTable, proto uint8) []bpf.DatapathTargetKey {
	var out []bpf.DatapathTargetKey
	for _, b := range tableEntries(t) {
		out = append(out, targetKey(b, proto))
	}
	return out
}

// countTargets adds delta to the counts of targets in published_ports.
// A target no publication leads to any more loses its count of new flows
// (backend_flows).
func (m *Maps) countTargets(targets []bpf.DatapathTargetKey, delta int) error {
	var errs []error
	for _, k := range targets {
		errs = append(errs, addCount(m.m.PublishedPorts, k, delta))
		var n uint32
		if delta < 0 && errors.Is(m.m.PublishedPorts.Lookup(k, &n), ebpf.ErrKeyNotExist) {
			errs = append(errs, ignoreMissing(m.m.BackendFlows.Delete(k)))
		}
	}
	return errors.Join(errs...)
}

// check refuses a network whose subnets are not of their families.
func (n Network) check() error {
	if !n.Subnet.Addr().Is4() {
		return fmt.Errorf("network %d: subnet %s is not IPv4", n.Index, n.Subnet)
	}
	if n.Subnet6.IsValid() && !n.Subnet6.Addr().Is6() {
		return fmt.Errorf("network %d: subnet %s is not IPv6", n.Index, n.Subnet6)
	}
	return nil
}

// PutNetwork adds or updates a network and its subnets.
func (m *Maps) PutNetwork(n Network) error {
	if err := n.check(); err != nil {
		return err
	}
	if err := m.m.Networks.Put(n.Index, networkValue(n)); err != nil {
		return fmt.Errorf("put network %d: %w", n.Index, err)
	}
	for _, subnet := range n.subnets() {
		if err := m.m.Subnets.Put(subnetKey(subnet), n.Index); err != nil {
			return fmt.Errorf("put subnet %s of network %d: %w", subnet, n.Index, err)
		}
	}
	return nil
}

// DeleteNetwork removes a network and its subnets; missing entries are fine.
func (m *Maps) DeleteNetwork(n Network) error {
	errs := []error{ignoreMissing(m.m.Networks.Delete(n.Index))}
	for _, subnet := range n.subnets() {
		errs = append(errs, ignoreMissing(m.m.Subnets.Delete(subnetKey(subnet))))
	}
	return errors.Join(errs...)
}

// PutIface adds or updates an endpoint interface. It runs in the
// dataplane's namespace: the kernel resolves an XDP target's ifindex in
// the caller's.
func (m *Maps) PutIface(i Iface) error {
	if err := m.m.Ifaces.Put(i.Ifindex, ifaceValue(i)); err != nil {
		return fmt.Errorf("put endpoint interface %d: %w", i.Ifindex, err)
	}
	if err := m.putRates(i); err != nil {
		return err
	}
	if !i.XDPTarget {
		return ignoreMissing(m.m.XdpTargets.Delete(i.Ifindex))
	}
	if err := m.m.XdpTargets.Put(i.Ifindex, i.Ifindex); err != nil {
		return fmt.Errorf("put xdp target %d: %w", i.Ifindex, err)
	}
	return nil
}

func ifaceValue(i Iface) bpf.DatapathIfaceInfo {
	v := bpf.DatapathIfaceInfo{Network: i.Network, Addr: addr16(i.Addr), Addr6: addr16(i.Addr6)}
	copy(v.Mac[:], i.MAC)
	return v
}

// DeleteIface removes an endpoint interface; a missing one is fine.
func (m *Maps) DeleteIface(ifindex uint32) error {
	return errors.Join(ignoreMissing(m.m.Ifaces.Delete(ifindex)), ignoreMissing(m.m.XdpTargets.Delete(ifindex)),
		m.deleteRates(ifindex))
}

// PutEndpoint adds or updates where an endpoint's address is delivered.
func (m *Maps) PutEndpoint(e Endpoint) error {
	if err := m.m.Endpoints.Put(addr16(e.Addr), endpointValue(e)); err != nil {
		return fmt.Errorf("put endpoint %s: %w", e.Addr, err)
	}
	return nil
}

func endpointValue(e Endpoint) bpf.DatapathEndpointInfo {
	return bpf.DatapathEndpointInfo{Ifindex: e.Ifindex, Network: e.Network, Mac: mac6(e.MAC)}
}

// DeleteEndpoint removes an endpoint's address; a missing one is fine.
func (m *Maps) DeleteEndpoint(addr netip.Addr) error {
	return ignoreMissing(m.m.Endpoints.Delete(addr16(addr)))
}

// PutPublication adds or updates a published port, and counts the
// sandbox ports it leads to in published_ports and the host port it holds
// in held_ports. A balanced publication's table is written before it, and
// replaced whole when its backends change: new flows go by the new table
// at once, and the flows of a backend no longer in it go on.
func (m *Maps) PutPublication(p Publication) error {
	key := publicationKey(p)
	v := publicationValue(p)
	table, err := publicationTable(p)
	if err != nil {
		return err
	}
	// Its lists before it: its first flow is checked. A publication that
	// fails takes them back.
	lists := sourceEntries(key, p.Sources)
	if err := m.putSources(lists, nil); err != nil {
		return err
	}
	published := false
	defer func() {
		if !published {
			m.putSources(nil, lists)
		}
	}()
	var old bpf.DatapathPublication
	var oldTargets []bpf.DatapathTargetKey
	switch err := m.m.Publications.Lookup(key, &old); {
	case err == nil:
		if oldTargets, err = m.targetsOf(key, old); err != nil {
			return fmt.Errorf("publish %s:%d: %w", p.HostAddr, p.HostPort, err)
		}
	case !errors.Is(err, ebpf.ErrKeyNotExist):
		return fmt.Errorf("publish %s:%d: %w", p.HostAddr, p.HostPort, err)
	}
	newTargets := []bpf.DatapathTargetKey{targetKey(v, key.Proto)}
	if table != nil {
		newTargets = tableTargets(table, key.Proto)
	}
	if oldTargets != nil && old == v && slices.Equal(oldTargets, newTargets) {
		published = true
		return nil
	}
	// held_ports counts a publication once per sandbox port it leads to
	// (a balanced one's backends), as its records do. More are held
	// before the datapath takes the port's traffic, so no host process
	// binds it in between; fewer after.
	more := len(newTargets) - len(oldTargets)
	if more > 0 {
		if err := addCount(m.m.HeldPorts, heldPortKey(key), more); err != nil {
			return err
		}
	}
	if err := m.putPublication(key, v, table); err != nil {
		err = fmt.Errorf("publish %s:%d: %w", p.HostAddr, p.HostPort, err)
		if more > 0 {
			err = errors.Join(err, addCount(m.m.HeldPorts, heldPortKey(key), -more))
		}
		return err
	}
	published = true
	errs := []error{m.countTargets(oldTargets, -1), m.countTargets(newTargets, 1)}
	if more < 0 {
		errs = append(errs, addCount(m.m.HeldPorts, heldPortKey(key), more))
	}
	return errors.Join(errs...)
}

// putPublication writes a publication and its table (nil: none, and an
// old one goes after it).
func (m *Maps) putPublication(key bpf.DatapathPublicationKey, v bpf.DatapathPublication, table *bpf.DatapathMaglevTable) error {
	if table != nil {
		if err := m.m.Maglev.Put(key, table); err != nil {
			return err
		}
	}
	if err := m.m.Publications.Put(key, v); err != nil {
		return err
	}
	if table == nil {
		return ignoreMissing(m.m.Maglev.Delete(key))
	}
	return nil
}

// HasPublication reports whether the datapath publishes p as p says.
func (m *Maps) HasPublication(p Publication) (bool, error) {
	var v bpf.DatapathPublication
	key := publicationKey(p)
	err := m.m.Publications.Lookup(key, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	if err != nil || v != publicationValue(p) {
		return false, err
	}
	if !p.Balanced() {
		return true, nil
	}
	// A record's entry names its own backend: the datapath's, merged
	// with the others', must have it.
	have, err := m.Backends(p)
	for _, b := range p.Backends {
		if !slices.Contains(have, b) {
			return false, err
		}
	}
	return err == nil, err
}

// Backends lists the backends the datapath has for balanced publication
// p, in its table's order.
func (m *Maps) Backends(p Publication) ([]Backend, error) {
	var t bpf.DatapathMaglevTable
	if err := m.m.Maglev.Lookup(publicationKey(p), &t); err != nil {
		return nil, ignoreMissing(err)
	}
	return tableBackends(&t), nil
}

// ReplaceBalanced makes the entries of balanced publications was (as
// Merge gives them) the entries now: those of now are written, those of
// was whose host port now has not are removed.
func (m *Maps) ReplaceBalanced(was, now []Publication) error {
	var errs []error
	keep := map[bpf.DatapathPublicationKey]bool{}
	for _, p := range now {
		keep[publicationKey(p)] = true
		errs = append(errs, m.PutPublication(p))
	}
	for _, p := range was {
		if !keep[publicationKey(p)] {
			errs = append(errs, m.DeletePublications(p))
		}
	}
	return errors.Join(errs...)
}

// DeletePublications removes published ports; missing ones are fine. Their
// flows end with them: the datapath drops a conntrack entry a publication
// made once the publication no longer leads where the entry does.
func (m *Maps) DeletePublications(pubs ...Publication) error {
	var errs []error
	for _, p := range pubs {
		key := publicationKey(p)
		var old bpf.DatapathPublication
		if err := m.m.Publications.Lookup(key, &old); err != nil {
			errs = append(errs, ignoreMissing(err))
			continue
		}
		targets, err := m.targetsOf(key, old)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := m.m.Publications.Delete(key); err != nil {
			errs = append(errs, ignoreMissing(err))
			continue
		}
		errs = append(errs, ignoreMissing(m.m.Maglev.Delete(key)), m.countTargets(targets, -1),
			addCount(m.m.HeldPorts, heldPortKey(key), -max(len(targets), 1)), m.putSources(nil, sourceEntries(key, p.Sources)))
	}
	return errors.Join(errs...)
}

func targetKey(v bpf.DatapathPublication, proto uint8) bpf.DatapathTargetKey {
	return bpf.DatapathTargetKey{Addr: v.Addr, Port: v.Port, Proto: proto}
}

func heldPortKey(k bpf.DatapathPublicationKey) bpf.DatapathHeldPortKey {
	return bpf.DatapathHeldPortKey{Port: k.Port, Proto: k.Proto}
}

// addCount adds delta to the count a map of counts (published_ports,
// held_ports) keeps for k, removing k at zero, so the datapath needs only
// to find a key to know some publication has it.
func addCount[K any](m *ebpf.Map, k K, delta int) error {
	var n uint32
	if err := m.Lookup(k, &n); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("read count in %s: %w", m, err)
	}
	if int(n)+delta <= 0 {
		return ignoreMissing(m.Delete(k))
	}
	if err := m.Put(k, uint32(int(n)+delta)); err != nil {
		return fmt.Errorf("update count in %s: %w", m, err)
	}
	return nil
}

// entries reads a whole map: in batches where the map type has them (hash
// maps), else entry by entry.
func entries[K comparable, V any](m *ebpf.Map) (map[K]V, error) {
	out := map[K]V{}
	switch m.Type() {
	case ebpf.Hash, ebpf.LRUHash:
		err := batches(m, func(ks []K, vs []V) {
			for i, k := range ks {
				out[k] = vs[i]
			}
		})
		return out, err
	}
	var (
		k K
		v V
	)
	it := m.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", m, err)
	}
	return out, nil
}

func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// Desired is the whole content of the control plane's maps.
type Desired struct {
	Networks     []Network
	Ifaces       []Iface
	Endpoints    []Endpoint
	Publications []Publication
	// DefaultSources are the lists of the publications without lists of
	// their own: the daemon's.
	DefaultSources Sources
	Egress         []Egress
}

// Add adds what more desires.
func (d *Desired) Add(more Desired) {
	d.Networks = append(d.Networks, more.Networks...)
	d.Ifaces = append(d.Ifaces, more.Ifaces...)
	d.Endpoints = append(d.Endpoints, more.Endpoints...)
	d.Publications = append(d.Publications, more.Publications...)
	d.Egress = append(d.Egress, more.Egress...)
	d.DefaultSources.Allow = append(d.DefaultSources.Allow, more.DefaultSources.Allow...)
	d.DefaultSources.Deny = append(d.DefaultSources.Deny, more.DefaultSources.Deny...)
}

// SyncPlan is the writes that make the maps hold exactly a Desired,
// worked out from the maps as they were read when it was made. Making one
// reads each map in a few batches and needs no lock; applying one writes
// only what differed, so that a reconcile holds the engine's lock for the
// writes alone.
type SyncPlan struct {
	networks  entryPlan[uint32, bpf.DatapathNetworkInfo]
	subnets   entryPlan[bpf.DatapathSubnetKey, uint32]
	ifaces    entryPlan[uint32, bpf.DatapathIfaceInfo]
	targets   entryPlan[uint32, uint32]
	endpoints entryPlan[bpf.DatapathAddr, bpf.DatapathEndpointInfo]
	held      entryPlan[bpf.DatapathHeldPortKey, uint32]
	pubs      entryPlan[bpf.DatapathPublicationKey, bpf.DatapathPublication]
	maglev    entryPlan[bpf.DatapathPublicationKey, bpf.DatapathMaglevTable]
	published entryPlan[bpf.DatapathTargetKey, uint32]
	sources   entryPlan[bpf.DatapathSourceKey, bpf.DatapathSourceAction]
	egress    entryPlan[bpf.DatapathEgressKey, bpf.DatapathEgressAction]
	rates     entryPlan[bpf.DatapathRateKey, bpf.DatapathRateLimit]
	buckets   *ebpf.Map // the rate limits' buckets, which go with them
	// want is what the plan makes the maps hold: the counts of a port
	// that changed records share with others are worked out from it.
	want contents
}

// contents is a Desired as the maps hold it, map by map.
type contents struct {
	networks  map[uint32]bpf.DatapathNetworkInfo
	subnets   map[bpf.DatapathSubnetKey]uint32
	ifaces    map[uint32]bpf.DatapathIfaceInfo
	targets   map[uint32]uint32
	endpoints map[bpf.DatapathAddr]bpf.DatapathEndpointInfo
	held      map[bpf.DatapathHeldPortKey]uint32
	pubs      map[bpf.DatapathPublicationKey]bpf.DatapathPublication
	maglev    map[bpf.DatapathPublicationKey]bpf.DatapathMaglevTable
	published map[bpf.DatapathTargetKey]uint32
	sources   map[bpf.DatapathSourceKey]bpf.DatapathSourceAction
	egress    map[bpf.DatapathEgressKey]bpf.DatapathEgressAction
	rates     map[bpf.DatapathRateKey]bpf.DatapathRateLimit
}

func contentsOf(d Desired) (contents, error) {
	c := contents{networks: map[uint32]bpf.DatapathNetworkInfo{}, subnets: map[bpf.DatapathSubnetKey]uint32{},
		ifaces: map[uint32]bpf.DatapathIfaceInfo{}, targets: map[uint32]uint32{},
		endpoints: map[bpf.DatapathAddr]bpf.DatapathEndpointInfo{}, held: map[bpf.DatapathHeldPortKey]uint32{},
		pubs: map[bpf.DatapathPublicationKey]bpf.DatapathPublication{}, published: map[bpf.DatapathTargetKey]uint32{},
		maglev: map[bpf.DatapathPublicationKey]bpf.DatapathMaglevTable{}, sources: defaultSourceEntries(d.DefaultSources),
		egress: map[bpf.DatapathEgressKey]bpf.DatapathEgressAction{}, rates: map[bpf.DatapathRateKey]bpf.DatapathRateLimit{}}
	for _, e := range d.Egress {
		maps.Copy(c.egress, egressEntries(e))
	}
	for _, n := range d.Networks {
		if err := n.check(); err != nil {
			return contents{}, err
		}
		c.networks[n.Index] = networkValue(n)
		for _, subnet := range n.subnets() {
			c.subnets[subnetKey(subnet)] = n.Index
		}
	}
	for _, i := range d.Ifaces {
		c.ifaces[i.Ifindex] = ifaceValue(i)
		maps.Copy(c.rates, rateEntries(i))
		if i.XDPTarget {
			c.targets[i.Ifindex] = i.Ifindex
		}
	}
	for _, e := range d.Endpoints {
		c.endpoints[addr16(e.Addr)] = endpointValue(e)
	}
	for _, p := range Merge(d.Publications) {
		key, v := publicationKey(p), publicationValue(p)
		c.pubs[key] = v
		table, err := publicationTable(p)
		switch {
		case err != nil:
			return contents{}, err
		case table != nil:
			c.maglev[key] = *table
			for _, t := range tableTargets(table, key.Proto) {
				c.published[t]++
				c.held[heldPortKey(key)]++ // once per backend, as PutPublication counts
			}
		default:
			c.published[targetKey(v, key.Proto)]++
			c.held[heldPortKey(key)]++
		}
		maps.Copy(c.sources, sourceEntries(key, p.Sources))
	}
	return c, nil
}

// PlanSync works out the writes that make the maps hold exactly d.
func (m *Maps) PlanSync(d Desired) (SyncPlan, error) {
	want, err := contentsOf(d)
	if err != nil {
		return SyncPlan{}, err
	}
	var errs []error
	p := SyncPlan{
		want:     want,
		networks: planEntries(m.m.Networks, want.networks, nil, &errs),
		// SyncHost keeps the foreign subnets; a network's own subnet wins.
		subnets: planEntries(m.m.Subnets, want.subnets, func(_ bpf.DatapathSubnetKey, index uint32) bool {
			return index != ForeignNetwork
		}, &errs),
		ifaces:    planEntries(m.m.Ifaces, want.ifaces, nil, &errs),
		targets:   planEntries(m.m.XdpTargets, want.targets, nil, &errs),
		endpoints: planEntries(m.m.Endpoints, want.endpoints, nil, &errs),
		held:      planEntries(m.m.HeldPorts, want.held, nil, &errs),
		pubs:      planEntries(m.m.Publications, want.pubs, nil, &errs),
		maglev:    planEntries(m.m.Maglev, want.maglev, nil, &errs),
		published: planEntries(m.m.PublishedPorts, want.published, nil, &errs),
		sources:   planEntries(m.m.SourceRanges, want.sources, nil, &errs),
		egress:    planEntries(m.m.EgressAllow, want.egress, nil, &errs),
		rates:     planEntries(m.m.RateLimits, want.rates, nil, &errs),
		buckets:   m.m.RateBuckets,
	}
	return p, errors.Join(errs...)
}

// Changed is what the records changed since a plan was made desire: as
// the plan saw them (Then) and as they are (Now).
type Changed struct{ Then, Now Desired }

// ApplySync writes a plan but the entries of changed records, which their
// changes wrote: every entry of an interface or address they name is
// left as it is. The counts of held_ports and published_ports they share
// with other records are written as the plan wants them, less what the
// changed records counted then, plus what they count now. It returns how
// many entries it wrote or deleted.
func (m *Maps) ApplySync(p SyncPlan, changed Changed) (int, error) {
	then, err := contentsOf(changed.Then)
	if err != nil {
		return 0, err
	}
	now, err := contentsOf(changed.Now)
	if err != nil {
		return 0, err
	}
	n := 0
	count := func(written int, err error) error { n += written; return err }
	errs := []error{
		count(p.networks.apply(hasEither(then.networks, now.networks))),
		count(p.subnets.apply(hasEither(then.subnets, now.subnets))),
		count(p.ifaces.apply(hasEither(then.ifaces, now.ifaces))),
		count(p.targets.apply(hasEither(then.ifaces, now.ifaces))),
		count(p.endpoints.apply(hasEither(then.endpoints, now.endpoints))),
		// Hold the ports before the datapath takes their traffic, and give
		// them their source lists before, and take those after: a
		// publication is never open without its lists.
		count(p.held.applyCounts(p.want.held, then.held, now.held)),
		count(p.sources.applyPuts(hasEither(then.sources, now.sources))),
		// A balanced publication's table before it, and gone after it.
		count(p.maglev.applyPuts(hasEither(then.maglev, now.maglev))),
		count(p.pubs.apply(hasEither(then.pubs, now.pubs))),
		count(p.maglev.applyDeletes(hasEither(then.maglev, now.maglev))),
		count(p.published.applyCounts(p.want.published, then.published, now.published)),
		count(p.sources.applyDeletes(hasEither(then.sources, now.sources))),
		count(p.egress.apply(hasEither(then.egress, now.egress))),
		count(p.applyRates(hasEither(then.rates, now.rates))),
	}
	return n, errors.Join(errs...)
}

// Writes counts the entries the plan writes or deletes.
func (p SyncPlan) Writes() int {
	return p.networks.writes() + p.subnets.writes() + p.ifaces.writes() + p.targets.writes() +
		p.endpoints.writes() + p.held.writes() + p.pubs.writes() + p.maglev.writes() + p.published.writes() + p.sources.writes() +
		p.egress.writes() + p.rates.writes()
}

// entryPlan is the writes that make one map hold what was wanted of it.
type entryPlan[K, V comparable] struct {
	m   *ebpf.Map
	put map[K]V
	del []K
}

// planEntries works out the writes that make m hold exactly want among
// the entries mine picks (nil: all of them). A failed read is added to
// errs.
func planEntries[K, V comparable](m *ebpf.Map, want map[K]V, mine func(K, V) bool, errs *[]error) entryPlan[K, V] {
	p := entryPlan[K, V]{m: m, put: map[K]V{}}
	have, err := entries[K, V](m)
	if err != nil {
		*errs = append(*errs, err)
		return entryPlan[K, V]{} // the map is left as it is
	}
	for k, v := range want {
		if old, ok := have[k]; !ok || old != v {
			p.put[k] = v
		}
	}
	for k, v := range have {
		if _, ok := want[k]; !ok && (mine == nil || mine(k, v)) {
			p.del = append(p.del, k)
		}
	}
	return p
}

// apply writes the plan but for the keys skip picks, and says how many
// entries it wrote or deleted.
func (p entryPlan[K, V]) apply(skip func(K) bool) (int, error) {
	n, err := p.applyPuts(skip)
	deleted, derr := p.applyDeletes(skip)
	return n + deleted, errors.Join(err, derr)
}

// applyPuts writes the plan's entries but for the keys skip picks.
func (p entryPlan[K, V]) applyPuts(skip func(K) bool) (int, error) {
	if p.m == nil {
		return 0, nil // no plan: its map could not be read
	}
	var errs []error
	n := 0
	for k, v := range p.put {
		if skip(k) {
			continue
		}
		n++
		if err := p.m.Put(k, v); err != nil {
			errs = append(errs, fmt.Errorf("update %s: %w", p.m, err))
		}
	}
	return n, errors.Join(errs...)
}

// applyDeletes deletes the plan's entries but for the keys skip picks.
func (p entryPlan[K, V]) applyDeletes(skip func(K) bool) (int, error) {
	if p.m == nil {
		return 0, nil
	}
	var errs []error
	n := 0
	for _, k := range p.del {
		if !skip(k) {
			n++
			errs = append(errs, ignoreMissing(p.m.Delete(k)))
		}
	}
	return n, errors.Join(errs...)
}

func (p entryPlan[K, V]) writes() int { return len(p.put) + len(p.del) }

// applyCounts writes the plan of a map of counts: the keys changed
// records count, then or now, as want has them, less then's, plus now's
// (where the map does not hold that already); the rest as planned.
func (p entryPlan[K, V]) applyCounts(want, then, now map[K]uint32) (int, error) {
	if p.m == nil {
		return 0, nil
	}
	n, err := p.apply(hasEither(then, now))
	errs := []error{err}
	touched := maps.Clone(then)
	maps.Copy(touched, now)
	for k := range touched {
		total := int(want[k]) - int(then[k]) + int(now[k])
		var have uint32 // absent: 0; a failed read counts as a difference
		if err := p.m.Lookup(k, &have); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			have = ^uint32(0)
		}
		if int(have) == max(total, 0) {
			continue // the change that touched it wrote it so
		}
		n++
		if total > 0 {
			if err := p.m.Put(k, uint32(total)); err != nil {
				errs = append(errs, fmt.Errorf("update %s: %w", p.m, err))
			}
		} else {
			errs = append(errs, ignoreMissing(p.m.Delete(k)))
		}
	}
	return n, errors.Join(errs...)
}

// hasEither picks the keys of a or b.
func hasEither[K comparable, V any](a, b map[K]V) func(K) bool {
	return func(k K) bool {
		_, inA := a[k]
		_, inB := b[k]
		return inA || inB
	}
}

// ForeignNetwork is the network index of another runtime's subnets.
const ForeignNetwork = ^uint32(0)

// Uplink is an uplink's addresses, one per family, that flows leaving
// through it are masqueraded to (invalid: none of that family).
type Uplink struct {
	Addr  netip.Addr
	Addr6 netip.Addr
}

// SyncHost makes the maps hold exactly the host's addresses, its uplinks
// (by ifindex) and the subnets of other runtimes' bridges (ForeignNetwork).
func (m *Maps) SyncHost(addrs []netip.Addr, uplinks map[uint32]Uplink, foreign []netip.Prefix) error {
	var errs []error
	wantForeign := map[bpf.DatapathSubnetKey]bool{}
	for _, p := range foreign {
		k := subnetKey(p)
		wantForeign[k] = true
		var index uint32
		if err := m.m.Subnets.Lookup(k, &index); err == nil && index != ForeignNetwork {
			continue // an ebpfnet network's own subnet wins
		}
		errs = append(errs, m.m.Subnets.Put(k, ForeignNetwork))
	}
	errs = append(errs, m.deleteSubnets(func(k bpf.DatapathSubnetKey, index uint32) bool {
		return index == ForeignNetwork && !wantForeign[k]
	}))
	wantAddr := map[bpf.DatapathAddr]bool{}
	for _, a := range addrs {
		errs = append(errs, m.m.HostAddrs.Put(addr16(a), uint32(0)))
		wantAddr[addr16(a)] = true
	}
	wantUplink := map[uint32]bool{}
	for ifindex, u := range uplinks {
		errs = append(errs, m.m.Uplinks.Put(ifindex, bpf.DatapathUplinkInfo{Addr: addr16(u.Addr), Addr6: addr16(u.Addr6)}))
		wantUplink[ifindex] = true
	}
	errs = append(errs, deleteUnwanted(m.m.HostAddrs, wantAddr), deleteUnwanted(m.m.Uplinks, wantUplink))
	return errors.Join(errs...)
}

// VXLANPort is the UDP port of overlay networks' VXLAN, which the uplink
// program checks the senders of.
const VXLANPort = uint16(bpf.DatapathVxlanVXLAN_PORT)

// SyncOverlay makes the maps hold exactly the VNIs of the overlay
// networks and the VTEPs of the cluster's hosts: VXLAN to one of those
// VNIs from any other address is dropped on the uplinks.
func (m *Maps) SyncOverlay(vnis []uint32, peers []netip.Addr) error {
	var errs []error
	wantVNI := map[uint32]bool{}
	for _, v := range vnis {
		errs = append(errs, m.m.OverlayVnis.Put(v, uint32(0)))
		wantVNI[v] = true
	}
	wantPeer := map[bpf.DatapathAddr]bool{}
	for _, a := range peers {
		errs = append(errs, m.m.OverlayPeers.Put(addr16(a), uint32(0)))
		wantPeer[addr16(a)] = true
	}
	errs = append(errs, deleteUnwanted(m.m.OverlayVnis, wantVNI), deleteUnwanted(m.m.OverlayPeers, wantPeer))
	return errors.Join(errs...)
}

// deleteSubnets deletes the subnets entries that unwanted picks.
func (m *Maps) deleteSubnets(unwanted func(k bpf.DatapathSubnetKey, index uint32) bool) error {
	var (
		k     bpf.DatapathSubnetKey
		index uint32
		drop  []bpf.DatapathSubnetKey
	)
	it := m.m.Subnets.Iterate()
	for it.Next(&k, &index) {
		if unwanted(k, index) {
			drop = append(drop, k)
		}
	}
	errs := []error{it.Err()}
	for _, k := range drop {
		errs = append(errs, ignoreMissing(m.m.Subnets.Delete(k)))
	}
	return errors.Join(errs...)
}

func deleteUnwanted[K comparable](m *ebpf.Map, want map[K]bool) error {
	all, err := keys[K](m)
	if err != nil {
		return err
	}
	var errs []error
	for _, k := range all {
		if !want[k] {
			errs = append(errs, ignoreMissing(m.Delete(k)))
		}
	}
	return errors.Join(errs...)
}

// keys lists a map's keys. It walks with NextKey, as it needs no values.
func keys[K any](m *ebpf.Map) ([]K, error) {
	var out []K
	var prev any // nil asks for the first key
	for {
		var next K
		err := m.NextKey(prev, &next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("walk keys of %s: %w", m, err)
		}
		out = append(out, next)
		prev = next
	}
}

// Counter is one program's count of one verdict, summed over CPUs.
type Counter struct {
	Program string `json:"program"`
	Verdict string `json:"verdict"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// counterLabels are the names of the programs and verdicts that label
// counters and events, by value.
func counterLabels() (programs, verdicts []string, err error) {
	if programs, err = EnumNames("program", "PROGRAM_"); err != nil {
		return nil, nil, err
	}
	verdicts, err = EnumNames("verdict", "VERDICT_")
	return programs, verdicts, err
}

// Counters reads every program's per-verdict counters, in enum order.
func (m *Maps) Counters() ([]Counter, error) {
	programs, verdicts, err := counterLabels()
	if err != nil {
		return nil, err
	}
	var out []Counter
	for p, program := range programs {
		for v, verdict := range verdicts {
			var perCPU []bpf.DatapathCounter
			if err := m.m.Stats.Lookup(uint32(p*int(bpf.DatapathStatsSlotsSTATS_VERDICT_SLOTS)+v), &perCPU); err != nil {
				return nil, fmt.Errorf("read counter %s/%s: %w", program, verdict, err)
			}
			c := Counter{Program: program, Verdict: verdict}
			for _, pc := range perCPU {
				c.Packets += pc.Packets
				c.Bytes += pc.Bytes
			}
			out = append(out, c)
		}
	}
	return out, nil
}

// EnumNames returns the labels of a C enum of lib/types.h ("pass",
// "drop_icc", …) indexed by value, read from the BTF so the C enum stays
// their only source. The enum's *_MAX member ends the list.
func EnumNames(enum, prefix string) ([]string, error) {
	spec, err := bpf.LoadDatapath()
	if err != nil {
		return nil, err
	}
	var e *btf.Enum
	if err := spec.Types.TypeByName(enum, &e); err != nil {
		return nil, fmt.Errorf("find enum %s in BTF: %w", enum, err)
	}
	names := make([]string, 0, len(e.Values))
	for _, v := range e.Values {
		if v.Value != uint64(len(names)) {
			return nil, fmt.Errorf("enum %s is not dense at %s", enum, v.Name)
		}
		name := strings.ToLower(strings.TrimPrefix(v.Name, prefix))
		if name == "max" {
			break
		}
		names = append(names, name)
	}
	return names, nil
}

// Fill is how full a map is.
type Fill struct {
	Map     string `json:"map"`
	Entries int    `json:"entries"`
	Max     uint32 `json:"max"`
}

// Fills reports the fill level of every keyed map.
func (m *Maps) Fills() ([]Fill, error) {
	var out []Fill
	for _, mp := range []*ebpf.Map{m.m.Ifaces, m.m.Endpoints, m.m.Networks, m.m.Subnets,
		m.m.Publications, m.m.Maglev, m.m.PublishedPorts, m.m.HeldPorts, m.m.HostAddrs, m.m.Uplinks, m.m.Ct, m.m.CtNew,
		m.m.OverlayVnis, m.m.OverlayPeers, m.m.RateLimits} {
		n, err := count(mp)
		if err != nil {
			return nil, err
		}
		info, err := mp.Info()
		if err != nil {
			return nil, fmt.Errorf("read info of %s: %w", mp, err)
		}
		out = append(out, Fill{Map: info.Name, Entries: n, Max: mp.MaxEntries()})
	}
	return out, nil
}
