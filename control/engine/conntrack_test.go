package engine

import "testing"

func TestNATPorts(t *testing.T) {
	for _, c := range []struct {
		min, max, wantMin, wantMax uint16
		lo, hi                     int
		err                        bool
	}{
		{0, 0, 61000, 65535, 32768, 60999, false}, // Linux's default ephemeral range
		{0, 0, 27696, 32231, 32232, 65535, false}, // the default moves below the ephemeral range
		{40000, 41000, 0, 0, 32768, 60999, true},  // overlaps
		{20000, 20100, 20000, 20100, 32768, 60999, false},
		{0, 0, 0, 0, 2000, 65535, true}, // no room
	} {
		min, max, err := natPorts(c.min, c.max, c.lo, c.hi)
		if (err != nil) != c.err || min != c.wantMin || max != c.wantMax {
			t.Errorf("natPorts(%d, %d) with ephemeral %d-%d = %d-%d, %v", c.min, c.max, c.lo, c.hi, min, max, err)
		}
	}
}
