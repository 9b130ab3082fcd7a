package cluster_test

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ebpfnet/ebpfnet/control/cluster"
)

// A store restored from a backup goes back to the backup's revision. The
// watch, resumed after the revision it had seen, hears of nothing below
// it: the state it passes on must still become what a read of the store
// gives (within Config.Resync, 2 s here), not keep the records the
// restore undid (here: a network) and miss those written since at the
// revisions it had seen already.
func TestWatchAfterARestoreMatchesARead(t *testing.T) {
	s := newStore(t)
	link := &cuttable{dial: s.dial}
	a, err := cluster.Join(cluster.Config{Endpoints: s.etcd.Endpoints(), Advertise: hostAddr(1), Dial: link.Dial, Resync: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() }) // after the watch ends
	ctx := context.Background()
	watched := watchLatest(t, a)
	names := func(st cluster.State) (out []string) {
		for _, n := range st.Networks {
			out = append(out, n.Name)
		}
		return out
	}
	overlay(t, a)

	// The backup, with network ov only.
	dir := reflect.ValueOf(s.etcd).Elem().FieldByName("dir").String()
	backup := filepath.Join(t.TempDir(), "backup.db")
	snap, err := s.client(t).Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(backup)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, snap); err != nil {
		t.Fatal(err)
	}
	snap.Close()
	f.Close()

	if _, err := a.CreateNetwork(ctx, cluster.NetworkSpec{ID: "net2", Name: "later"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got := names(watched())
		if slices.Contains(got, "later") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the watch never saw network later: %v", got)
		}
	}

	// The store is restored from the backup while this host is cut off.
	link.cut()
	s.etcd.Stop(0)
	data := filepath.Join(dir, "member0")
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("etcdctl", "snapshot", "restore", backup, "--data-dir", data, "--name", "member0",
		"--initial-cluster", "member0=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster-token", filepath.Base(dir)).CombinedOutput()
	if err != nil {
		t.Fatalf("restore: %v: %s", err, out)
	}
	s.etcd.Start(0)
	s.etcd.WaitHealthy(0)
	link.uncut()
	// The cluster goes on: past the revision the watch had seen.
	for _, name := range []string{"n3", "n4", "n5"} {
		if _, err := a.CreateNetwork(ctx, cluster.NetworkSpec{ID: name, Name: name}); err != nil {
			t.Fatal(err)
		}
	}

	for deadline := time.Now().Add(8 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		read, err := a.State(ctx)
		got := watched()
		if err == nil && slices.Equal(names(got), names(read)) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("8 s after the store was restored, the watch passes on networks %v (revision %d), a read gives %v (revision %d, %v)",
				names(got), got.Revision, names(read), read.Revision, err)
		}
	}
}
