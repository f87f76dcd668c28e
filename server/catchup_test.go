package server

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/vfs"
)

// counter sums a counter of reg named name over the series whose one
// label has value (any, if value is empty).
func counter(t *testing.T, reg *prometheus.Registry, name, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			if value == "" || len(m.Label) == 1 && m.Label[0].GetValue() == value {
				sum += m.Counter.GetValue()
			}
		}
	}
	return sum
}

// sent sums counter name (etcd_network_snapshot_send_*) for snapshots
// to member i over every member.
func (c *testCluster) sent(i int, name string) float64 {
	to := fmt.Sprintf("%x", c.servers[i].m.ID())
	sum := 0.0
	for j, s := range c.servers {
		if j != i && !c.down[j] {
			sum += counter(c.t, s.m.Registry(), name, to)
		}
	}
	return sum
}

// snapshotEvery makes members snapshot every 100 entries and keep 10
// before each for slow followers, so a follower falls off the log soon.
func snapshotEvery(cfg *Config) {
	cfg.SnapshotCount, cfg.SnapshotCatchUpEntries = 100, 10
}

// writeMany puts n keys (a tenth of them with a lease, every seventh
// deleting one) through client cl, and returns the lease.
func writeMany(t *testing.T, cl *clientv3.Client, n int) clientv3.LeaseID {
	t.Helper()
	ctx := ctxT(t)
	lease, err := cl.Grant(ctx, 600)
	require.NoError(t, err)
	for i := range n {
		var err error
		switch {
		case i%7 == 6:
			_, err = cl.Delete(ctx, fmt.Sprintf("k%03d", i-1))
		case i%10 == 0:
			_, err = cl.Put(ctx, fmt.Sprintf("k%03d", i), fmt.Sprint(i), clientv3.WithLease(lease.ID))
		default:
			_, err = cl.Put(ctx, fmt.Sprintf("k%03d", i), fmt.Sprint(i))
		}
		require.NoError(t, err)
	}
	return lease.ID
}

// requireCaughtUp waits until member i has applied what the leader
// committed, then checks it serves the same data and lease locally.
func requireCaughtUp(t *testing.T, c *testCluster, i, lead int, lease clientv3.LeaseID) {
	t.Helper()
	require.True(t, eventually(func() bool {
		return c.servers[i].m.AppliedIndex() >= c.servers[lead].m.Committed()
	}), "member %d did not catch up", i+1)
	ctx := ctxT(t)
	want, err := c.clients[lead].Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable())
	require.NoError(t, err)
	got, err := c.clients[i].Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(want.Header.Revision))
	require.NoError(t, err)
	require.Equal(t, want.Kvs, got.Kvs)
	ttl, err := c.clients[i].TimeToLive(ctx, lease, clientv3.WithAttachedKeys())
	require.NoError(t, err)
	require.NotEmpty(t, ttl.Keys)
}

// TestClusterFollowerCatchesUpBySnapshot: with three and five members, a
// follower stopped while the leader compacts its log past it is sent the
// leader's page file when it restarts, installs it, and goes on from the
// log: it serves the same data and leases, takes writes, and HashKV agrees.
func TestClusterFollowerCatchesUpBySnapshot(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := startClusterWith(t, n, "http", snapshotEvery)
			lead := c.leader()
			f := (lead + 1) % n
			c.stop(f)
			lease := writeMany(t, c.clients[lead], 400)
			c.restart(f)
			requireCaughtUp(t, c, f, lead, lease)
			// The leader (whichever it was by then) counts the send once
			// the follower's answer is back, which may be after the
			// follower caught up.
			require.True(t, eventually(func() bool { return c.sent(f, "etcd_network_snapshot_send_success") >= 1 }))
			require.GreaterOrEqual(t, counter(t, c.servers[f].m.Registry(), "etcd_network_snapshot_receive_success", ""), 1.0)
			// It goes on from the log.
			_, err := c.clients[f].Put(ctxT(t), "after", "x")
			require.NoError(t, err)
			requireCaughtUp(t, c, f, lead, lease)
		})
	}
}

// TestClusterSnapshotSendRetried: a follower that refuses the first
// snapshot (its data could not be written) is sent it again, and catches
// up; the leader counts the failure.
func TestClusterSnapshotSendRetried(t *testing.T) {
	c := startClusterWith(t, 3, "http", snapshotEvery)
	lead := c.leader()
	f := (lead + 1) % 3
	c.stop(f)
	lease := writeMany(t, c.clients[lead], 300)
	refused := 0
	failpoint.Enable("member/receiveSnapshot", func() error {
		if refused == 0 {
			refused++
			return vfs.ErrInjected
		}
		return nil
	})
	defer failpoint.Disable("member/receiveSnapshot")
	c.restart(f)
	requireCaughtUp(t, c, f, lead, lease)
	require.Equal(t, 1.0, c.sent(f, "etcd_network_snapshot_send_failures"))
	require.True(t, eventually(func() bool { return c.sent(f, "etcd_network_snapshot_send_success") >= 1 }))
}

// TestClusterPartitionedFollowerWatchesAcrossSnapshot: a follower cut off
// while the leader compacts its log gets the snapshot once healed; a watch
// opened on it before the partition sees every revision after, in order,
// once (caught up from the installed state's history).
func TestClusterPartitionedFollowerWatchesAcrossSnapshot(t *testing.T) {
	c := startClusterWith(t, 3, "http", snapshotEvery)
	lead := c.leader()
	f := (lead + 1) % 3
	ctx := ctxT(t)
	start, err := c.clients[lead].Put(ctx, "k-start", "s")
	require.NoError(t, err)
	require.True(t, eventually(func() bool { return c.servers[f].m.AppliedIndex() >= c.servers[lead].m.Committed() }))
	wch := c.clients[f].Watch(clientv3.WithRequireLeader(ctx), "k", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))
	c.isolate(f)
	lease := writeMany(t, c.clients[lead], 300)
	last, err := c.clients[lead].Put(ctx, "k-last", "l")
	require.NoError(t, err)
	c.faults.Heal()
	requireCaughtUp(t, c, f, lead, lease)
	// The watch may end with "no leader" while cut off (it asked for a
	// leader); one opened again from where it stopped must then go on.
	next := start.Header.Revision + 1
	for next <= last.Header.Revision {
		resp, ok := <-wch
		if !ok || resp.Canceled || resp.Err() != nil {
			wch = c.clients[f].Watch(ctx, "k", clientv3.WithPrefix(), clientv3.WithRev(next))
			continue
		}
		for _, ev := range resp.Events {
			require.GreaterOrEqual(t, ev.Kv.ModRevision, next, "revision %d twice or out of order", ev.Kv.ModRevision)
			next = ev.Kv.ModRevision + 1
		}
	}
	require.Equal(t, last.Header.Revision+1, next)
}

// newestSnap is the index of the newest .snap file in member i's data
// directory (0: none).
func (c *testCluster) newestSnap(i int) uint64 {
	names, _ := filepath.Glob(filepath.Join(c.dirs[i], "member", "snap", "*.snap"))
	var newest uint64
	for _, n := range names {
		var term, index uint64
		if _, err := fmt.Sscanf(filepath.Base(n), "%016x-%016x.snap", &term, &index); err == nil {
			newest = max(newest, index)
		}
	}
	return newest
}

// TestClusterLeaderCompactsDuringSnapshotSend: while a follower takes its
// time receiving a snapshot, the leader goes on writing, snapshotting and
// compacting its log past the snapshot being sent; the follower installs
// it, finds the log moved on, gets a newer snapshot, and catches up.
func TestClusterLeaderCompactsDuringSnapshotSend(t *testing.T) {
	c := startClusterWith(t, 3, "http", snapshotEvery)
	lead := c.leader()
	f := (lead + 1) % 3
	c.stop(f)
	lease := writeMany(t, c.clients[lead], 300)
	release := make(chan struct{})
	var once sync.Once
	held := make(chan uint64, 1)
	failpoint.Enable("member/receiveSnapshot", func() error {
		once.Do(func() {
			held <- c.newestSnap(lead)
			<-release
		})
		return nil
	})
	defer failpoint.Disable("member/receiveSnapshot")
	c.restart(f)
	var from uint64
	select {
	case from = <-held:
	case <-time.After(time.Minute):
		t.Fatal("no snapshot was sent within a minute")
	}
	// Two more raft snapshots on the leader while the first send waits:
	// its log no longer holds what follows the snapshot in flight.
	for i := 0; c.newestSnap(lead) < from+200; i++ {
		require.Less(t, i, 2000, "the leader took no new snapshot")
		_, err := c.clients[lead].Put(ctxT(t), fmt.Sprintf("during%04d", i), "v")
		require.NoError(t, err)
	}
	close(release)
	requireCaughtUp(t, c, f, lead, lease)
	require.True(t, eventually(func() bool { return c.sent(f, "etcd_network_snapshot_send_success") >= 2 }),
		"one snapshot sufficed: the leader's log was not compacted past the one in flight")
}
