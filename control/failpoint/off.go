//go:build !failpoints

package failpoint

// Hit is a step named name; without the failpoints tag it never fails.
func Hit(name string) error { return nil }

// Fault is a fault beside the changes; without the tag it never fails.
func Fault(name string) error { return nil }
