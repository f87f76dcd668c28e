package server

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

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
	line := logs.String()[strings.LastIndex(logs.String(), `"msg":"apply request took too long"`):]
	require.Contains(t, line, `put:<key:\"slow\" value_size:1`)
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
