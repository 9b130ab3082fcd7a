package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// bucketSandboxIndex finds sandboxes by what is not their key: their ID,
// the networks they are on, and what an endpoint holds on its network (an
// address, a MAC) or on the host (a host-side interface). Without it each
// of these lookups decodes every sandbox, and a change costs more the more
// sandboxes there are. It is derived from the sandboxes alone: Open builds
// it again, so a state file written before it, or by a version that did
// not keep it, comes up right.
var bucketSandboxIndex = []byte("sandbox-index")

// Index keys, each a kind and its parts joined by sep; the value is the
// name of the sandbox that holds it.
const sep = "\x00"

func idKey(id string) []byte              { return []byte("id" + sep + id) }
func userKey(network, name string) []byte { return []byte("user" + sep + network + sep + name) }
func addrKey(network string, a netip.Addr) []byte {
	return []byte("addr" + sep + network + sep + a.String())
}
func macKey(network, mac string) []byte {
	return []byte("mac" + sep + network + sep + strings.ToLower(mac))
}
func hostSideKey(name string) []byte { return []byte("hostside" + sep + name) }

// indexKeys are the keys sandbox s holds in the index.
func indexKeys(s Sandbox) [][]byte {
	keys := [][]byte{idKey(s.ID)}
	for _, ep := range s.Endpoints {
		keys = append(keys, userKey(ep.NetworkID, s.Name))
		for _, a := range []netip.Addr{ep.Addr, ep.Addr6} {
			if a.IsValid() {
				keys = append(keys, addrKey(ep.NetworkID, a))
			}
		}
		if ep.MAC != "" {
			keys = append(keys, macKey(ep.NetworkID, ep.MAC))
		}
		if ep.HostSide != "" {
			keys = append(keys, hostSideKey(ep.HostSide))
		}
	}
	return keys
}

// reindex replaces the index entries of the sandbox stored as name (none
// when it is new) by those of s (none when it goes).
func (t *Tx) reindex(name string, s *Sandbox) error {
	idx := t.tx.Bucket(bucketSandboxIndex)
	if old := t.tx.Bucket(bucketSandboxes).Get([]byte(name)); old != nil {
		var was Sandbox
		if err := json.Unmarshal(old, &was); err != nil {
			return fmt.Errorf("decode record %s: %w", name, err)
		}
		for _, k := range indexKeys(was) {
			// Only what is its own: two records that claim one key (a
			// state written before the checks) must not lose the other's.
			if bytes.Equal(idx.Get(k), []byte(name)) {
				if err := idx.Delete(k); err != nil {
					return err
				}
			}
		}
	}
	if s == nil {
		return nil
	}
	for _, k := range indexKeys(*s) {
		if err := idx.Put(k, []byte(s.Name)); err != nil {
			return err
		}
	}
	return nil
}

// buildSandboxIndex makes the index anew from the sandboxes.
func buildSandboxIndex(tx *bolt.Tx) error {
	if err := tx.DeleteBucket(bucketSandboxIndex); err != nil && err != bolt.ErrBucketNotFound {
		return err
	}
	idx, err := tx.CreateBucket(bucketSandboxIndex)
	if err != nil {
		return err
	}
	sbs, err := list[Sandbox](tx.Bucket(bucketSandboxes))
	if err != nil {
		return err
	}
	for _, s := range sbs {
		for _, k := range indexKeys(s) {
			if err := idx.Put(k, []byte(s.Name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// held is the name of the sandbox that holds key, if one does.
func (t *Tx) held(key []byte) (string, bool) {
	v := t.tx.Bucket(bucketSandboxIndex).Get(key)
	return string(v), v != nil
}

// AddressHolder names the sandbox whose endpoint on network holds a.
func (t *Tx) AddressHolder(network string, a netip.Addr) (string, bool) {
	return t.held(addrKey(network, a))
}

// MACHolder names the sandbox whose endpoint on network has mac.
func (t *Tx) MACHolder(network, mac string) (string, bool) { return t.held(macKey(network, mac)) }

// HostSideHolder names the sandbox whose endpoint has the host interface
// name.
func (t *Tx) HostSideHolder(name string) (string, bool) { return t.held(hostSideKey(name)) }

// NetworkUsers names the sandboxes with an endpoint on network, in order.
func (t *Tx) NetworkUsers(network string) []string {
	var users []string
	prefix := userKey(network, "")
	c := t.tx.Bucket(bucketSandboxIndex).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		users = append(users, string(k[len(prefix):]))
	}
	return users
}

// sandboxByID finds the sandbox whose ID is ref, or starts with it.
func (t *Tx) sandboxByID(ref string) (Sandbox, error) {
	if name, ok := t.held(idKey(ref)); ok {
		s, _, err := t.SandboxNamed(name)
		return s, err
	}
	var matches []string
	if ref != "" {
		prefix := idKey(ref)
		c := t.tx.Bucket(bucketSandboxIndex).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			matches = append(matches, string(v))
		}
	}
	switch len(matches) {
	case 0:
		return Sandbox{}, ErrNotFound
	case 1:
		s, _, err := t.SandboxNamed(matches[0])
		return s, err
	}
	return Sandbox{}, errdefs.Invalidf("%q matches %d IDs: use more characters", ref, len(matches))
}
