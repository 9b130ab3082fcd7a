package egress

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

func TestParse(t *testing.T) {
	got, err := Parse("10.90.0.0/28", "A.Test.,*.Example.com", "2001:db8::/64, 192.0.2.7", "a.test", "2001:db8::1")
	if err != nil {
		t.Fatal(err)
	}
	want := List{"10.90.0.0/28", "a.test", "*.example.com", "2001:db8::/64", "192.0.2.7/32", "2001:db8::1/128"}
	if !slices.Equal(got, want) {
		t.Fatalf("Parse: %q, want %q", got, want)
	}
	for _, bad := range []string{"10.90.0.1/28", "::ffff:10.0.0.1/128", "fe80::1%eth0", "*.com", "a..b", "-a.test", "a_b!.test",
		"*", "10.0.0.0/33", "300.1.1.1", strings.Repeat("a", 64) + ".test", "*.*.test"} {
		_, err := Parse(bad)
		if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), bad) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q): %v; want one line naming it, invalid", bad, err)
		}
	}
	if l, err := Parse("", " , "); err != nil || len(l) != 0 {
		t.Errorf("Parse of nothing: %q, %v", l, err)
	}
}

func TestAllows(t *testing.T) {
	l := List{"a.test", "*.example.com", "10.0.0.0/8"}
	for name, want := range map[string]bool{
		"a.test.": true, "A.TEST": true, "b.test.": false, "x.a.test.": false,
		"api.example.com.": true, "a.b.example.com.": true, "example.com.": false, "badexample.com.": false,
		"10.0.0.1": false,
	} {
		if l.Allows(name) != want {
			t.Errorf("Allows(%q) = %v, want %v", name, !want, want)
		}
	}
	if p := l.Prefixes(); len(p) != 1 || p[0].String() != "10.0.0.0/8" {
		t.Errorf("Prefixes: %v", p)
	}
	if u := l.Union(List{"a.test", "b.test"}); !slices.Equal(u, List{"a.test", "*.example.com", "10.0.0.0/8", "b.test"}) {
		t.Errorf("Union: %q", u)
	}
}
