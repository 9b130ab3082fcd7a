package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/ebpfnet/ebpfnet/control/dns"
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
	byID := store.ByID(nets)
	byName := map[string]store.Sandbox{}
	for _, sb := range sbs {
		byName[sb.Name] = sb
	}
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
			records = append(records, dns.Record{Network: n.ID, NetworkName: n.Name, Names: names, Addr: ep.Addr})
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
	e.resolver.SetView(dns.NewView(askers, records))
	errs := []error{e.dnsServers.Sync(listeners)}
	for _, sb := range sbs {
		errs = append(errs, e.writeSandboxFiles(sb, byName, askers, host))
	}
	return errors.Join(errs...)
}

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
	var hosts strings.Builder
	// No ::1 line: IPv6 is off in the sandbox (disableIPv6), and a
	// localhost that resolves to an address lo lacks fails to connect.
	hosts.WriteString("127.0.0.1\tlocalhost\n")
	if len(owner.Endpoints) > 0 {
		fmt.Fprintf(&hosts, "%s\t%s\n", owner.Endpoints[0].Addr, sb.Name)
	}
	for _, l := range sb.Links {
		// A link follows its target: its address now, nothing once it is gone.
		if target, ok := byName[l.Sandbox]; ok && len(target.Endpoints) > 0 {
			fmt.Fprintf(&hosts, "%s\t%s %s\n", target.Endpoints[0].Addr, l.Alias, target.Name)
		}
	}
	var resolv strings.Builder
	switch _, embedded := askers[owner.ID]; {
	case embedded:
		resolv.WriteString("nameserver 127.0.0.11\n")
		for _, s := range host.search {
			resolv.WriteString(s + "\n")
		}
		resolv.WriteString("options ndots:0\n")
	case len(sb.DNS) > 0:
		for _, a := range sb.DNS {
			fmt.Fprintf(&resolv, "nameserver %s\n", a)
		}
		for _, s := range host.search {
			resolv.WriteString(s + "\n")
		}
	default:
		resolv.WriteString(host.filtered)
	}
	return e.cfg.Runtime.WriteFiles(sb, hosts.String(), resolv.String())
}

// resolvConf is what ebpfnet takes from the host's resolv.conf.
type resolvConf struct {
	nameservers []netip.Addr // not loopback: those would point into the sandbox itself
	search      []string     // search and domain lines
	filtered    string       // the file without loopback nameservers, for sandboxes without a resolver
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
	var out strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "nameserver" {
			a, err := netip.ParseAddr(fields[1])
			if err != nil || a.IsLoopback() {
				continue
			}
			if a.Is4() {
				rc.nameservers = append(rc.nameservers, a)
			}
		}
		if len(fields) >= 2 && (fields[0] == "search" || fields[0] == "domain") {
			rc.search = append(rc.search, line)
		}
		if line != "" {
			out.WriteString(line + "\n")
		}
	}
	rc.filtered = out.String()
	return rc, nil
}

// exchangeInHost forwards a query upstream from the dataplane's namespace.
func (e *Engine) exchangeInHost(ctx context.Context, q *mdns.Msg, server netip.AddrPort, network string) (*mdns.Msg, error) {
	var resp *mdns.Msg
	err := e.inHost(func() (err error) {
		resp, err = dns.ClientExchange(ctx, q, server, network)
		return err
	})
	return resp, err
}
