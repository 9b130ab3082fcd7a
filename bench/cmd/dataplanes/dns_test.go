package main

import (
	"os"
	"strings"
	"testing"
)

func TestParseDNSPerf(t *testing.T) {
	for _, c := range []struct {
		name, out string
		want      dnsperfResult
	}{{
		name: "full speed",
		out: `[Status] Testing complete (time limit)

Statistics:

  Queries sent:         1000
  Queries completed:    990 (99.00%)
  Queries lost:         10 (1.00%)

  Response codes:       NOERROR 980 (98.99%), SERVFAIL 10 (1.01%)
  Run time (s):         0.500136
  Queries per second:   1979.461587
`,
		want: dnsperfResult{completed: 990, noerror: 980, lost: 10, qps: 1979.461587},
	}, {
		name: "verbose, at a fixed load",
		out: `> NOERROR a.test A 0.000094
> NOERROR b.test A 0.000200
> SERVFAIL c.test A 0.000050
Statistics:
  Queries completed:    3 (100.00%)
  Queries lost:         0 (0.00%)
  Response codes:       NOERROR 2 (66.67%), SERVFAIL 1 (33.33%)
  Queries per second:   1000.0
`,
		want: dnsperfResult{completed: 3, noerror: 2, qps: 1000, p50: 200, p99: 200}, // SERVFAIL's latency left out
	}, {
		name: "no answers",
		out: `  Queries completed:    0 (0.00%)
  Queries lost:         5 (100.00%)
  Queries per second:   0.000000
`,
		want: dnsperfResult{lost: 5},
	}} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseDNSPerf(strings.NewReader(c.out))
			if err != nil {
				t.Fatal(err)
			}
			got.p50, got.p99 = float64(int(got.p50+0.5)), float64(int(got.p99+0.5)) // µs from s: rounding
			if got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
	if _, err := parseDNSPerf(strings.NewReader("dnsperf: invalid argument\n")); err == nil {
		t.Error("no statistics parsed without an error")
	}
}

func TestCPUTime(t *testing.T) {
	if cpuTime(os.Getpid()) < 0 || cpuTime(-1) != 0 {
		t.Error("cpuTime of this process is negative, or of no process is not 0")
	}
}
