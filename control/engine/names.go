package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/dns"
	"github.com/ebpfnet/ebpfnet/control/namespace"
	"github.com/ebpfnet/ebpfnet/control/store"
)

// refreshNames makes the resolver, its listeners and the sandboxes' files
// follow the store after a change. Failures are logged: the store has
// changed already, and the next change or reconcile tries again.
func (e *Engine) refreshNames() {
	nets, sbs, err := e.store.Snapshot()
	if err == nil {
		err = e.syncNames(nets, sbs)
	}
	if err != nil {
		e.log.Warn("update names and resolvers", "err", err)
	}
}

// syncNames builds the resolver's view from a snapshot of the store, runs a
// resolver in every sandbox on a user-defined network and rewrites every
// sandbox's resolv.conf and hosts.
func (e *Engine) syncNames(nets []store.Network, sbs []store.Sandbox) error {
	host, err := readResolvConf(e.cfg.ResolvConf)
	if err != nil {
		return err
	}
	askers, records, listeners := nameRecords(nets, sbs, host)
	records = append(records, e.remoteRecords(nets)...)
	e.resolver.SetView(dns.NewView(askers, records))
	errs := []error{e.dnsServers.Sync(listeners)}
	byName := map[string]store.Sandbox{}
	for _, sb := range sbs {
		byName[sb.Name] = sb
	}
	for _, sb := range sbs {
		errs = append(errs, e.writeSandboxFiles(sb, byName, askers, host))
	}
	return errors.Join(errs...)
}

// nameRecords is what the resolver knows of a snapshot of the store: who
// asks (by sandbox ID) and where they go upstream, the names on each
// user-defined network with the addresses of both families, and where a
// resolver listens (sandbox ID to namespace path).
func nameRecords(nets []store.Network, sbs []store.Sandbox, host resolvConf) (map[string]dns.Asker, []dns.Record, map[string]string) {
	byID := store.ByID(nets)
	askers := map[string]dns.Asker{}
	listeners := map[string]string{}
	var records []dns.Record
	for _, sb := range sbs {
		if sb.External() {
			continue // its runtime names it and resolves for it
		}
		var asker dns.Asker
		for _, ep := range sb.Endpoints {
			n := byID[ep.NetworkID]
			if n.Predefined { // the default network has no DNS, as with Docker
				continue
			}
			asker.Networks = append(asker.Networks, n.ID)
			asker.Forward = asker.Forward || !n.Internal
			if len(asker.Upstreams) == 0 {
				asker.Upstreams = upstreams(n.DNS)
			}
			names := append([]string{sb.Name, sb.ID[:12]}, ep.Aliases...)
			records = append(records, dns.Record{Network: n.ID, NetworkName: n.Name, Names: names, Addr: ep.Addr, Addr6: ep.Addr6})
		}
		if len(asker.Networks) == 0 {
			continue
		}
		if len(sb.DNS) > 0 {
			asker.Upstreams = upstreams(sb.DNS)
		} else if len(asker.Upstreams) == 0 {
			asker.Upstreams = upstreams(host.nameservers)
		}
		askers[sb.ID] = asker
		listeners[sb.ID] = sb.NetNS
	}
	return askers, records, listeners
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
// `ebpfnet exec` (and `ip netns exec`) show inside a sandbox. A host-mode
// sandbox uses the host's own files; a container-mode one those of the
// namespace's owner.
func (e *Engine) writeSandboxFiles(sb store.Sandbox, byName map[string]store.Sandbox, askers map[string]dns.Asker, host resolvConf) error {
	if sb.Mode == store.ModeHost || sb.External() {
		return nil
	}
	owner := sb
	if sb.Mode == store.ModeContainer {
		owner = byName[sb.Shares]
	}
	_, embedded := askers[owner.ID]
	return e.cfg.Runtime.WriteFiles(sb, hostsFile(sb, owner, byName), sandboxResolvConf(sb, owner, embedded, host))
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
