package server

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/testlog"
)

// onApplier reads f's answer on the member's apply goroutine.
func onApplier[T any](t *testing.T, s *Server, f func() T) T {
	t.Helper()
	var v T
	require.NoError(t, s.m.OnApplier(func() error { v = f(); return nil }))
	return v
}

// TestBackendBatchPolicy: the page file commits once
// --backend-batch-limit applied writes wait (the interval set too long to
// matter here), and not before.
func TestBackendBatchPolicy(t *testing.T) {
	for _, limit := range []int{3, 10000} {
		s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "m"), func(cfg *Config) {
			cfg.BackendBatchInterval, cfg.BackendBatchLimit = time.Hour, limit
		})
		most := 0
		for i := range 8 {
			_, err := c.Put(ctxT(t), fmt.Sprint("k", i), "v")
			require.NoError(t, err)
			most = max(most, onApplier(t, s, s.m.Engine().Uncommitted))
		}
		if limit == 3 {
			require.Less(t, most, 3, "a batch held more writes than --backend-batch-limit")
			require.Greater(t, most, 0, "every write committed at once")
		} else {
			require.GreaterOrEqual(t, most, 8, "a batch committed before its limit or interval")
		}
	}
}

// TestCompactionPacing: a compaction deletes at most
// --experimental-compaction-batch-limit revisions a step and waits
// --experimental-compaction-sleep-interval between steps: with one
// revision a step and an hour between, it is still under way once
// applied; with the defaults it ends.
func TestCompactionPacing(t *testing.T) {
	for _, paced := range []bool{true, false} {
		s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "m"), func(cfg *Config) {
			if paced {
				cfg.CompactionBatchLimit, cfg.CompactionSleepInterval = 1, time.Hour
			}
		})
		var rev int64
		for i := range 20 {
			resp, err := c.Put(ctxT(t), fmt.Sprint("k", i%3), "v")
			require.NoError(t, err)
			rev = resp.Header.Revision
		}
		_, err := c.Compact(ctxT(t), rev)
		require.NoError(t, err)
		compacting := func() bool { return onApplier(t, s, s.m.Engine().Compacting) }
		if paced {
			require.True(t, compacting(), "the compaction did not wait between steps")
		} else {
			require.True(t, eventually(func() bool { return !compacting() }), "the compaction did not end")
		}
		if paced {
			// Stopping with a compaction under way is fine: it goes on
			// after a restart (and the data dir is checked whole).
			continue
		}
		_, err = c.Get(ctxT(t), "k0", clientv3.WithRev(rev-5))
		require.ErrorContains(t, err, "required revision has been compacted")
	}
}

// TestSlowApplyWarning: an apply slower than
// --experimental-warning-apply-duration is logged as etcd logs it and
// counted in etcd_server_slow_apply_total.
func TestSlowApplyWarning(t *testing.T) {
	var logs testlog.Buffer
	s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "m"), func(cfg *Config) {
		cfg.WarningApplyDuration = time.Nanosecond
		cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	})
	_, err := c.Put(ctxT(t), "slow", "v")
	require.NoError(t, err)
	require.Contains(t, logs.String(), `"msg":"apply request took too long"`)
	require.Contains(t, logs.String(), `"expected-duration":"1ns"`)
	// The member's publish of its attributes may be applied after the put:
	// some line, not the last, is the put's.
	found := false
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"msg":"apply request took too long"`) && strings.Contains(line, `put:<key:\"slow\" value_size:1`) {
			found = true
		}
	}
	require.True(t, found, "no slow-apply line for the put in:\n%s", logs.String())
	mf, err := s.m.Registry().Gather()
	require.NoError(t, err)
	counted := 0.0
	for _, f := range mf {
		if f.GetName() == "etcd_server_slow_apply_total" {
			counted = f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	require.GreaterOrEqual(t, counted, 1.0, "etcd_server_slow_apply_total")
}

// TestStopGRPCServiceOnDefrag: with --experimental-stop-grpc-service-on-defrag
// the gRPC health service says NOT_SERVING while a defragmentation runs,
// and SERVING again after; without, it stays SERVING.
func TestStopGRPCServiceOnDefrag(t *testing.T) {
	for _, stop := range []bool{true, false} {
		s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "m"), func(cfg *Config) { cfg.StopGRPCServiceOnDefrag = stop })
		hc := healthpb.NewHealthClient(c.ActiveConnection())
		status := func() healthpb.HealthCheckResponse_ServingStatus {
			resp, err := hc.Check(ctxT(t), &healthpb.HealthCheckRequest{})
			require.NoError(t, err)
			return resp.Status
		}
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, status())
		inDefrag, release := make(chan struct{}), make(chan struct{})
		failpoint.Enable("member/defragment", func() error {
			close(inDefrag)
			<-release
			return nil
		})
		done := make(chan error, 1)
		go func() { _, err := c.Defragment(context.Background(), s.ClientURLs()[0]); done <- err }()
		<-inDefrag
		want := healthpb.HealthCheckResponse_SERVING
		if stop {
			want = healthpb.HealthCheckResponse_NOT_SERVING
		}
		require.Equal(t, want, status(), "during the defrag")
		close(release)
		require.NoError(t, <-done)
		failpoint.Disable("member/defragment")
		require.Equal(t, healthpb.HealthCheckResponse_SERVING, status(), "after the defrag")
	}
}

// TestDefragServesWrites: while a defragmentation copies the page file
// (held there by a failpoint), puts, linearizable reads and deletes are
// answered; the defragmentation then finishes with all of them in the
// file, and HashKV is the same before the switch and after.
func TestDefragServesWrites(t *testing.T) {
	s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "m"), nil)
	ctx := ctxT(t)
	for i := range 200 {
		_, err := c.Put(ctx, fmt.Sprintf("k%03d", i), strings.Repeat("v", 1000))
		require.NoError(t, err)
	}
	del, err := c.Delete(ctx, "k", clientv3.WithPrefix())
	require.NoError(t, err)
	_, err = c.Compact(ctx, del.Header.Revision, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	copied, release := make(chan struct{}), make(chan struct{})
	failpoint.Enable("engine/defragCopied", func() error {
		close(copied)
		<-release
		return nil
	})
	defer failpoint.Disable("engine/defragCopied")
	done := make(chan error, 1)
	go func() { _, err := c.Defragment(context.Background(), s.ClientURLs()[0]); done <- err }()
	<-copied
	for i := range 50 {
		_, err := c.Put(ctx, fmt.Sprintf("during%02d", i), "v")
		require.NoError(t, err, "a put while the copy is made")
	}
	_, err = c.Delete(ctx, "during00")
	require.NoError(t, err)
	r, err := c.Get(ctx, "during", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.EqualValues(t, 49, r.Count)
	hash, err := c.HashKV(ctx, s.ClientURLs()[0], 0)
	require.NoError(t, err)
	close(release)
	require.NoError(t, <-done)
	after, err := c.HashKV(ctx, s.ClientURLs()[0], 0)
	require.NoError(t, err)
	require.Equal(t, hash.Hash, after.Hash)
	r, err = c.Get(ctx, "during", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Len(t, r.Kvs, 49)
	st, err := c.Status(ctx, s.ClientURLs()[0])
	require.NoError(t, err)
	require.Less(t, st.DbSize, int64(150_000), "the deleted values' pages are gone")
}

// TestBootstrapDefrag: a member restarted with
// --experimental-bootstrap-defrag-threshold-megabytes defragments its page
// file before serving when that frees at least so much, and not when it
// frees less.
func TestBootstrapDefrag(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	s, c, stop := startMemberWith(t, dir, nil)
	random := make([]byte, 1<<20) // incompressible
	_, _ = rand.Read(random)
	big := string(random)
	var rev int64
	for i := range 8 {
		// A big value, then small ones written after it: freeing the big
		// ones leaves holes the file's end does not give back.
		_, err := c.Put(ctxT(t), fmt.Sprint("big", i), big)
		require.NoError(t, err)
		for j := range 20 {
			resp, err := c.Put(ctxT(t), fmt.Sprint("small", i, j), "v")
			require.NoError(t, err)
			rev = resp.Header.Revision
		}
	}
	_, err := c.Delete(ctxT(t), "big", clientv3.WithPrefix())
	require.NoError(t, err)
	_, err = c.Compact(ctxT(t), rev+1, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	eng := s.m.Engine()
	// Pages freed are free once no reader or older meta can see them:
	// a few more commits.
	require.True(t, eventually(func() bool {
		_, err := c.Put(ctxT(t), "tick", "v")
		require.NoError(t, err)
		return eng.BackendSize()-eng.BackendInUse() > 4<<20
	}),
		"no free space to reclaim (size %d, in use %d)", eng.BackendSize(), eng.BackendInUse())
	stop()
	s, _, stop = startMemberWith(t, dir, nil)
	size := s.m.Engine().BackendSize()
	stop()
	for _, tc := range []struct {
		threshold uint
		shrinks   bool
	}{{1 << 10, false}, {4, true}} {
		s, _, stop := startMemberWith(t, dir, func(cfg *Config) { cfg.BootstrapDefragThresholdMegabytes = tc.threshold })
		after := s.m.Engine().BackendSize()
		stop()
		if tc.shrinks {
			require.Less(t, after, size, "threshold %d MiB", tc.threshold)
		} else {
			require.Equal(t, size, after, "threshold %d MiB", tc.threshold)
		}
	}
}
