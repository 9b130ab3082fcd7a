package names

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/store"
)

// writeFiles has the runtime write the hosts and resolv.conf that
// `ebpfnet exec` (and `ip netns exec`) show inside a sandbox; byName holds
// the sandboxes its files name. A host-mode sandbox uses the host's own
// files; a container-mode one those of the namespace's owner.
func (nm *Names) writeFiles(sb store.Sandbox, byName map[string]store.Sandbox) error {
	if sb.Mode == store.ModeHost || sb.External() {
		return nil
	}
	owner := sb
	if sb.Mode == store.ModeContainer {
		owner = byName[sb.Shares]
	}
	embedded := nm.ix.sandboxes[owner.Name].asks && nm.ix.sandboxes[owner.Name].id == owner.ID
	nm.filesWritten.Add(1)
	return nm.cfg.WriteFiles(sb, hostsFile(sb, owner, byName), sandboxResolvConf(sb, owner, embedded, nm.ix.host))
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
