package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// nameIndex is what the resolver, its listeners and the sandboxes' files
// were last given. A change redoes the work of the sandboxes it touched
// and of those whose files name them, never of every sandbox: rewriting
// every sandbox's files after each change made the 1,000th create cost
// 24 times the 100th (issue 24). Guarded by e.mu.
type nameIndex struct {
	ready     bool       // built from the whole store (indexNames)
	host      resolvConf // the host's file the sandboxes' files follow
	view      *dns.View  // what the resolver answers from
	sandboxes map[string]indexedSandbox
	// networks are the records of this host's sandboxes on each network,
	// by network ID and sandbox name.
	networks map[string]map[string]dns.Record
	// dependents are, by sandbox name, the sandboxes whose files name it:
	// those that link to it and those in its namespace (container mode).
	dependents map[string]map[string]bool
	// remote are the records of other hosts' endpoints the view was given
	// on each overlay network, by network ID: what a change of them takes
	// back.
	remote map[string][]dns.Record
}

// indexedSandbox is what the index holds of one sandbox, by name.
type indexedSandbox struct {
	id       string
	asker    dns.Asker
	asks     bool // it has a resolver, listening in netns
	netns    string
	networks []string // IDs of the networks it has records on
	names    []string // the sandboxes its files name
	shares   string   // the owner of its namespace, in container mode
}

func newNameIndex(host resolvConf) *nameIndex {
	return &nameIndex{host: host, view: &dns.View{}, sandboxes: map[string]indexedSandbox{},
		networks: map[string]map[string]dns.Record{}, dependents: map[string]map[string]bool{}, remote: map[string][]dns.Record{}}
}

// put indexes sb, in place of what the index had under its name, and
// returns the records it had and those it has now.
func (ix *nameIndex) put(sb store.Sandbox, network func(id string) (store.Network, bool)) (was, now []dns.Record) {
	was = ix.remove(sb.Name)
	asker, asks, records := sandboxNames(sb, network, ix.host)
	in := indexedSandbox{id: sb.ID, asker: asker, asks: asks, netns: sb.NetNS, shares: sb.Shares}
	if sb.Mode == store.ModeContainer {
		in.names = append(in.names, sb.Shares)
	}
	for _, l := range sb.Links {
		in.names = append(in.names, l.Sandbox)
	}
	for _, target := range in.names {
		if ix.dependents[target] == nil {
			ix.dependents[target] = map[string]bool{}
		}
		ix.dependents[target][sb.Name] = true
	}
	for _, r := range records {
		if ix.networks[r.Network] == nil {
			ix.networks[r.Network] = map[string]dns.Record{}
		}
		ix.networks[r.Network][sb.Name] = r
		in.networks = append(in.networks, r.Network)
	}
	ix.sandboxes[sb.Name] = in
	return was, records
}

// remove forgets sandbox name and returns the records it had.
func (ix *nameIndex) remove(name string) (was []dns.Record) {
	in, ok := ix.sandboxes[name]
	if !ok {
		return nil
	}
	for _, id := range in.networks {
		was = append(was, ix.networks[id][name])
	}
	for _, target := range in.names {
		delete(ix.dependents[target], name)
		if len(ix.dependents[target]) == 0 {
			delete(ix.dependents, target)
		}
	}
	for _, id := range in.networks {
		delete(ix.networks[id], name)
		if len(ix.networks[id]) == 0 {
			delete(ix.networks, id)
		}
	}
	delete(ix.sandboxes, name)
	return was
}

// sharers names the sandboxes in the namespace of sandbox name.
func (ix *nameIndex) sharers(name string) []string {
	var out []string
	for d := range ix.dependents[name] {
		if ix.sandboxes[d].shares == name {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}

// loadNames makes sure the index is built, from the whole store the first
// time. Callers hold e.mu.
func (e *Engine) loadNames() error {
	if e.names != nil && e.names.ready {
		return nil
	}
	nets, sbs, err := e.store.Snapshot()
	if err != nil {
		return err
	}
	return e.indexNames(nets, sbs)
}

// refreshNames makes the resolver, its listeners and the files follow a
// committed change: the sandboxes and networks ch names and the overlay
// records of other hosts' endpoints in remote, by overlay network ID (none
// for a network that has none left). Failures are logged: the store has
// changed already, and the next change or reconcile tries again.
func (e *Engine) refreshNames(ch store.Changes, remote map[string][]dns.Record) {
	if len(ch.Sandboxes) == 0 && len(ch.Networks) == 0 && len(remote) == 0 {
		return // publishing, say: its cost stays that of the maps
	}
	if err := e.followNames(ch, remote); err != nil {
		e.log.Warn("update names and resolvers", "err", err)
	}
}

// followNames is refreshNames' work. A change to the host's resolv.conf,
// which every sandbox's files follow, is the one change that rewrites
// them all.
func (e *Engine) followNames(ch store.Changes, remote map[string][]dns.Record) error {
	host, err := readResolvConf(e.cfg.ResolvConf)
	if err != nil {
		return err
	}
	if e.names != nil && e.names.ready && !reflect.DeepEqual(host, e.names.host) {
		// Every sandbox's files follow the host's: they are rewritten a
		// sandbox at a time, off this change's path.
		e.names.ready = false
		e.resyncs.Add(1)
		go func() {
			defer e.resyncs.Done()
			if err := e.resyncNames(); err != nil {
				e.log.Warn("rewrite the sandboxes' files after the host's resolv.conf changed", "err", err)
			}
		}()
	}
	if err := e.loadNames(); err != nil {
		return err
	}
	ix := e.names
	touched := map[string]bool{}
	for _, name := range ch.Sandboxes {
		touched[name] = true
	}
	for _, id := range ch.Networks { // their settings (DNS servers, internal) are their sandboxes'
		for name := range ix.networks[id] {
			touched[name] = true
		}
	}
	var (
		change    = dns.Change{Askers: map[string]dns.Asker{}}
		listeners = map[string]string{} // sandbox ID to where its resolver listens, "" for nowhere
		files     []store.Sandbox
		byName    = map[string]store.Sandbox{}
	)
	err = e.store.View(func(tx *store.Tx) error {
		nets := map[string]*store.Network{} // a network read once, with its pool
		network := func(id string) (store.Network, bool) {
			if n, ok := nets[id]; ok {
				return *n, true
			}
			n, err := tx.Network(id)
			if err != nil {
				return n, false
			}
			nets[id] = &n
			return n, true
		}
		sandbox := func(name string) (store.Sandbox, bool, error) {
			if sb, ok := byName[name]; ok {
				return sb, true, nil
			}
			sb, ok, err := tx.SandboxNamed(name)
			if ok {
				byName[name] = sb
			}
			return sb, ok, err
		}
		for name := range touched {
			old := ix.sandboxes[name]
			sb, ok, err := sandbox(name)
			if err != nil {
				return err
			}
			if old.asks && (!ok || old.id != sb.ID) {
				change.Gone = append(change.Gone, old.id)
				listeners[old.id] = ""
			}
			var was, now []dns.Record
			if ok {
				was, now = ix.put(sb, network)
				if in := ix.sandboxes[name]; in.asks {
					change.Askers[sb.ID] = in.asker
					listeners[sb.ID] = in.netns
				} else if old.asks && old.id == sb.ID {
					change.Gone = append(change.Gone, sb.ID)
					listeners[sb.ID] = ""
				}
			} else {
				was = ix.remove(name)
			}
			change.Drop, change.Put = append(change.Drop, was...), append(change.Put, now...)
		}
		// The files of the touched sandboxes and of those that name them.
		write := map[string]bool{}
		for name := range touched {
			write[name] = true
			for d := range ix.dependents[name] {
				write[d] = true
			}
		}
		for name := range write {
			sb, ok, err := sandbox(name)
			if err != nil || !ok {
				if err != nil {
					return err
				}
				continue
			}
			for _, other := range ix.sandboxes[name].names {
				if _, _, err := sandbox(other); err != nil {
					return err
				}
			}
			files = append(files, sb)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for id, records := range remote {
		drop, put := recordsChanged(ix.remote[id], records)
		change.Drop, change.Put = append(change.Drop, drop...), append(change.Put, put...)
		ix.remote[id] = records
		if len(records) == 0 {
			delete(ix.remote, id)
		}
	}
	ix.view = ix.view.Apply(change)
	e.resolver.SetView(ix.view)
	var errs []error
	for id, netns := range listeners {
		errs = append(errs, e.dnsServers.Set(id, netns))
	}
	for _, sb := range files {
		errs = append(errs, e.writeSandboxFiles(sb, byName))
	}
	return errors.Join(errs...)
}

// recordsChanged is what turns records was into now, both of one
// network: those of was that now lacks or has otherwise, to drop, and
// those of now that are new or changed, to put. A cluster event names
// every remote record of a network; the view must take in only the
// changed ones, or each event would cost the whole network.
func recordsChanged(was, now []dns.Record) (drop, put []dns.Record) {
	key := func(r dns.Record) string { return r.Owner + "\x00" + strings.Join(r.Names, "\x00") }
	same := func(a, b dns.Record) bool { // of one key: the same names
		return a.NetworkName == b.NetworkName && a.Addr == b.Addr && a.Addr6 == b.Addr6
	}
	old := make(map[string]dns.Record, len(was))
	for _, r := range was {
		old[key(r)] = r
	}
	kept := make(map[string]bool, len(now))
	for _, r := range now {
		k := key(r)
		if o, ok := old[k]; ok && same(o, r) {
			kept[k] = true
			continue
		}
		put = append(put, r)
	}
	for _, r := range was {
		if !kept[key(r)] {
			drop = append(drop, r)
		}
	}
	return drop, put
}

// indexNames builds the index and the resolver's view from the whole
// store, and stops the resolvers of sandboxes that no longer ask; it
// writes no file and enters no namespace (resyncNames does, a sandbox at
// a time). Callers hold e.mu.
func (e *Engine) indexNames(nets []store.Network, sbs []store.Sandbox) error {
	host, err := readResolvConf(e.cfg.ResolvConf)
	if err != nil {
		return err
	}
	ix := buildNameIndex(nets, sbs, host)
	all := ix.allRecords()
	for _, n := range nets {
		if records := e.remoteRecords(n); len(records) > 0 {
			ix.remote[n.ID] = records
			all = append(all, records...)
		}
	}
	ix.view = dns.NewView(ix.askers(), all)
	ix.ready = true
	e.names = ix
	e.resolver.SetView(ix.view)
	return e.stopStrayResolvers()
}

// stopStrayResolvers stops the resolvers of sandboxes that no longer ask
// the embedded DNS. Callers hold e.mu.
func (e *Engine) stopStrayResolvers() error {
	asks := e.names.listeners()
	var errs []error
	for _, id := range e.dnsServers.Running() {
		if _, ok := asks[id]; !ok {
			errs = append(errs, e.dnsServers.Set(id, ""))
		}
	}
	return errors.Join(errs...)
}

// resyncNames rewrites every sandbox's files and starts every missing
// resolver, a sandbox at a time under the engine's lock, so that changes
// go on between them, then stops the resolvers no sandbox asks: on
// reconcile and after the host's resolv.conf changed.
func (e *Engine) resyncNames() error {
	_, sbs, err := e.store.Snapshot()
	if err != nil {
		return err
	}
	var errs []error
	for _, sb := range sbs {
		if e.closing.Load() {
			break
		}
		e.locked(func() {
			if err := e.followNames(store.Changes{Sandboxes: []string{sb.Name}}, nil); err != nil {
				errs = append(errs, fmt.Errorf("sandbox %s: %w", sb.Name, err))
			}
		})
	}
	e.locked(func() {
		err := e.loadNames()
		if err == nil {
			err = e.stopStrayResolvers()
		}
		errs = append(errs, err)
	})
	return errors.Join(errs...)
}

// buildNameIndex indexes a snapshot of the store.
func buildNameIndex(nets []store.Network, sbs []store.Sandbox, host resolvConf) *nameIndex {
	byID := store.ByID(nets)
	network := func(id string) (store.Network, bool) { n, ok := byID[id]; return n, ok }
	ix := newNameIndex(host)
	for _, sb := range sbs {
		ix.put(sb, network)
	}
	return ix
}

// askers are the sandboxes that ask the resolver, by ID.
func (ix *nameIndex) askers() map[string]dns.Asker {
	out := map[string]dns.Asker{}
	for _, in := range ix.sandboxes {
		if in.asks {
			out[in.id] = in.asker
		}
	}
	return out
}

// listeners are where resolvers listen: sandbox ID to namespace path.
func (ix *nameIndex) listeners() map[string]string {
	out := map[string]string{}
	for _, in := range ix.sandboxes {
		if in.asks {
			out[in.id] = in.netns
		}
	}
	return out
}

// allRecords are the records of every network.
func (ix *nameIndex) allRecords() []dns.Record {
	var out []dns.Record
	for _, records := range ix.networks {
		for _, r := range records {
			out = append(out, r)
		}
	}
	return out
}

// nameRecords is what the resolver knows of a snapshot of the store: who
// asks (by sandbox ID) and where they go upstream, the names on each
// user-defined network with the addresses of both families, and where a
// resolver listens (sandbox ID to namespace path).
func nameRecords(nets []store.Network, sbs []store.Sandbox, host resolvConf) (map[string]dns.Asker, []dns.Record, map[string]string) {
	ix := buildNameIndex(nets, sbs, host)
	return ix.askers(), ix.allRecords(), ix.listeners()
}

// sandboxNames is what the resolver knows of one sandbox: whether it asks
// and how, and its records on user-defined networks.
func sandboxNames(sb store.Sandbox, network func(id string) (store.Network, bool), host resolvConf) (asker dns.Asker, asks bool, records []dns.Record) {
	if sb.External() {
		return asker, false, nil // its runtime names it and resolves for it
	}
	for _, ep := range sb.Endpoints {
		n, _ := network(ep.NetworkID)
		if n.Predefined { // the default network has no DNS, as with Docker
			continue
		}
		asker.Networks = append(asker.Networks, n.ID)
		asker.Forward = asker.Forward || !n.Internal
		if len(asker.Upstreams) == 0 {
			asker.Upstreams = upstreams(n.DNS)
		}
		names := append([]string{sb.Name, sb.ID[:12]}, ep.Aliases...)
		records = append(records, dns.Record{Network: n.ID, NetworkName: n.Name, Owner: sb.Name, Names: names, Addr: ep.Addr, Addr6: ep.Addr6})
	}
	if len(asker.Networks) == 0 {
		return asker, false, records
	}
	if len(sb.DNS) > 0 {
		asker.Upstreams = upstreams(sb.DNS)
	} else if len(asker.Upstreams) == 0 {
		asker.Upstreams = upstreams(host.nameservers)
	}
	return asker, true, records
}

// upstreams are servers on port 53, of either family; a zone (fe80::1%eth0)
// stays, naming an interface of the dataplane's namespace, where queries
// are forwarded from.
func upstreams(addrs []netip.Addr) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range addrs {
		out = append(out, netip.AddrPortFrom(a, 53))
	}
	return out
}

// writeSandboxFiles has the runtime write the hosts and resolv.conf that
// `ebpfnet exec` (and `ip netns exec`) show inside a sandbox; byName holds
// the sandboxes its files name. A host-mode sandbox uses the host's own
// files; a container-mode one those of the namespace's owner.
func (e *Engine) writeSandboxFiles(sb store.Sandbox, byName map[string]store.Sandbox) error {
	if sb.Mode == store.ModeHost || sb.External() {
		return nil
	}
	owner := sb
	if sb.Mode == store.ModeContainer {
		owner = byName[sb.Shares]
	}
	embedded := e.names.sandboxes[owner.Name].asks && e.names.sandboxes[owner.Name].id == owner.ID
	e.filesWritten.Add(1)
	return e.cfg.Runtime.WriteFiles(sb, hostsFile(sb, owner, byName), sandboxResolvConf(sb, owner, embedded, e.names.host))
}

// ipv6Hosts are the IPv6 lines Docker's hosts files begin with
// (libnetwork/etchosts).
const ipv6Hosts = "::1\tlocalhost ip6-localhost ip6-loopback\n" +
	"fe00::\tip6-localnet\n" +
	"ff00::\tip6-mcastprefix\n" +
	"ff02::1\tip6-allnodes\n" +
	"ff02::2\tip6-allrouters\n"

// hostsFile is sb's hosts file: localhost, its own name on the addresses of
// the namespace's owner, and its links. IPv6 lines are there only when the
// owner has an IPv6 address, as Docker writes them only where IPv6 is on:
// everywhere else IPv6 is off in the sandbox (namespace.DisableIPv6), and a
// name that resolves to an address no interface has fails to connect
// (localhost on ::1 first, as Node.js does).
func hostsFile(sb, owner store.Sandbox, byName map[string]store.Sandbox) string {
	var hosts strings.Builder
	ipv6 := addr6(owner).IsValid()
	hosts.WriteString("127.0.0.1\tlocalhost\n")
	if ipv6 {
		hosts.WriteString(ipv6Hosts)
	}
	entry := func(target store.Sandbox, names string) {
		if len(target.Endpoints) > 0 && target.Endpoints[0].Addr.IsValid() {
			fmt.Fprintf(&hosts, "%s\t%s\n", target.Endpoints[0].Addr, names)
		}
		if a := addr6(target); ipv6 && a.IsValid() {
			fmt.Fprintf(&hosts, "%s\t%s\n", a, names)
		}
	}
	entry(owner, sb.Name)
	for _, l := range sb.Links {
		// A link follows its target: its addresses now, nothing once it is gone.
		if target, ok := byName[l.Sandbox]; ok {
			entry(target, l.Alias+" "+target.Name)
		}
	}
	return hosts.String()
}

// addr6 is a sandbox's IPv6 address: that of its first endpoint on a
// network with IPv6, the zero Addr when it has none.
func addr6(sb store.Sandbox) netip.Addr {
	for _, ep := range sb.Endpoints {
		if ep.Addr6.IsValid() {
			return ep.Addr6
		}
	}
	return netip.Addr{}
}

// sandboxResolvConf is sb's resolv.conf: the embedded resolver when its
// namespace's owner has one, else its own servers, else the host's.
func sandboxResolvConf(sb, owner store.Sandbox, embedded bool, host resolvConf) string {
	var resolv strings.Builder
	switch {
	case embedded:
		resolv.WriteString("nameserver 127.0.0.11\n")
		for _, s := range host.search {
			resolv.WriteString(s + "\n")
		}
		resolv.WriteString("options ndots:0\n")
	case len(sb.DNS) > 0:
		// The user's choice, kept as given, as Docker keeps --dns.
		for _, a := range sb.DNS {
			fmt.Fprintf(&resolv, "nameserver %s\n", a)
		}
		for _, s := range host.search {
			resolv.WriteString(s + "\n")
		}
	default:
		resolv.WriteString(host.forSandbox(addr6(owner).IsValid()))
	}
	return resolv.String()
}

// resolvConf is what ebpfnet takes from the host's resolv.conf.
type resolvConf struct {
	nameservers []netip.Addr // both families, not loopback: those would point into the sandbox itself
	search      []string     // search and domain lines
	lines       []string     // the file's lines but loopback nameservers and empty lines
}

// forSandbox is the host's file for a sandbox without a resolver. Its IPv6
// servers stay only when the sandbox has IPv6 (as Docker's
// TransformForLegacyNw), and never with a zone: that names an interface of
// the host, not of the sandbox.
func (rc resolvConf) forSandbox(ipv6 bool) string {
	var out strings.Builder
	for _, line := range rc.lines {
		if a, ok := nameserver(line); ok && a.Is6() && (!ipv6 || a.Zone() != "") {
			continue
		}
		out.WriteString(line + "\n")
	}
	return out.String()
}

// nameserver parses a nameserver line.
func nameserver(line string) (netip.Addr, bool) {
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "nameserver" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(fields[1])
	return a, err == nil
}

func readResolvConf(path string) (resolvConf, error) {
	var rc resolvConf
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return rc, nil
	}
	if err != nil {
		return rc, fmt.Errorf("read %s: %w", path, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "nameserver" {
			a, ok := nameserver(line)
			if !ok || a.IsLoopback() {
				continue
			}
			rc.nameservers = append(rc.nameservers, a)
		}
		if len(fields) >= 2 && (fields[0] == "search" || fields[0] == "domain") {
			rc.search = append(rc.search, line)
		}
		if line != "" {
			rc.lines = append(rc.lines, line)
		}
	}
	return rc, nil
}

// dialUpstream is how forwarded queries reach upstream from the
// dataplane's namespace: it opens the sockets the resolver exchanges them
// over in that namespace, where they stay whichever goroutine uses them, so
// the resolver enters the namespace only to open a socket, not per query.
func (e *Engine) dialUpstream(ctx context.Context, network string, server netip.AddrPort) (net.Conn, error) {
	return e.dialInHost(ctx, network, server.String())
}

// dialInHost connects from the dataplane's namespace, as the host's own
// traffic leaves: to DNS servers upstream, to the cluster store.
func (e *Engine) dialInHost(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	// On a thread of its own, not the engine's (inHost): a TCP connect to
	// a dead server waits out ctx, and publishing would wait behind it.
	err := namespace.Do(e.cfg.NetNS, func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}
