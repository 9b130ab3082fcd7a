package maps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/ebpfnet/ebpfnet/bpf"
)

// Maps wraps the maps of one loaded datapath.
type Maps struct {
	m *bpf.EndpointMaps
}

// New wraps loaded maps.
func New(m *bpf.EndpointMaps) *Maps { return &Maps{m: m} }

// Network is what the datapath knows about a network.
type Network struct {
	Index       uint32
	Subnet      netip.Prefix
	Gateway     netip.Addr
	ICCDisabled bool
	Internal    bool
}

// Iface is an endpoint's host-side interface.
type Iface struct {
	Ifindex uint32
	Network uint32 // the network's Index
	Addr    netip.Addr
}

// be32 gives the uint32 whose in-memory bytes are addr in network order, as
// the C side's __be32 fields hold it.
func be32(addr netip.Addr) uint32 {
	b := addr.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func networkValue(n Network) bpf.EndpointNetworkInfo {
	v := bpf.EndpointNetworkInfo{Gateway: be32(n.Gateway)}
	if n.ICCDisabled {
		v.Flags |= bpf.EndpointNetworkFlagNETWORK_ICC_DISABLED
	}
	if n.Internal {
		v.Flags |= bpf.EndpointNetworkFlagNETWORK_INTERNAL
	}
	return v
}

func subnetKey(p netip.Prefix) bpf.EndpointSubnetKey {
	p = p.Masked()
	return bpf.EndpointSubnetKey{Prefixlen: uint32(p.Bits()), Addr: be32(p.Addr())}
}

// PutNetwork adds or updates a network and its subnet.
func (m *Maps) PutNetwork(n Network) error {
	if !n.Subnet.Addr().Is4() {
		return fmt.Errorf("put network %d: subnet %s is not IPv4", n.Index, n.Subnet)
	}
	if err := m.m.Networks.Put(n.Index, networkValue(n)); err != nil {
		return fmt.Errorf("put network %d: %w", n.Index, err)
	}
	if err := m.m.Subnets.Put(subnetKey(n.Subnet), n.Index); err != nil {
		return fmt.Errorf("put subnet %s of network %d: %w", n.Subnet, n.Index, err)
	}
	return nil
}

// DeleteNetwork removes a network and its subnet; missing entries are fine.
func (m *Maps) DeleteNetwork(n Network) error {
	return errors.Join(
		ignoreMissing(m.m.Networks.Delete(n.Index)),
		ignoreMissing(m.m.Subnets.Delete(subnetKey(n.Subnet))),
	)
}

// PutIface adds or updates an endpoint interface.
func (m *Maps) PutIface(i Iface) error {
	v := bpf.EndpointIfaceInfo{Network: i.Network, Addr: be32(i.Addr)}
	if err := m.m.Ifaces.Put(i.Ifindex, v); err != nil {
		return fmt.Errorf("put endpoint interface %d: %w", i.Ifindex, err)
	}
	return nil
}

// DeleteIface removes an endpoint interface; a missing one is fine.
func (m *Maps) DeleteIface(ifindex uint32) error {
	return ignoreMissing(m.m.Ifaces.Delete(ifindex))
}

func ignoreMissing(err error) error {
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}

// Sync makes the maps hold exactly these networks and interfaces.
func (m *Maps) Sync(networks []Network, ifaces []Iface) error {
	var errs []error
	wantNet := map[uint32]bool{}
	wantSubnet := map[bpf.EndpointSubnetKey]bool{}
	for _, n := range networks {
		errs = append(errs, m.PutNetwork(n))
		wantNet[n.Index] = true
		wantSubnet[subnetKey(n.Subnet)] = true
	}
	wantIface := map[uint32]bool{}
	for _, i := range ifaces {
		errs = append(errs, m.PutIface(i))
		wantIface[i.Ifindex] = true
	}
	errs = append(errs,
		deleteUnwanted(m.m.Networks, wantNet),
		deleteUnwanted(m.m.Subnets, wantSubnet),
		deleteUnwanted(m.m.Ifaces, wantIface),
	)
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

// Ifaces returns every endpoint interface in the map.
func (m *Maps) Ifaces() ([]Iface, error) {
	var (
		out []Iface
		k   uint32
		v   bpf.EndpointIfaceInfo
	)
	it := m.m.Ifaces.Iterate()
	for it.Next(&k, &v) {
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], v.Addr)
		out = append(out, Iface{Ifindex: k, Network: v.Network, Addr: netip.AddrFrom4(b)})
	}
	return out, it.Err()
}

// Counter is one verdict's packet and byte count, summed over CPUs.
type Counter struct {
	Verdict string `json:"verdict"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Counters reads the per-verdict counters, in the order of the verdict enum.
func (m *Maps) Counters() ([]Counter, error) {
	names, err := VerdictNames()
	if err != nil {
		return nil, err
	}
	out := make([]Counter, len(names))
	for i, name := range names {
		var perCPU []bpf.EndpointCounter
		if err := m.m.Stats.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		out[i].Verdict = name
		for _, c := range perCPU {
			out[i].Packets += c.Packets
			out[i].Bytes += c.Bytes
		}
	}
	return out, nil
}

// VerdictNames returns the verdict labels ("pass", "drop_icc", …) indexed by
// verdict, read from the programs' BTF so the C enum stays their only source.
func VerdictNames() ([]string, error) {
	spec, err := bpf.LoadEndpoint()
	if err != nil {
		return nil, err
	}
	var enum *btf.Enum
	if err := spec.Types.TypeByName("verdict", &enum); err != nil {
		return nil, fmt.Errorf("find enum verdict in BTF: %w", err)
	}
	names := make([]string, 0, len(enum.Values))
	for _, v := range enum.Values {
		if v.Value != uint64(len(names)) {
			return nil, fmt.Errorf("enum verdict is not dense at %s", v.Name)
		}
		name := strings.ToLower(strings.TrimPrefix(v.Name, "VERDICT_"))
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
	for _, mp := range []*ebpf.Map{m.m.Ifaces, m.m.Networks, m.m.Subnets} {
		all, err := keys[[]byte](mp)
		if err != nil {
			return nil, err
		}
		info, err := mp.Info()
		if err != nil {
			return nil, fmt.Errorf("read info of %s: %w", mp, err)
		}
		out = append(out, Fill{Map: info.Name, Entries: len(all), Max: mp.MaxEntries()})
	}
	return out, nil
}
