package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/failpoint"
	"github.com/ebpfnet/ebpfnet/control/ipam"
)

// ErrNotFound is returned when no record has the given name or ID.
var ErrNotFound = errdefs.ErrNotFound

var (
	bucketNetworks  = []byte("networks")
	bucketSandboxes = []byte("sandboxes")
	bucketMeta      = []byte("meta")
	// Publications live apart from their sandbox's record, a bucket per
	// sandbox and a key per publication: publishing one port writes one
	// small key whatever else the sandbox publishes.
	bucketPublications = []byte("publications")
	// Pools live apart from networks: they have IDs of their own, and an
	// address is allocated by pool ID.
	bucketPools = []byte("pools")
)

// Store is the state file.
type Store struct {
	db *bolt.DB

	trackMu  sync.Mutex
	trackers map[*Tracker]bool
}

// Open opens (or creates) the state file in dir. It fails at once when
// another daemon holds it.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, "state.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second,
		// Map far more than the file holds, so the file's growth never
		// remaps it: a remap copies every node the open transaction has
		// touched onto the heap, milliseconds with 50,000 publications.
		// The mapping is address space only; pages come as the file does.
		InitialMmapSize: 1 << 30,
		// The free list is rebuilt from the pages at open instead of
		// written at every commit, where it grows with the file; what a
		// commit makes durable is the same. etcd runs bbolt so too.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open state %s: another ebpfnet daemon is using it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w (the file is damaged: restore it, or move it away to start afresh; the datapath keeps forwarding meanwhile)", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketNetworks, bucketSandboxes, bucketMeta, bucketPublications, bucketPools, bucketSandboxIndex} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := checkFormat(tx.Bucket(bucketMeta)); err != nil {
			return err
		}
		return errors.Join(movePublications(&Tx{tx: tx}), movePools(&Tx{tx: tx}), linkPublications(&Tx{tx: tx}), buildSandboxIndex(tx))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise state %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Format is the layout of the state this version writes. A state of a
// later format was written by a newer ebpfnet, whose records this one
// could misread and write back wrong: it is refused.
const Format = 1

var keyFormat = []byte("format")

// checkFormat refuses a state of a later format than Format, and records
// Format in one of none (written before formats were).
func checkFormat(meta *bolt.Bucket) error {
	if v := meta.Get(keyFormat); len(v) == 8 {
		if f := binary.BigEndian.Uint64(v); f > Format {
			return fmt.Errorf("written by a newer ebpfnet (state format %d; this one reads up to %d): run that version, or move the file away to start afresh", f, Format)
		}
		return nil
	}
	return meta.Put(keyFormat, binary.BigEndian.AppendUint64(nil, Format))
}

// Close closes the state file.
func (s *Store) Close() error { return s.db.Close() }

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(*Tx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(&Tx{tx: tx}) })
}

// Update runs fn in a read-write transaction, committed when fn returns nil.
func (s *Store) Update(fn func(*Tx) error) error {
	_, err := s.Change(fn)
	return err
}

// Changes are the records a committed transaction wrote or deleted, so
// that what follows the store (names, files) redoes the work of those
// only, not of every record.
type Changes struct {
	Sandboxes []string // by name
	Networks  []string // by ID
	// Publications are the sandboxes, by name, whose publications alone
	// changed: names and files do not follow them, the maps do.
	Publications []string
}

// Empty reports whether ch names no record.
func (ch Changes) Empty() bool {
	return len(ch.Sandboxes) == 0 && len(ch.Networks) == 0 && len(ch.Publications) == 0
}

// SandboxNames are the sandboxes ch names, whole or by their
// publications, each once.
func (ch Changes) SandboxNames() map[string]bool {
	names := map[string]bool{}
	for _, name := range slices.Concat(ch.Sandboxes, ch.Publications) {
		names[name] = true
	}
	return names
}

func (ch *Changes) add(more Changes) {
	ch.Sandboxes = append(ch.Sandboxes, more.Sandboxes...)
	ch.Networks = append(ch.Networks, more.Networks...)
	ch.Publications = append(ch.Publications, more.Publications...)
}

// Change is Update that also says which records the transaction changed.
func (s *Store) Change(fn func(*Tx) error) (Changes, error) {
	var ch Changes
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := fn(&Tx{tx: tx, changes: &ch}); err != nil {
			return err
		}
		return failpoint.Hit("store.commit") // the change's last step before the commit
	})
	if err != nil {
		return Changes{}, err
	}
	failpoint.Hit("store.committed") // a crash alone: it is committed
	s.trackMu.Lock()
	for t := range s.trackers {
		t.seen.add(ch)
	}
	s.trackMu.Unlock()
	return ch, nil
}

// Tracker collects the changes committed while it runs.
type Tracker struct {
	s    *Store
	seen Changes
}

// Track starts collecting the changes committed from now on, so that
// work done from a snapshot read without a lock can tell which records
// changed behind it.
func (s *Store) Track() *Tracker {
	t := &Tracker{s: s}
	s.trackMu.Lock()
	defer s.trackMu.Unlock()
	if s.trackers == nil {
		s.trackers = map[*Tracker]bool{}
	}
	s.trackers[t] = true
	return t
}

// Stop ends the tracking and returns what changed since Track.
func (t *Tracker) Stop() Changes {
	t.s.trackMu.Lock()
	defer t.s.trackMu.Unlock()
	delete(t.s.trackers, t)
	return t.seen
}

// Snapshot reads every network and sandbox in one transaction.
func (s *Store) Snapshot() (nets []Network, sbs []Sandbox, err error) {
	err = s.View(func(tx *Tx) error {
		if nets, err = tx.Networks(); err != nil {
			return err
		}
		sbs, err = tx.Sandboxes()
		return err
	})
	return nets, sbs, err
}

// Tx is one transaction.
type Tx struct {
	tx      *bolt.Tx
	changes *Changes // nil where nobody follows (migrations, reads)
}

func (t *Tx) noteSandbox(name string) {
	if t.changes != nil {
		t.changes.Sandboxes = append(t.changes.Sandboxes, name)
	}
}

func (t *Tx) notePublications(sandbox string) {
	if t.changes != nil {
		t.changes.Publications = append(t.changes.Publications, sandbox)
	}
}

func (t *Tx) noteNetwork(id string) {
	if t.changes != nil {
		t.changes.Networks = append(t.changes.Networks, id)
	}
}

func put(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

func list[T any](b *bolt.Bucket) ([]T, error) {
	var out []T
	err := b.ForEach(func(k, v []byte) error {
		var rec T
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("decode record %s: %w", k, err)
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// find looks a record up like Docker does: by exact name, by exact ID, then
// by a unique ID prefix.
func find[T any](b *bolt.Bucket, ref string, name, id func(*T) string) (T, error) {
	var zero T
	// Names are the keys: most lookups decode one record, not all.
	if data := b.Get([]byte(ref)); data != nil {
		var rec T
		if err := json.Unmarshal(data, &rec); err != nil {
			return zero, fmt.Errorf("decode record %s: %w", ref, err)
		}
		return rec, nil
	}
	all, err := list[T](b)
	if err != nil {
		return zero, err
	}
	var matches []T
	for i := range all {
		if id(&all[i]) == ref {
			return all[i], nil
		}
		if ref != "" && strings.HasPrefix(id(&all[i]), ref) {
			matches = append(matches, all[i])
		}
	}
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		return zero, ErrNotFound
	}
	return zero, errdefs.Invalidf("%q matches %d IDs: use more characters", ref, len(matches))
}

// Networks returns every network, ordered by name.
func (t *Tx) Networks() ([]Network, error) {
	all, err := list[Network](t.tx.Bucket(bucketNetworks))
	if err != nil {
		return nil, err
	}
	for i := range all {
		if err := t.joinPool(&all[i]); err != nil {
			return nil, err
		}
	}
	return all, nil
}

// Network finds a network by name, ID or unique ID prefix.
func (t *Tx) Network(ref string) (Network, error) {
	n, err := find(t.tx.Bucket(bucketNetworks), ref,
		func(n *Network) string { return n.Name }, func(n *Network) string { return n.ID })
	if errors.Is(err, ErrNotFound) {
		return n, fmt.Errorf("network %s: %w", ref, err)
	}
	if err != nil {
		return n, err
	}
	return n, t.joinPool(&n)
}

// NetworkOf is the network an endpoint is on; one missing is a broken
// record, said as such.
func (t *Tx) NetworkOf(ep Endpoint) (Network, error) {
	n, err := t.Network(ep.NetworkID)
	if err != nil {
		return n, fmt.Errorf("endpoint refers to a missing network: %w", err)
	}
	return n, nil
}

// joinPool fills in n.Pool and n.Pool6 from the pools n refers to.
func (t *Tx) joinPool(n *Network) (err error) {
	if n.PoolID != "" {
		n.Pool, err = t.Pool(n.PoolID)
	}
	if n.PoolID6 != "" && err == nil {
		n.Pool6, err = t.Pool(n.PoolID6)
	}
	return err
}

var (
	keyHostID       = []byte("hostId")
	keyClusterLease = []byte("clusterLease")
)

// HostID is a random ID made with the state and kept with it: what
// identifies this host where Docker uses its engine ID (the default IPv6
// pool derives from it).
func (t *Tx) HostID() (string, error) {
	meta := t.tx.Bucket(bucketMeta)
	if id := meta.Get(keyHostID); id != nil {
		return string(id), nil
	}
	if !t.tx.Writable() {
		return "", errors.New("the state has no host ID yet (it is made in a writable transaction)")
	}
	b := make([]byte, 32)
	rand.Read(b)
	id := hex.EncodeToString(b)
	return id, meta.Put(keyHostID, []byte(id))
}

// ClusterLease is the cluster lease this host last held (0: none), which
// a restarted daemon keeps while it lives, so that the other hosts never
// see this host's endpoints go.
func (t *Tx) ClusterLease() int64 {
	v := t.tx.Bucket(bucketMeta).Get(keyClusterLease)
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// PutClusterLease records the cluster lease this host holds.
func (t *Tx) PutClusterLease(id int64) error {
	return t.tx.Bucket(bucketMeta).Put(keyClusterLease, binary.BigEndian.AppendUint64(nil, uint64(id)))
}

// Pool returns the pool with ID id.
func (t *Tx) Pool(id string) (ipam.Pool, error) {
	v := t.tx.Bucket(bucketPools).Get([]byte(id))
	if v == nil {
		return ipam.Pool{}, fmt.Errorf("pool %s: %w", id, ErrNotFound)
	}
	return decodePool(id, v)
}

// Pools returns every pool, ordered by ID.
func (t *Tx) Pools() ([]ipam.Pool, error) {
	var out []ipam.Pool
	err := t.tx.Bucket(bucketPools).ForEach(func(k, v []byte) error {
		p, err := decodePool(string(k), v)
		out = append(out, p)
		return err
	})
	return out, err
}

// PutPool writes a pool under its ID.
func (t *Tx) PutPool(p ipam.Pool) error {
	stored := storedPool{Pool: p}
	stored.Allocated = nil
	for _, a := range p.Allocated {
		stored.Packed = append(stored.Packed, a.AsSlice()...)
	}
	return put(t.tx.Bucket(bucketPools), p.ID, stored)
}

// storedPool is a pool as the state file holds it: its allocated
// addresses packed, 4 or 16 bytes each, where JSON gave each a string.
// Every change that reads a network decodes its pools, and decoding
// strings cost what the pool holds many times over. A record written
// before holds them in "allocated", which is read as well.
type storedPool struct {
	ipam.Pool
	Packed []byte `json:"allocatedPacked,omitempty"`
}

// decodePool reads pool id's record.
func decodePool(id string, v []byte) (ipam.Pool, error) {
	var p storedPool
	if err := json.Unmarshal(v, &p); err != nil {
		return ipam.Pool{}, fmt.Errorf("decode pool %s: %w", id, err)
	}
	size := 4
	if p.Subnet.Addr().Is6() {
		size = 16
	}
	if len(p.Packed)%size != 0 {
		return ipam.Pool{}, fmt.Errorf("decode pool %s: %d bytes of addresses of %d bytes each", id, len(p.Packed), size)
	}
	if len(p.Packed) > 0 {
		p.Allocated = make([]netip.Addr, 0, len(p.Packed)/size)
	}
	for b := p.Packed; len(b) > 0; b = b[size:] {
		a, _ := netip.AddrFromSlice(b[:size])
		p.Allocated = append(p.Allocated, a)
	}
	return p.Pool, nil
}

// DeletePool removes a pool.
func (t *Tx) DeletePool(id string) error { return t.tx.Bucket(bucketPools).Delete([]byte(id)) }

// PutNetwork writes a network.
func (t *Tx) PutNetwork(n Network) error {
	t.noteNetwork(n.ID)
	return put(t.tx.Bucket(bucketNetworks), n.Name, n)
}

// DeleteNetwork removes a network.
func (t *Tx) DeleteNetwork(name string) error {
	b := t.tx.Bucket(bucketNetworks)
	var n Network
	if data := b.Get([]byte(name)); data != nil && json.Unmarshal(data, &n) == nil {
		t.noteNetwork(n.ID)
	}
	return b.Delete([]byte(name))
}

// NextNetworkIndex hands out the BPF map key of a new network; it is never
// reused, so stale map entries can never be mistaken for a new network.
func (t *Tx) NextNetworkIndex() (uint32, error) {
	seq, err := t.tx.Bucket(bucketMeta).NextSequence()
	if seq > 1<<32-1 {
		return 0, errors.New("network index space exhausted")
	}
	return uint32(seq), err
}

// Sandboxes returns every sandbox, ordered by name.
func (t *Tx) Sandboxes() ([]Sandbox, error) { return list[Sandbox](t.tx.Bucket(bucketSandboxes)) }

// Sandbox finds a sandbox like Docker does: by exact name, by exact ID,
// then by a unique ID prefix (through the index: one lookup each).
func (t *Tx) Sandbox(ref string) (Sandbox, error) {
	s, ok, err := t.SandboxNamed(ref)
	if err == nil && !ok {
		s, err = t.sandboxByID(ref)
	}
	if errors.Is(err, ErrNotFound) {
		return s, fmt.Errorf("sandbox %s: %w", ref, err)
	}
	return s, err
}

// SandboxNamed reads the sandbox named name, by its key alone: unlike
// Sandbox, a name that is not there costs one lookup, not a read of every
// sandbox for an ID it might be.
func (t *Tx) SandboxNamed(name string) (Sandbox, bool, error) {
	var s Sandbox
	data := t.tx.Bucket(bucketSandboxes).Get([]byte(name))
	if data == nil {
		return s, false, nil
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, false, fmt.Errorf("decode record %s: %w", name, err)
	}
	return s, true, nil
}

// PutSandbox writes a sandbox.
func (t *Tx) PutSandbox(s Sandbox) error {
	t.noteSandbox(s.Name)
	if err := t.reindex(s.Name, &s); err != nil {
		return err
	}
	return put(t.tx.Bucket(bucketSandboxes), s.Name, s)
}

// DeleteSandbox removes a sandbox and its publications.
func (t *Tx) DeleteSandbox(name string) error {
	t.noteSandbox(name)
	err := t.tx.Bucket(bucketPublications).DeleteBucket([]byte(name))
	if err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
		return err
	}
	if err := t.reindex(name, nil); err != nil {
		return err
	}
	return t.tx.Bucket(bucketSandboxes).Delete([]byte(name))
}

// publicationKey orders a sandbox's publications by host address, host
// port and protocol: what makes one unique. An IPv4 address (or none:
// every host address) takes 4 bytes, as keys were before IPv6, and an
// IPv6 one 16, so the two never collide.
func publicationKey(p Publication) []byte {
	addr := make([]byte, 4) // zero: every host address
	if p.HostIP.IsValid() {
		addr = p.HostIP.AsSlice()
	}
	return append(append(addr, byte(p.HostPort>>8), byte(p.HostPort)), p.Proto...)
}

// Publications returns a sandbox's publications.
func (t *Tx) Publications(sandbox string) ([]Publication, error) {
	b := t.tx.Bucket(bucketPublications).Bucket([]byte(sandbox))
	if b == nil {
		return nil, nil
	}
	return list[Publication](b)
}

// AllPublications returns every sandbox's publications, by sandbox name.
func (t *Tx) AllPublications() (map[string][]Publication, error) {
	out := map[string][]Publication{}
	err := t.tx.Bucket(bucketPublications).ForEachBucket(func(name []byte) error {
		pubs, err := t.Publications(string(name))
		out[string(name)] = pubs
		return err
	})
	return out, err
}

// PutPublications writes publications of a sandbox.
func (t *Tx) PutPublications(sandbox string, pubs ...Publication) error {
	if len(pubs) == 0 {
		return nil
	}
	t.notePublications(sandbox)
	b, err := t.tx.Bucket(bucketPublications).CreateBucketIfNotExists([]byte(sandbox))
	if err != nil {
		return err
	}
	for _, p := range pubs {
		data, err := json.Marshal(p)
		if err == nil {
			err = b.Put(publicationKey(p), data)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// DeletePublications removes publications of a sandbox.
func (t *Tx) DeletePublications(sandbox string, pubs ...Publication) error {
	b := t.tx.Bucket(bucketPublications).Bucket([]byte(sandbox))
	if b == nil {
		return nil
	}
	t.notePublications(sandbox)
	for _, p := range pubs {
		if err := b.Delete(publicationKey(p)); err != nil {
			return err
		}
	}
	return nil
}

// movePublications moves publications that state files written before
// they had a bucket of their own keep inside sandbox records. They move as
// they are, for linkPublications to find the network they name.
func movePublications(t *Tx) error {
	type older struct {
		Publications []json.RawMessage `json:"publications"`
	}
	sandboxes := t.tx.Bucket(bucketSandboxes)
	var moved []Sandbox
	err := sandboxes.ForEach(func(k, v []byte) error {
		var old older
		if err := json.Unmarshal(v, &old); err != nil {
			return fmt.Errorf("decode record %s: %w", k, err)
		}
		if len(old.Publications) == 0 {
			return nil
		}
		var sb Sandbox
		if err := json.Unmarshal(v, &sb); err != nil {
			return fmt.Errorf("decode record %s: %w", k, err)
		}
		moved = append(moved, sb)
		b, err := t.tx.Bucket(bucketPublications).CreateBucketIfNotExists(k)
		if err != nil {
			return err
		}
		for _, raw := range old.Publications {
			var p Publication
			if err := json.Unmarshal(raw, &p); err != nil {
				return fmt.Errorf("decode publication of %s: %w", k, err)
			}
			if err := b.Put(publicationKey(p), raw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, sb := range moved { // rewritten without them
		if err := t.PutSandbox(sb); err != nil {
			return err
		}
	}
	return nil
}

// movePools moves the pools that state files written before pools had
// IDs keep inside network records into a bucket of their own, each under
// its network's ID, which is unique and stays the pool's.
func movePools(t *Tx) error {
	type older struct {
		PoolID string     `json:"poolId"`
		Pool   *ipam.Pool `json:"pool"`
	}
	networks := t.tx.Bucket(bucketNetworks)
	var moved []Network
	err := networks.ForEach(func(k, v []byte) error {
		var old older
		if err := json.Unmarshal(v, &old); err != nil {
			return fmt.Errorf("decode record %s: %w", k, err)
		}
		if old.PoolID != "" || old.Pool == nil {
			return nil
		}
		var n Network
		if err := json.Unmarshal(v, &n); err != nil {
			return fmt.Errorf("decode record %s: %w", k, err)
		}
		old.Pool.ID, n.PoolID = n.ID, n.ID
		moved = append(moved, n)
		return t.PutPool(*old.Pool)
	})
	if err != nil {
		return err
	}
	for _, n := range moved { // rewritten with a pool ID instead
		if err := t.PutNetwork(n); err != nil {
			return err
		}
	}
	return nil
}

// linkPublications gives each publication that state files written before
// publications named their endpoint keep with its network's ID the ID of
// its sandbox's endpoint on that network. One whose sandbox has no
// endpoint there led nowhere and still does; it stays as it is, holding
// its host port.
func linkPublications(t *Tx) error {
	type older struct {
		EndpointID string `json:"endpointId"`
		NetworkID  string `json:"networkId"`
	}
	pubs := t.tx.Bucket(bucketPublications)
	linked := map[string][]Publication{}
	err := pubs.ForEachBucket(func(name []byte) error {
		var sb Sandbox
		if v := t.tx.Bucket(bucketSandboxes).Get(name); v != nil {
			if err := json.Unmarshal(v, &sb); err != nil {
				return fmt.Errorf("decode record %s: %w", name, err)
			}
		}
		return pubs.Bucket(name).ForEach(func(k, v []byte) error {
			var old older
			if err := json.Unmarshal(v, &old); err != nil {
				return fmt.Errorf("decode publication %x of %s: %w", k, name, err)
			}
			if old.EndpointID != "" || old.NetworkID == "" {
				return nil
			}
			i := slices.IndexFunc(sb.Endpoints, func(ep Endpoint) bool { return ep.NetworkID == old.NetworkID })
			if i < 0 {
				return nil
			}
			var p Publication
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("decode publication %x of %s: %w", k, name, err)
			}
			p.EndpointID = sb.Endpoints[i].ID
			linked[string(name)] = append(linked[string(name)], p)
			return nil
		})
	})
	if err != nil {
		return err
	}
	for sandbox, ps := range linked { // rewritten under the same keys, without the network
		if err := t.PutPublications(sandbox, ps...); err != nil {
			return err
		}
	}
	return nil
}

// ReleaseAddresses returns an endpoint's addresses to its network n's
// pools.
func (t *Tx) ReleaseAddresses(n Network, ep Endpoint) error {
	if err := ipam.Release(t, n.PoolID, ep.Addr); err != nil || !ep.Addr6.IsValid() {
		return err
	}
	return ipam.Release(t, n.PoolID6, ep.Addr6)
}
