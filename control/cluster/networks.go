package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ipam"
)

// VNIs of overlay networks, as Docker's overlay driver hands them out:
// the ones below are left to other users of VXLAN on the hosts.
const (
	firstVNI = 4096
	lastVNI  = 1<<24 - 1
)

// defaultPool is where overlay networks without a subnet get one, a /24
// each, as Docker's global default address pool.
var defaultPool = netip.MustParsePrefix("10.0.0.0/8")

// attempts bounds the retries of a transaction that lost a race or found
// its member out of reach; requestTimeout bounds their time.
const attempts = 64

// Network is an overlay network, the same on every host.
type Network struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Subnet     netip.Prefix      `json:"subnet"`
	Gateway    netip.Addr        `json:"gateway"`
	VNI        uint32            `json:"vni"`
	Internal   bool              `json:"internal,omitempty"`
	Attachable bool              `json:"attachable,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Options are the driver options it was created with (its MTU).
	Options map[string]string `json:"options,omitempty"`
	Created time.Time         `json:"created"`
	// CreatedOn is the advertise address of the host it was created on.
	CreatedOn netip.Addr `json:"createdOn"`
}

// NetworkSpec asks for an overlay network; zero fields but the ID and
// the name are chosen.
type NetworkSpec struct {
	ID         string
	Name       string
	Subnet     netip.Prefix
	Gateway    netip.Addr
	Internal   bool
	Attachable bool
	Labels     map[string]string
	Options    map[string]string
	// Avoid are subnets a chosen subnet keeps clear of: the creating
	// host's routes and networks, which the cluster does not know.
	Avoid []netip.Prefix
}

func networksKey() string         { return prefix + "networks/" }
func networkKey(id string) string { return networksKey() + id }
func addressesKey(networkID string) string {
	return prefix + "addresses/" + networkID + "/"
}

// lastKey holds the address of a network handed out last (ipam.Pool's
// Last): the next search starts after it, so an address given back, or
// lost with a lapsed lease, is handed out again only once they wrap.
func lastKey(networkID string) string { return prefix + "last/" + networkID }

// CreateNetwork creates an overlay network with a name, a VNI and a
// subnet no other overlay network has. The check and the write are one
// transaction on every network record: a host that created one in between
// makes it fail, and the creation starts again from what is there now.
func (c *Cluster) CreateNetwork(ctx context.Context, spec NetworkSpec) (Network, error) {
	if err := checkSpec(spec); err != nil {
		return Network{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	for range attempts {
		resp, err := c.client.Get(ctx, networksKey(), clientv3.WithPrefix())
		if c.again(ctx, err) {
			continue
		}
		if err != nil {
			return Network{}, c.unreachable("create network "+spec.Name, err)
		}
		n, err := c.choose(spec, decodeAll[Network](c.log, resp.Kvs))
		if err != nil {
			return Network{}, err
		}
		rec, _ := json.Marshal(n)
		txn, err := c.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(networksKey()).WithPrefix(), "<", resp.Header.Revision+1)).
			Then(clientv3.OpPut(networkKey(n.ID), string(rec))).
			Commit()
		if c.again(ctx, err) {
			continue // it may have been written: the next read finds it ours
		}
		if err != nil {
			return Network{}, c.unreachable("create network "+spec.Name, err)
		}
		if txn.Succeeded {
			c.wrote(txn.Header.Revision)
			return n, nil
		}
	}
	return Network{}, errdefs.Conflictf("create network %s: other hosts kept creating networks; try again", spec.Name)
}

func checkSpec(spec NetworkSpec) error {
	if spec.ID == "" || spec.Name == "" {
		return errdefs.Invalidf("an overlay network needs an ID and a name")
	}
	if s := spec.Subnet; s.IsValid() {
		if !s.Addr().Is4() || s != s.Masked() || s.Bits() > 30 {
			return errdefs.Invalidf("invalid overlay subnet %s: want an IPv4 network address with room for hosts, like 10.1.0.0/24", s)
		}
		if g := spec.Gateway; g.IsValid() && (!s.Contains(g) || g == s.Addr()) {
			return errdefs.Invalidf("invalid gateway %s: not a host address of subnet %s", g, s)
		}
	} else if spec.Gateway.IsValid() {
		return errdefs.Invalidf("gateway %s given without a subnet", spec.Gateway)
	}
	return nil
}

// choose fills in what spec leaves open, against the networks there are.
func (c *Cluster) choose(spec NetworkSpec, nets []Network) (Network, error) {
	n := Network{ID: spec.ID, Name: spec.Name, Subnet: spec.Subnet, Gateway: spec.Gateway, Internal: spec.Internal,
		Attachable: spec.Attachable, Labels: spec.Labels, Options: spec.Options, Created: time.Now().UTC(), CreatedOn: c.cfg.Advertise}
	vnis := map[uint32]bool{}
	for _, o := range nets {
		if o.ID == spec.ID {
			if o.Name == spec.Name {
				return o, nil // written by an attempt whose answer was lost
			}
			return n, errdefs.Conflictf("network ID %s is taken by overlay network %s", spec.ID, o.Name)
		}
		if o.Name == spec.Name {
			return n, errdefs.Conflictf("network with name %s already exists in the cluster", spec.Name)
		}
		if n.Subnet.IsValid() && n.Subnet.Overlaps(o.Subnet) {
			return n, errdefs.Conflictf("subnet %s overlaps %s of overlay network %s", n.Subnet, o.Subnet, o.Name)
		}
		vnis[o.VNI] = true
	}
	var ok bool
	if n.VNI, ok = freeVNI(vnis, firstVNI, lastVNI); !ok {
		return n, errdefs.Conflictf("no free VNI left in %d-%d for network %s: remove an overlay network first", firstVNI, lastVNI, spec.Name)
	}
	if !n.Subnet.IsValid() {
		used := slices.Clone(spec.Avoid)
		for _, o := range nets {
			used = append(used, o.Subnet)
		}
		var err error
		if n.Subnet, err = ipam.FreeSubnet(ipam.Split(defaultPool, 24), used); err != nil {
			return n, errdefs.Conflictf("no free /24 left in %s for network %s: give it a --subnet", defaultPool, spec.Name)
		}
	}
	if !n.Gateway.IsValid() {
		n.Gateway = n.Subnet.Addr().Next()
	}
	return n, nil
}

// freeVNI is the lowest VNI from first to last that used lacks.
func freeVNI(used map[uint32]bool, first, last uint32) (uint32, bool) {
	for vni := first; vni <= last; vni++ {
		if !used[vni] {
			return vni, true
		}
	}
	return 0, false
}

// Networks lists the overlay networks.
func (c *Cluster) Networks(ctx context.Context) ([]Network, error) {
	return list[Network](ctx, c, networksKey())
}

// Network finds an overlay network by name, ID or unique ID prefix.
func (c *Cluster) Network(ctx context.Context, ref string) (Network, error) {
	nets, err := c.Networks(ctx)
	if err != nil {
		return Network{}, err
	}
	return find(nets, ref)
}

// find finds the network ref names: by whole ID first, then by name, then
// by a prefix of its ID, as Docker does; a name that is another's ID
// never hides it.
func find(nets []Network, ref string) (Network, error) {
	if i := slices.IndexFunc(nets, func(n Network) bool { return n.ID == ref }); i >= 0 {
		return nets[i], nil
	}
	if i := slices.IndexFunc(nets, func(n Network) bool { return n.Name == ref }); i >= 0 {
		return nets[i], nil
	}
	var match []Network
	for _, n := range nets {
		if ref != "" && strings.HasPrefix(n.ID, ref) {
			match = append(match, n)
		}
	}
	if len(match) == 1 {
		return match[0], nil
	}
	if len(match) > 1 {
		return Network{}, errdefs.Invalidf("network %s is ambiguous: %d networks have IDs starting with it", ref, len(match))
	}
	return Network{}, errdefs.NotFoundf("network %s not found", ref)
}

// RemoveNetwork removes an overlay network no host has an address on. The
// check is part of the transaction: an address taken in between keeps
// the network.
func (c *Cluster) RemoveNetwork(ctx context.Context, ref string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	n, err := c.Network(ctx, ref)
	if err != nil {
		return err
	}
	var txn *clientv3.TxnResponse
	for { // made again, it deletes nothing more: a lost answer is harmless
		txn, err = c.client.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(addressesKey(n.ID)).WithPrefix(), "=", 0)).
			Then(clientv3.OpDelete(networkKey(n.ID)), clientv3.OpDelete(lastKey(n.ID))).
			Else(clientv3.OpGet(addressesKey(n.ID), clientv3.WithPrefix())).
			Commit()
		if !c.again(ctx, err) {
			break
		}
	}
	if err != nil {
		return c.unreachable("remove network "+n.Name, err)
	}
	if txn.Succeeded {
		c.wrote(txn.Header.Revision)
		return nil
	}
	// Hosts, and the addresses of records no host can read, which only
	// their writer may give back.
	var holders []string
	for _, u := range heldAddresses(c.log, txn.Responses[0].GetResponseRange().Kvs) {
		h := u.Host.String()
		if !u.Host.IsValid() {
			h = u.Addr.String() + " (a record ebpfnet cannot read)"
		}
		if !slices.Contains(holders, h) {
			holders = append(holders, h)
		}
	}
	return errdefs.Conflictf("network %s has active endpoints on %s: disconnect or remove them first", n.Name, strings.Join(holders, ", "))
}

// Address is an address of an overlay network taken by an endpoint: what
// the other hosts need to reach it, and to answer its names.
type Address struct {
	Addr netip.Addr `json:"addr"`
	// Owner is the endpoint's ID; Host the advertise address of the host
	// it is on.
	Owner   string     `json:"owner"`
	Host    netip.Addr `json:"host"`
	Sandbox string     `json:"sandbox,omitempty"`
	Aliases []string   `json:"aliases,omitempty"`
}

// AllocateAddress takes an address of network for ep.Owner: ep.Addr, or
// the first free one when that is zero. The record, with the sandbox's
// name and aliases, is bound to this host's lease. Taking it again for
// the same owner returns it. Errors leave naming the network to the
// caller, which knows it by the name its user gave.
func (c *Cluster) AllocateAddress(ctx context.Context, networkID string, ep Address) (netip.Addr, error) {
	owner, want := ep.Owner, ep.Addr
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	lease, err := c.registered(ctx)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("allocate an address: %w", err)
	}
	for range attempts {
		resp, err := c.client.Txn(ctx).Then(
			clientv3.OpGet(networkKey(networkID)),
			clientv3.OpGet(addressesKey(networkID), clientv3.WithPrefix()),
			clientv3.OpGet(lastKey(networkID)),
		).Commit()
		if c.again(ctx, err) {
			continue
		}
		if err != nil {
			return netip.Addr{}, c.unreachable("allocate an address", err)
		}
		nets := decodeAll[Network](c.log, resp.Responses[0].GetResponseRange().Kvs)
		if len(nets) == 0 {
			return netip.Addr{}, errdefs.NotFoundf("overlay network %s not found", networkID)
		}
		n := nets[0]
		kvs := resp.Responses[1].GetResponseRange().Kvs
		taken := heldAddresses(c.log, kvs)
		var last netip.Addr // a hint: unreadable, the search starts at the beginning
		if l := resp.Responses[2].GetResponseRange().Kvs; len(l) > 0 {
			last, _ = netip.ParseAddr(string(l[0].Value))
		}
		addr, err := pick(n, taken, owner, want, last)
		if err != nil {
			return addr, err
		}
		ep.Addr, ep.Host = addr, c.cfg.Advertise
		rec, _ := json.Marshal(ep)
		key := addressesKey(networkID) + addr.String()
		// Not held yet; or held by owner already, under another lease
		// than this host's now (taken again after the lease was renewed
		// as a new one: it would go when the old one ends).
		free := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if i := slices.IndexFunc(kvs, func(kv *mvccKV) bool { return string(kv.Key) == key }); i >= 0 {
			if clientv3.LeaseID(kvs[i].Lease) == lease {
				return addr, nil
			}
			free = clientv3.Compare(clientv3.ModRevision(key), "=", kvs[i].ModRevision)
		}
		writes := []clientv3.Op{clientv3.OpPut(key, string(rec), clientv3.WithLease(lease))}
		if !want.IsValid() {
			writes = append(writes, clientv3.OpPut(lastKey(networkID), addr.String()))
		}
		txn, err := c.client.Txn(ctx).
			If(free, clientv3.Compare(clientv3.CreateRevision(networkKey(networkID)), "!=", 0)).
			Then(writes...).
			Commit()
		if c.again(ctx, err) {
			continue // it may have been written: the next read finds it owner's
		}
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			// The lease ended before this host heard (etcd was out of
			// reach longer than it had left): register again and take
			// the address under the new one.
			c.lapse(lease)
			if lease, err = c.registered(ctx); err != nil {
				return netip.Addr{}, fmt.Errorf("allocate an address: %w", err)
			}
			continue
		}
		if err != nil {
			return netip.Addr{}, c.unreachable("allocate an address", err)
		}
		if txn.Succeeded {
			c.wrote(txn.Header.Revision)
			return addr, nil
		}
		if want.IsValid() {
			continue // read again: taken, or the network went
		}
	}
	return netip.Addr{}, errdefs.Conflictf("allocate an address: other hosts kept taking addresses; try again")
}

// pick chooses owner's address on n: the one it holds, want, or the next
// free one after last, the latest handed out, by the pool rules every
// network's addresses follow.
func pick(n Network, taken []Address, owner string, want, last netip.Addr) (netip.Addr, error) {
	for _, a := range taken {
		switch {
		case a.Owner == owner && (!want.IsValid() || a.Addr == want):
			return a.Addr, nil
		case a.Addr == want && a.Owner == "": // a record that does not decode
			return netip.Addr{}, errdefs.Conflictf("address %s is held by a record this host cannot read", want)
		case a.Addr == want:
			holder := "sandbox " + a.Sandbox
			if a.Sandbox == "" { // another writer's record
				holder = "endpoint " + a.Owner
			}
			return netip.Addr{}, errdefs.Conflictf("address %s is %s's, on host %s", want, holder, a.Host)
		}
	}
	p, err := ipam.NewPool(n.Subnet, netip.Prefix{}, n.Gateway)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range taken {
		p.AllocateStatic(a.Addr) // a record's, checked by its writer
	}
	p.Last = last
	return p.Take(want)
}

// ReleaseAddress gives back owner's address on a network; one another
// owner holds stays.
func (c *Cluster) ReleaseAddress(ctx context.Context, networkID string, addr netip.Addr, owner string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	key := addressesKey(networkID) + addr.String()
	for {
		resp, err := c.client.Get(ctx, key)
		if c.again(ctx, err) {
			continue
		}
		if err != nil {
			return c.unreachable("release address "+addr.String(), err)
		}
		if held := decodeAll[Address](c.log, resp.Kvs); len(held) == 0 || held[0].Owner != owner {
			return nil
		}
		txn, err := c.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
			Then(clientv3.OpDelete(key)).
			Commit()
		if c.again(ctx, err) {
			continue // the next read finds it gone, or still owner's
		}
		if err != nil {
			return c.unreachable("release address "+addr.String(), err)
		}
		if !txn.Succeeded {
			continue // written again meanwhile: read it again
		}
		c.wrote(txn.Header.Revision)
		return nil
	}
}

// Addresses lists the addresses taken on a network, by every host.
func (c *Cluster) Addresses(ctx context.Context, networkID string) ([]Address, error) {
	return list[Address](ctx, c, addressesKey(networkID))
}

// record is a kind of record ebpfnet keeps in etcd; check says why one
// is of no use.
type record interface {
	Host | Network | Address
	check() error
}

func (h Host) check() error {
	if !h.Advertise.IsValid() {
		return errors.New("no advertise address")
	}
	return nil
}

func (n Network) check() error {
	switch {
	case n.ID == "" || n.Name == "":
		return errors.New("no ID or name")
	case !n.Subnet.IsValid() || !n.Subnet.Addr().Is4() || !n.Subnet.Contains(n.Gateway):
		return fmt.Errorf("subnet %s and gateway %s are not an IPv4 subnet and one of its addresses", n.Subnet, n.Gateway)
	case n.VNI < firstVNI || n.VNI > lastVNI:
		return fmt.Errorf("VNI %d is out of %d-%d", n.VNI, firstVNI, lastVNI)
	}
	return nil
}

func (a Address) check() error {
	if !a.Addr.IsValid() || !a.Host.IsValid() || a.Owner == "" {
		return errors.New("no address, host or owner")
	}
	return nil
}

// decodeAll decodes records. One that does not decode, or is of no use,
// was written by something else under the prefix: it is left out, and
// logged, so that it cannot stop every host from reading the cluster.
func decodeAll[T record](log *slog.Logger, kvs []*mvccKV) []T {
	out := make([]T, 0, len(kvs))
	for _, kv := range kvs {
		var v T
		err := json.Unmarshal(kv.Value, &v)
		if err == nil {
			err = v.check()
		}
		if err != nil {
			log.Warn("cluster store: ignoring a record ebpfnet cannot use", "key", string(kv.Key), "err", err)
			continue
		}
		out = append(out, v)
	}
	return out
}

// heldAddresses are the addresses taken on a network: those of the
// records, and those whose records could not be read, which only their
// writer may give back.
func heldAddresses(log *slog.Logger, kvs []*mvccKV) []Address {
	held := decodeAll[Address](log, kvs)
	for _, kv := range kvs {
		_, key, _ := strings.Cut(string(kv.Key)[len(prefix+"addresses/"):], "/")
		if a, err := netip.ParseAddr(key); err == nil && !slices.ContainsFunc(held, func(h Address) bool { return h.Addr == a }) {
			held = append(held, Address{Addr: a})
		}
	}
	return held
}

// mvccKV is a key and value as etcd returns them.
type mvccKV = mvccpb.KeyValue
