package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// What etcd's client returns while the store cannot answer for now (no
// member reachable, or an election under way) is made again; what it
// returns about the request is not.
func TestUnavailable(t *testing.T) {
	for _, err := range []error{
		status.Error(codes.Unavailable, "connection refused"),
		rpctypes.ErrLeaderChanged,
		rpctypes.ErrNoLeader,
		rpctypes.ErrTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail,
		fmt.Errorf("wrapped: %w", rpctypes.ErrLeaderChanged),
	} {
		if !unavailable(err) {
			t.Errorf("%v: not taken as unavailable", err)
		}
		if !isUnreachable(err) {
			t.Errorf("%v: not taken as unreachable", err)
		}
		c := &Cluster{cfg: Config{Endpoints: []string{"192.0.2.1:2379"}}}
		if said := c.unreachable("read", err); !errors.Is(said, ErrUnreachable) || !strings.Contains(said.Error(), "192.0.2.1:2379 unreachable") {
			t.Errorf("%v: said as %q, not as ErrUnreachable naming the store", err, said)
		}
	}
	for _, err := range []error{nil, rpctypes.ErrLeaseNotFound, rpctypes.ErrKeyNotFound, context.Canceled} {
		if unavailable(err) {
			t.Errorf("%v: taken as unavailable", err)
		}
	}
}
