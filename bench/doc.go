// Package bench compares dataplanes side by side on the testbed of
// package testbed. Benchmarks print figures; nothing here asserts timing.
package bench
