package test

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/test/testbed"
)

// A client that keeps its connection to the API socket open after its
// answer, and never sends another request, must not hold a goroutine and
// a file of the daemon for ever: TestSoak found the daemon's goroutines
// and open files growing by one for each such connection.
func TestAPIClosesIdleConnections(t *testing.T) {
	t.Parallel()
	h := testbed.NewHost(t)
	c, err := net.Dial("unix", h.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET /v1/networks HTTP/1.1\r\nHost: ebpfnet\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("answer %d, close %t: want 200 on a connection kept open", resp.StatusCode, resp.Close)
	}
	// Idle from now: the daemon closes it within its idle timeout.
	c.SetReadDeadline(time.Now().Add(apiIdleWithin))
	start := time.Now()
	if _, err := r.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("the daemon kept an idle connection open for %s: %v", time.Since(start).Round(time.Second), err)
	}
	t.Logf("the daemon closed an idle connection after %s", time.Since(start).Round(time.Second))
}

// apiIdleWithin is how long an idle API connection may stay open: the
// daemon's idle timeout and some slack.
const apiIdleWithin = 40 * time.Second

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
