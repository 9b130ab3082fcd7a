package dns

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

// A change puts and drops records one by one: a name two records give
// keeps the other's address when one goes, a dropped address loses its
// reverse name, and the view a query holds never changes under it.
func TestViewApplyPutsAndDropsRecords(t *testing.T) {
	c1 := Record{Network: "app", NetworkName: "appnet", Owner: "c1", Names: []string{"c1", "cache"}, Addr: ip("172.19.0.5")}
	c2 := Record{Network: "app", NetworkName: "appnet", Owner: "c2", Names: []string{"c2", "cache"}, Addr: ip("172.19.0.6")}
	asker := Asker{Networks: []string{"app"}}
	before := NewView(nil, []Record{c1, c2})
	after := before.Apply(Change{Drop: []Record{c1}})

	addrs := func(v *View, name string) []string {
		a, _ := v.lookup(asker, name)
		var out []string
		for _, x := range a {
			out = append(out, x.String())
		}
		slices.Sort(out)
		return out
	}
	if got := addrs(before, "cache."); !slices.Equal(got, []string{"172.19.0.5", "172.19.0.6"}) {
		t.Errorf("cache before: %v", got)
	}
	if got := addrs(after, "cache."); !slices.Equal(got, []string{"172.19.0.6"}) {
		t.Errorf("cache after c1 went: %v, want c2's alone", got)
	}
	if _, ok := after.lookup(asker, "c1.appnet."); ok {
		t.Error("c1 still known after it went")
	}
	if _, ok := after.reverse(asker, ip("172.19.0.5")); ok {
		t.Error("c1's address still has a reverse name")
	}
	if target, _ := after.reverse(asker, ip("172.19.0.6")); target != "c2.appnet." {
		t.Errorf("c2's reverse name: %q", target)
	}
	if got := addrs(before, "c1."); !slices.Equal(got, []string{"172.19.0.5"}) {
		t.Errorf("the earlier view changed: c1 = %v", got)
	}
	if empty := after.Apply(Change{Drop: []Record{c2}}); empty.networks["app"] != nil {
		t.Error("a network with no records left keeps its names")
	}
}

// A change copies the shards its records touch and shares the others with
// the view before it: on a network of thousands of sandboxes, one more
// costs what one does.
func TestViewApplyCopiesOnlyWhatItTouches(t *testing.T) {
	var records []Record
	for i := range 2000 {
		records = append(records, Record{Network: "big", NetworkName: "bignet", Owner: fmt.Sprint(i),
			Names: []string{fmt.Sprintf("s%d", i)}, Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})})
	}
	before := NewView(nil, records)
	one := Record{Network: "big", NetworkName: "bignet", Owner: "new", Names: []string{"new"}, Addr: ip("10.1.0.1")}
	after := before.Apply(Change{Put: []Record{one}})
	shared := 0
	for i := range nameShards {
		if sameMap(after.networks["big"].names[i], before.networks["big"].names[i]) {
			shared++
		}
	}
	// "new" and "new.bignet" fall in one or two shards.
	if shared < nameShards-2 {
		t.Errorf("one record copied %d of %d name shards", nameShards-shared, nameShards)
	}
	if _, ok := after.lookup(Asker{Networks: []string{"big"}}, "new.bignet."); !ok {
		t.Error("the new record is not there")
	}
	if _, ok := before.lookup(Asker{Networks: []string{"big"}}, "new."); ok {
		t.Error("the view before the change has the new record")
	}
}

// sameMap reports whether a and b are the same map, not a copy.
func sameMap[K comparable, V any](a, b map[K]V) bool {
	return b != nil && reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}
