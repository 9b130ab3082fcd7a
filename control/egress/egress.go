package egress

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// List is an egress list, its rules in canonical form (Parse).
type List []string

// Parse reads rules as flags, options and configuration keys give them:
// each item may hold several, comma-separated. The first bad rule is
// refused in one line naming it.
func Parse(items ...string) (List, error) {
	var out List
	for _, item := range items {
		for _, f := range strings.Split(item, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			r, err := parseRule(f)
			if err != nil {
				return nil, errdefs.Invalidf("egress rule %q: %v", f, err)
			}
			if !contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

func contains(l List, r string) bool {
	for _, s := range l {
		if s == r {
			return true
		}
	}
	return false
}

// parseRule gives one rule in canonical form: a masked prefix, or a name
// in lower case without its final dot.
func parseRule(s string) (string, error) {
	if strings.ContainsAny(s, ":/") || isDigits(strings.ReplaceAll(s, ".", "")) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return "", fmt.Errorf("not an address, a CIDR or a DNS name")
			}
			if a.Zone() != "" {
				return "", fmt.Errorf("has a zone")
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		switch {
		case p.Addr().Is4In6():
			return "", fmt.Errorf("v4-mapped: give it as IPv4")
		case p != p.Masked():
			return "", fmt.Errorf("has host bits set (did you mean %s?)", p.Masked())
		}
		return p.String(), nil
	}
	name := strings.ToLower(strings.TrimSuffix(s, "."))
	rest, wildcard := strings.CutPrefix(name, "*.")
	if err := checkName(rest); err != nil {
		return "", err
	}
	if wildcard && !strings.Contains(rest, ".") {
		return "", fmt.Errorf("a wildcard needs a domain of two labels or more (*.example.com)")
	}
	return name, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// checkName applies DNS's rules for host names (RFC 1123): labels of
// letters, digits, hyphens (and underscores, which service names use),
// 1 to 63 characters, 253 in all.
func checkName(name string) error {
	if name == "" || len(name) > 253 {
		return fmt.Errorf("not a DNS name")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("not a DNS name (label %q)", label)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("not a DNS name (%q in label %q)", c, label)
			}
		}
	}
	return nil
}

// CheckPrefixesOnly refuses names in a list for sandboxes whose runtime
// resolves names (who), not ebpfnet's resolver: no answer would ever let
// them through.
func (l List) CheckPrefixesOnly(who string) error {
	for _, r := range l {
		if _, err := netip.ParsePrefix(r); err != nil {
			return errdefs.Invalidf("egress rule %q: names need ebpfnet's resolver, which %s do not use: give prefixes", r, who)
		}
	}
	return nil
}

// Prefixes are the list's prefixes.
func (l List) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, r := range l {
		if p, err := netip.ParsePrefix(r); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Allows reports whether the list allows name (as a question gives it:
// any case, a final dot or not), by a rule naming it or a wildcard above
// it.
func (l List) Allows(name string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, r := range l {
		if suffix, ok := strings.CutPrefix(r, "*"); ok {
			if strings.HasSuffix(name, suffix) && len(name) > len(suffix) {
				return true
			}
		} else if r == name {
			return true
		}
	}
	return false
}

// Union is l with the rules of more it lacks.
func (l List) Union(more List) List {
	out := append(List(nil), l...)
	for _, r := range more {
		if !contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}
