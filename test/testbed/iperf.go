package testbed

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// IperfServer runs an iperf3 server on port in the namespace at nsPath
// until the test ends, and waits until it listens.
func IperfServer(tb TB, nsPath string, port int) {
	tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(nsPath), "iperf3", "-s", "-p", strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start iperf3 in %s: %v", nsPath, err)
	}
	tb.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	for range 100 {
		if out, _ := exec.Command("ip", "netns", "exec", filepath.Base(nsPath), "ss", "-Hltn", fmt.Sprintf("sport = :%d", port)).Output(); len(out) > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("iperf3 does not listen on %d in %s", port, nsPath)
}

// Iperf runs one TCP stream of iperf3 from the namespace at nsPath to the
// server at addr:port for d, the first second left out (slow start), the
// server sending when reverse; it returns the bits per second received.
func Iperf(ctx context.Context, nsPath, addr string, port int, d time.Duration, reverse bool) (float64, error) {
	args := []string{"netns", "exec", filepath.Base(nsPath), "iperf3", "-c", addr, "-p", strconv.Itoa(port), "-J",
		"-t", strconv.Itoa(int(d / time.Second)), "-O", "1"}
	if reverse {
		args = append(args, "-R")
	}
	out, err := exec.CommandContext(ctx, "ip", args...).Output()
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &res); jerr != nil || res.Error != "" {
		return 0, fmt.Errorf("iperf3 from %s to %s:%d: %v %s %s", nsPath, addr, port, err, res.Error, out)
	}
	return res.End.SumReceived.BitsPerSecond, nil
}

// EchoRTTs sends n datagrams, one every interval, from the namespace at
// nsPath to the echo server at addr (Serve) and returns the round trips
// of those answered within a second, sorted, and how many were not.
func EchoRTTs(nsPath, addr string, n int, interval time.Duration) (rtts []time.Duration, lost int, err error) {
	c, err := Dial(nsPath, "udp", addr, "")
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for i := range n {
		msg := []byte(fmt.Sprintf("rtt %d", i))
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, 0, err
		}
		c.SetReadDeadline(start.Add(time.Second))
		for {
			m, err := c.Read(buf)
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				lost++
				break
			}
			if err != nil {
				return nil, 0, err
			}
			if string(buf[:m]) == string(msg) { // not a late answer to an earlier one
				rtts = append(rtts, time.Since(start))
				break
			}
		}
		time.Sleep(time.Until(start.Add(interval)))
	}
	slices.Sort(rtts)
	return rtts, lost, nil
}

// Percentile is the p-th percentile (0-100) of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p/100))]
}
