package maps

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/ebpfnet/ebpfnet/bpf"
)

func backendsOf(n int) []Backend {
	out := make([]Backend, n)
	for i := range out {
		out[i] = Backend{Addr: netip.AddrFrom4([4]byte{172, 17, 0, byte(2 + i)}), Port: 80}
	}
	return out
}

// owner gives the backend of table t's slot i.
func owner(t bpf.DatapathMaglevTable, i int) bpf.DatapathPublication { return t.Backend[t.Slot[i]] }

// Every backend takes its share of the slots, within 1%, whatever the
// order the backends come in; and the same backends always make the same
// table.
func TestMaglevShares(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 40, MaxBackends} {
		bs := backendsOf(n)
		table, err := maglevTable(bs)
		if err != nil {
			t.Fatal(err)
		}
		slices.Reverse(bs)
		again, err := maglevTable(bs)
		if err != nil {
			t.Fatal(err)
		}
		if again != table {
			t.Errorf("%d backends: the table depends on their order", n)
		}
		count := map[uint8]int{}
		for _, s := range table.Slot {
			count[s]++
		}
		due := float64(len(table.Slot)) / float64(n)
		slack := max(0.01*float64(len(table.Slot)), 1)
		if n > 40 {
			slack = due / 2 // more backends than the table is sized for: coarser
		}
		for i := range n {
			if d := float64(count[uint8(i)]) - due; d > slack || d < -slack {
				t.Errorf("%d backends: backend %d has %d slots, due %.0f", n, i, count[uint8(i)], due)
			}
		}
		if len(count) != n {
			t.Errorf("%d backends: slots name %d", n, len(count))
		}
	}
}

// A backend that leaves gives its slots to the others and takes few of
// theirs; one that comes takes its share, mostly from the others'
// unchanged.
func TestMaglevChurn(t *testing.T) {
	for _, n := range []int{2, 3, 5, 10} {
		bs := backendsOf(n)
		before, _ := maglevTable(bs)
		after, _ := maglevTable(bs[:n-1])
		gone := bpf.DatapathPublication{Addr: addr16(bs[n-1].Addr), Port: be16(80)}
		moved, others := 0, 0
		for i := range before.Slot {
			if owner(before, i) == gone {
				continue
			}
			others++
			if owner(after, i) != owner(before, i) {
				moved++
			}
			if owner(after, i) == gone {
				t.Fatalf("slot %d still goes to the backend that left", i)
			}
		}
		if share := float64(moved) / float64(others); share > 0.25/float64(n) {
			t.Errorf("%d backends, one leaving: %.1f%% of the others' slots moved", n, 100*share)
		}
		t.Logf("%d backends, one leaving: %d of %d of the others' slots moved", n, moved, others)
	}
}

func TestMaglevRefusals(t *testing.T) {
	for _, c := range []struct {
		n    int
		want string
	}{{0, "no backend"}, {MaxBackends + 1, fmt.Sprint(MaxBackends + 1)}} {
		_, err := maglevTable(backendsOf(c.n))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%d backends: %v, want one line naming %q", c.n, err, c.want)
		}
	}
}

// A backend listed twice, in either of the forms of an IPv4 address
// (the datapath holds both as one), is one backend: a table with it
// twice would give it two backends' share of the slots. Any order of the
// same backends makes the same table.
func TestMaglevDuplicateBackends(t *testing.T) {
	bs := backendsOf(3)
	want, err := maglevTable(bs)
	if err != nil {
		t.Fatal(err)
	}
	mapped := Backend{Addr: netip.AddrFrom16(bs[0].Addr.As16()), Port: bs[0].Port}
	for _, dup := range [][]Backend{
		{bs[2], bs[0], bs[1], bs[0]},
		{bs[0], bs[1], bs[2], mapped},
	} {
		got, err := maglevTable(dup)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(tableEntries(&got)); n != 3 || got != want {
			t.Errorf("%v: %d backends in the table (%v), want the table of the 3", dup, n, tableBackends(&got))
		}
	}
}
