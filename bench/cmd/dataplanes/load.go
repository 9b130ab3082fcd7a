package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Load is what one load run measured.
type Load struct {
	Rate   float64 `json:"rate"`   // operations per second
	P50    float64 `json:"p50us"`  // latency percentiles of one operation, µs
	P99    float64 `json:"p99us"`  //
	Errors int     `json:"errors"` // operations that failed
}

// serve runs a TCP and a UDP echo server on port, both families, until
// killed.
func serve(port int) error {
	tl, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	ul, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := ul.ReadFrom(buf)
			if err != nil {
				return
			}
			ul.WriteTo(buf[:n], from)
		}
	}()
	for {
		c, err := tl.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// load runs one workload against addr for d and prints a Load as JSON:
// "conn" opens, exchanges one byte and closes connections from workers
// goroutines; "rr" exchanges one byte at a time over one connection; "udp"
// one datagram at a time over one socket; "pps" 64-byte datagrams as fast
// as it can, counting the echoes. local, when set, is the source
// address.
func load(mode, addr, local string, d time.Duration, workers int) error {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      int
		wg        sync.WaitGroup
	)
	deadline := time.Now().Add(d)
	dialer := net.Dialer{Timeout: 2 * time.Second}
	// A client bound to a source address would take its port at bind(),
	// where TIME_WAIT ports cannot be reused; let connect() choose it.
	dialer.Control = func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		})
		return err
	}
	if local != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		if mode == "udp" || mode == "pps" {
			dialer.LocalAddr = &net.UDPAddr{IP: net.ParseIP(local)}
		}
	}
	record := func(mine []time.Duration, failed int) {
		mu.Lock()
		latencies = append(latencies, mine...)
		errs += failed
		mu.Unlock()
	}
	start := time.Now()
	switch mode {
	case "conn":
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				failed := 0
				buf := make([]byte, 1)
				for time.Now().Before(deadline) {
					t0 := time.Now()
					c, err := dialer.Dial("tcp", addr)
					if err == nil {
						c.SetDeadline(t0.Add(2 * time.Second))
						_, err = c.Write(buf)
						if err == nil {
							_, err = io.ReadFull(c, buf)
						}
						c.Close()
					}
					if err != nil {
						failed++
						continue
					}
					mine = append(mine, time.Since(t0))
				}
				record(mine, failed)
			}()
		}
		wg.Wait()
	case "pps":
		// A sender flat out and a reader counting echoes: small UDP
		// packets delivered per second, both ways, under overload.
		c, err := dialer.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		go func() {
			buf := make([]byte, 64)
			for time.Now().Before(deadline) {
				c.Write(buf)
			}
		}()
		buf := make([]byte, 2048)
		c.SetReadDeadline(deadline)
		echoed := 0
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
			echoed++
		}
		elapsed := time.Since(start)
		return json.NewEncoder(os.Stdout).Encode(Load{Rate: float64(echoed) / elapsed.Seconds()})
	case "rr", "udp":
		network := "tcp"
		if mode == "udp" {
			network = "udp"
		}
		c, err := dialer.Dial(network, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		var mine []time.Duration
		failed := 0
		buf := make([]byte, 1)
		for time.Now().Before(deadline) {
			t0 := time.Now()
			c.SetDeadline(t0.Add(time.Second))
			_, err := c.Write(buf)
			if err == nil {
				_, err = io.ReadFull(c, buf)
			}
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() && mode == "udp" {
					failed++ // a lost datagram
					continue
				}
				return err
			}
			mine = append(mine, time.Since(t0))
		}
		record(mine, failed)
	default:
		return fmt.Errorf("unknown load mode %q", mode)
	}
	elapsed := time.Since(start)
	slices.Sort(latencies)
	out := Load{Rate: float64(len(latencies)) / elapsed.Seconds(), Errors: errs}
	if n := len(latencies); n > 0 {
		out.P50 = float64(latencies[n/2].Nanoseconds()) / 1e3
		out.P99 = float64(latencies[n*99/100].Nanoseconds()) / 1e3
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
