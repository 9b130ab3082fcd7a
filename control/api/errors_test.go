package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"io"
	"net/http/httptest"
	"strings"

	"github.com/ebpfnet/ebpfnet/control/errdefs"
)

// TestErrorKinds checks that each kind of failure crosses the socket: the
// server answers its status and the client marks the error again, with
// the message unchanged.
func TestErrorKinds(t *testing.T) {
	var answer error
	socket := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fail(w, answer) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	client := NewClient(socket)

	for _, c := range []struct {
		err    error
		status int
	}{
		{errdefs.Invalidf("invalid sandbox name %q", "../x"), http.StatusBadRequest},
		{fmt.Errorf("network nosuch: %w", errdefs.ErrNotFound), http.StatusNotFound},
		{fmt.Errorf("connect: %w", errdefs.Conflictf("address %s is already in use", "172.19.0.2")), http.StatusConflict},
		{errors.New("create bridge br0: operation not permitted"), http.StatusInternalServerError},
	} {
		if got := statusOf[errdefs.Kind(c.err)]; got != c.status {
			t.Errorf("%v: status %d, want %d", c.err, got, c.status)
		}
		answer = c.err
		_, err := client.Networks(context.Background())
		if err == nil || err.Error() != c.err.Error() || errdefs.Kind(err) != errdefs.Kind(c.err) {
			t.Errorf("%v: client returned %v (kind %v), want the message with kind %v", c.err, err, errdefs.Kind(err), errdefs.Kind(c.err))
		}
	}
}

// TestClientKeepsItsConnection checks that requests, answered or failed,
// share one connection, answers longer than the server buffers (chunked)
// included.
func TestClientKeepsItsConnection(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	var connections atomic.Int32
	fails := false
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if fails {
				fail(w, errdefs.NotFoundf("network %q not found", "x"))
				return
			}
			answer(w, http.StatusOK, slices.Repeat([]Network{{Name: "bridge"}}, 100), nil)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				connections.Add(1)
			}
		},
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	client := NewClient(socket)
	for i := range 6 {
		fails = i%2 == 1
		nets, err := client.Networks(context.Background())
		if fails != (err != nil) || !fails && (len(nets) != 100 || nets[99].Name != "bridge") {
			t.Fatalf("request %d: %v, %v", i, nets, err)
		}
	}
	if n := connections.Load(); n != 1 {
		t.Errorf("6 requests opened %d connections, want 1", n)
	}
}

// Addresses cross the wire as text and are decoded into netip types with
// the request: a raw client's bad one is refused with a 400 naming it,
// before the engine is asked.
func TestBadAddressesAreRefusedAtDecode(t *testing.T) {
	srv := httptest.NewServer(NewServer(nil))
	t.Cleanup(srv.Close)
	for _, c := range []struct{ path, body, bad string }{
		{"/v1/networks", `{"Name":"x","Subnets":["nonsense"]}`, "nonsense"},
		{"/v1/networks", `{"Name":"x","Gateways":["172.19.0.300"]}`, "172.19.0.300"},
		{"/v1/sandboxes", `{"Name":"x","IP":"banana"}`, "banana"},
		{"/v1/networks/x/connect", `{"Sandbox":"x","IP6":"fd00::zz"}`, "fd00::zz"},
		{"/v1/attachments", `{"Frontend":"cni","ContainerID":"c","NetNS":"/n","IP":"10.0.0.1/24"}`, "10.0.0.1/24"},
	} {
		res, err := http.Post(srv.URL+c.path, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(msg), c.bad) {
			t.Errorf("POST %s %s: %d %s, want 400 naming %q", c.path, c.body, res.StatusCode, msg, c.bad)
		}
	}
}
