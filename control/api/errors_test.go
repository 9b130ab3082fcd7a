package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"testing"

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
