package cluster

import "testing"

// The lowest free VNI is taken; none left is said, never VNI 0.
func TestFreeVNI(t *testing.T) {
	used := map[uint32]bool{10: true, 11: true, 13: true}
	if v, ok := freeVNI(used, 10, 13); !ok || v != 12 {
		t.Errorf("freeVNI: %d, %v; want 12", v, ok)
	}
	used[12] = true
	if v, ok := freeVNI(used, 10, 13); ok {
		t.Errorf("every VNI used: got %d", v)
	}
}
