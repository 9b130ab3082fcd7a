package control

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
	"github.com/ebpfnet/ebpfnet/control/ports"
	"github.com/ebpfnet/ebpfnet/control/store"
	"github.com/ebpfnet/ebpfnet/maps"
)

// overlaps reports whether two publications claim the same host port.
func overlaps(a, b store.Publication) bool {
	return a.Proto == b.Proto && a.HostPort == b.HostPort &&
		(!a.HostIP.IsValid() || !b.HostIP.IsValid() || a.HostIP == b.HostIP)
}

func describe(p store.Publication) string {
	return fmt.Sprintf("%s:%d->%d/%s", p.HostAddress(), p.HostPort, p.Port, p.Proto)
}

// publishTarget is the endpoint a sandbox's published ports lead to: its
// first on a bridge network that is not internal.
func publishTarget(tx *store.Tx, sb store.Sandbox) (store.Network, store.Endpoint, error) {
	for _, ep := range sb.Endpoints {
		n, err := networkByID(tx, ep.NetworkID)
		if err != nil {
			return n, ep, err
		}
		if servedByDatapath(n) && !n.Internal {
			return n, ep, nil
		}
	}
	return store.Network{}, store.Endpoint{}, errdefs.Conflictf("sandbox %s has no endpoint on a bridge network that is not internal: nothing to publish to", sb.Name)
}

func endpointOn(sb store.Sandbox, networkID string) (store.Endpoint, bool) {
	i := slices.IndexFunc(sb.Endpoints, func(ep store.Endpoint) bool { return ep.NetworkID == networkID })
	if i < 0 {
		return store.Endpoint{}, false
	}
	return sb.Endpoints[i], true
}

// Publish publishes ports of a sandbox. Either all of specs are published
// or none.
func (e *Engine) Publish(sandboxRef string, specs []ports.Mapping) ([]store.Publication, error) {
	if err := checkPublish(specs); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var added []store.Publication
	err := e.apply(func(tx *store.Tx, undo *rollback) error {
		sb, err := tx.Sandbox(sandboxRef)
		if err != nil {
			return err
		}
		added, err = e.addPublications(tx, undo, sb, specs)
		return err
	}, false)
	return added, err
}

// addPublications publishes specs on sb, in the store and the maps, and
// registers how to undo the map entries.
func (e *Engine) addPublications(tx *store.Tx, undo *rollback, sb store.Sandbox, specs []ports.Mapping) ([]store.Publication, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	n, ep, err := publishTarget(tx, sb)
	if err != nil {
		return nil, err
	}
	taken, err := e.portIndex(tx)
	if err != nil {
		return nil, err
	}
	var added []store.Publication
	// One visit to the host namespace for everything the request asks of it.
	err = e.inHost(func() error {
		var hostAddrs []netip.Addr // listed once a spec names one
		lo, hi := ephemeralRange()
		for _, spec := range specs {
			if spec.HostIP.IsValid() && !spec.HostIP.IsLoopback() {
				if hostAddrs == nil {
					var err error
					if hostAddrs, err = hostAddresses(); err != nil {
						return err
					}
				}
				if !slices.Contains(hostAddrs, spec.HostIP) {
					return errdefs.Invalidf("host address %s is not an address of this host", spec.HostIP)
				}
			}
			pubs, err := choosePorts(spec, n.ID, sb.Name, taken, lo, hi)
			if err != nil {
				return err
			}
			added = append(added, pubs...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var put []maps.Publication
	undo.add(func() error { return e.maps.DeletePublications(put...) }) // sees all put below
	for _, p := range added {
		m := pubMaps(p, ep)
		if err := e.maps.PutPublication(m); err != nil {
			return nil, err
		}
		put = append(put, m)
	}
	return added, tx.PutPublications(sb.Name, added...)
}

// portIndex finds the publications of a protocol and host port, and the
// sandboxes that have them, in constant time however many there are.
type portIndex map[portKey][]owned

type portKey struct {
	proto string
	port  uint16
}

// owned is a publication and the sandbox that has it.
type owned struct {
	store.Publication
	sandbox string
}

func (ix portIndex) add(p store.Publication, sandbox string) {
	k := portKey{p.Proto, p.HostPort}
	ix[k] = append(ix[k], owned{p, sandbox})
}

// conflict returns a publication that claims p's host port, if any.
func (ix portIndex) conflict(p store.Publication) (owned, bool) {
	for _, o := range ix[portKey{p.Proto, p.HostPort}] {
		if overlaps(p, o.Publication) {
			return o, true
		}
	}
	return owned{}, false
}

// remove drops a sandbox's publication from the index.
func (ix portIndex) remove(p store.Publication, sandbox string) {
	k := portKey{p.Proto, p.HostPort}
	ix[k] = slices.DeleteFunc(ix[k], func(o owned) bool { return o.sandbox == sandbox && o.Publication == p })
	if len(ix[k]) == 0 {
		delete(ix, k)
	}
}

// portIndex returns the index of every publication, building it from the
// store when there is none. Callers hold e.mu.
func (e *Engine) portIndex(tx *store.Tx) (portIndex, error) {
	if e.ports != nil {
		return e.ports, nil
	}
	all, err := tx.AllPublications()
	if err != nil {
		return nil, err
	}
	ix := portIndex{}
	for sandbox, pubs := range all {
		for _, p := range pubs {
			ix.add(p, sandbox)
		}
	}
	e.ports = ix
	return ix, nil
}

// forgetPorts drops a removed sandbox's publications from the index.
func (e *Engine) forgetPorts(sandbox string, pubs []store.Publication) {
	if e.ports == nil {
		return
	}
	for _, p := range pubs {
		e.ports.remove(p, sandbox)
	}
}

// choosePorts turns a spec into publications with free host ports and
// adds each to taken under sandbox as it is chosen, so later choices of
// the same request avoid it; it runs in the host namespace. Random ports
// come from [lo, hi].
func choosePorts(spec ports.Mapping, networkID, sandbox string, taken portIndex, lo, hi int) ([]store.Publication, error) {
	var out []store.Publication
	mk := func(host, port uint16) store.Publication {
		return store.Publication{HostIP: spec.HostIP, HostPort: host, Proto: string(spec.Proto), Port: port, NetworkID: networkID}
	}
	hostFirst, hostEnd := spec.HostPorts()
	first, end := spec.Ports()
	switch {
	case hostFirst != 0 && hostEnd-hostFirst == end-first:
		for i := 0; i <= int(end-first); i++ {
			p := mk(hostFirst+uint16(i), first+uint16(i))
			if err := checkFree(p, taken); err != nil {
				return nil, err
			}
			taken.add(p, sandbox)
			out = append(out, p)
		}
	case hostFirst != 0: // one sandbox port, any free host port of the range
		p, err := firstFree(mk(0, first), int(hostFirst), int(hostEnd), taken)
		if err != nil {
			return nil, fmt.Errorf("no free host port in %d-%d/%s: %w", hostFirst, hostEnd, spec.Proto, err)
		}
		taken.add(p, sandbox)
		out = append(out, p)
	default: // each sandbox port gets a free port of the ephemeral range
		for port := int(first); port <= int(end); port++ {
			p, err := firstFree(mk(0, uint16(port)), lo, hi, taken)
			if err != nil {
				return nil, fmt.Errorf("no free host port for %d/%s: %w", port, spec.Proto, err)
			}
			taken.add(p, sandbox)
			out = append(out, p)
		}
	}
	return out, nil
}

// firstFree finds the first free port of [lo, hi], trying from a random
// start.
func firstFree(p store.Publication, lo, hi int, taken portIndex) (store.Publication, error) {
	n := hi - lo + 1
	start := rand.IntN(n)
	for i := range n {
		p.HostPort = uint16(lo + (start+i)%n)
		err := checkFree(p, taken)
		var t takenError
		if !errors.As(err, &t) {
			return p, err // free, or failing for every port alike
		}
	}
	return p, errdefs.Conflict(errors.New("every port is published or in use"))
}

// checkFree fails when another publication has the host port, or a socket
// of the host is bound to it. It runs in the host namespace. Once
// published, the port is held by the datapath's bind hook; until then a
// bind is the one test that sees every socket of the namespace.
func checkFree(p store.Publication, taken portIndex) error {
	if t, ok := taken.conflict(p); ok {
		return errdefs.Conflict(takenError(fmt.Sprintf("host port %s is already published by sandbox %s (%s)", hostPort(p), t.sandbox, describe(t.Publication))))
	}
	err := probeBind(p)
	if errors.Is(err, unix.EADDRINUSE) {
		return errdefs.Conflict(takenError(fmt.Sprintf("host port %s is in use by a process on the host", hostPort(p))))
	}
	if err != nil {
		return fmt.Errorf("check host port %s: %w", hostPort(p), err)
	}
	return nil
}

// probeBind binds a socket to p's host address and port and closes it.
// Without SO_REUSEADDR (which Go's net.Listen sets): Linux lets two
// sockets that both set it share a port nobody listens on, so the probe
// would miss a host process's bound UDP socket or unlistening TCP socket.
func probeBind(p store.Publication) error {
	typ := unix.SOCK_STREAM
	if ports.Protocol(p.Proto) == ports.UDP {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var addr [4]byte
	if p.HostIP.IsValid() {
		addr = p.HostIP.As4()
	}
	return unix.Bind(fd, &unix.SockaddrInet4{Addr: addr, Port: int(p.HostPort)})
}

// takenError says a host port is published or in use: a search for a free
// port moves on to the next one.
type takenError string

func (e takenError) Error() string { return string(e) }

func hostPort(p store.Publication) string {
	if p.HostIP.IsValid() {
		return fmt.Sprintf("%s:%d/%s", p.HostIP, p.HostPort, p.Proto)
	}
	return fmt.Sprintf("%d/%s", p.HostPort, p.Proto)
}

// ephemeralRange is the host's local port range, where random host ports
// come from, as with Docker. It runs in the host namespace.
func ephemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		fmt.Sscan(string(data), &lo, &hi)
	}
	return lo, hi
}

// Unpublish removes a sandbox's publications that match any of filters;
// each must match at least one.
func (e *Engine) Unpublish(sandboxRef string, filters []ports.Mapping) ([]store.Publication, error) {
	for _, f := range filters {
		if err := f.CheckFilter(); err != nil {
			return nil, errdefs.Invalidf("invalid port filter %q: %w", f, err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var (
		removed []store.Publication
		unmap   []maps.Publication
		name    string
	)
	err := e.store.Update(func(tx *store.Tx) error { // names do not change
		sb, err := tx.Sandbox(sandboxRef)
		name = sb.Name
		if err != nil {
			return err
		}
		pubs, err := tx.Publications(sb.Name)
		if err != nil {
			return err
		}
		for _, f := range filters {
			before := len(pubs)
			pubs = slices.DeleteFunc(pubs, func(p store.Publication) bool {
				if matches(f, p) {
					removed = append(removed, p)
					return true
				}
				return false
			})
			if len(pubs) == before {
				return errdefs.NotFoundf("sandbox %s publishes nothing that matches %q", sb.Name, f)
			}
		}
		unmap = publicationMaps(sb, removed)
		return tx.DeletePublications(sb.Name, removed...)
	})
	if err != nil {
		return nil, err
	}
	e.forgetPorts(name, removed)
	return removed, e.maps.DeletePublications(unmap...)
}

// matches reports whether a filter (ports.Mapping) matches p.
func matches(f ports.Mapping, p store.Publication) bool {
	if f.Proto != "" && string(f.Proto) != p.Proto || f.HostIP.IsValid() && f.HostIP != p.HostIP {
		return false
	}
	if hostFirst, hostEnd := f.HostPorts(); f.HostPort != 0 && (p.HostPort < hostFirst || p.HostPort > hostEnd) {
		return false
	}
	first, end := f.Ports()
	return f.Port == 0 || p.Port >= first && p.Port <= end
}

// checkPublish checks requests to publish before anything is looked up.
func checkPublish(specs []ports.Mapping) error {
	for _, m := range specs {
		err := m.CheckPublish()
		if err == nil && m.HostIP.IsValid() && !m.HostIP.Is4() {
			err = errdefs.Invalidf("IPv6 host addresses are not supported yet")
		}
		if err != nil {
			return errdefs.Invalidf("invalid port mapping %q: %w", m, err)
		}
	}
	return nil
}
