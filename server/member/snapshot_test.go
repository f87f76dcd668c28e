package member

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/stretchr/testify/require"
)

// TestRaftSnapshots writes past several snapshots with small WAL
// segments, and checks that old segments and .snap files go within their
// limits, and that a restart from the newest snapshot has every key.
func TestRaftSnapshots(t *testing.T) {
	dir := t.TempDir()
	set := func(c *Config) {
		c.SnapshotCount, c.MaxWALs, c.MaxSnapshots = 100, 2, 2
		c.WALSegmentSize = 64 << 10
	}
	m, stop := openTest(t, dir, set)
	const n = 1000
	val := strings.Repeat("v", 200)
	for i := range n {
		_, err := put(ctxT(t), m, fmt.Sprintf("k%04d", i), fmt.Sprint(i, val))
		require.NoError(t, err)
	}
	stop()

	snapDir, walDir := filepath.Join(dir, "member", "snap"), filepath.Join(dir, "member", "wal")
	snaps, err := snapFiles(vfs.Default, snapDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) == 0 || len(snaps) > 2 {
		t.Fatalf("snapshot files %v: want 1 or 2", snaps)
	}
	segs, err := vfs.Default.ReadDir(walDir)
	if err != nil {
		t.Fatal(err)
	}
	// 1,000 entries of ~300 bytes fill about five 64 KiB segments; after
	// the last snapshot (at most 100 entries back) at most two are kept,
	// plus the one being written.
	if len(segs) > 3 {
		t.Fatalf("WAL segments %v: want at most 3", segs)
	}
	snap, err := loadSnap(vfs.Default, snapDir, slog.Default())
	if err != nil || snap == nil || snap.Index < n-100 {
		t.Fatalf("newest snapshot %+v, %v: want one at or past %d", snap, err, n-100)
	}

	m, _ = openTest(t, dir, set)
	require.NoError(t, m.LinearizableRead(ctxT(t)))
	resp, err := m.Engine().Range([]byte("k"), []byte("l"), engine.RangeOptions{})
	require.NoError(t, err)
	if len(resp.KVs) != n {
		t.Fatalf("after restart %d keys, want %d", len(resp.KVs), n)
	}
	for i, kv := range resp.KVs {
		if string(kv.Key) != fmt.Sprintf("k%04d", i) || string(kv.Value) != fmt.Sprint(i, val) {
			t.Fatalf("key %d: %q = %q", i, kv.Key, kv.Value)
		}
	}
	after, err := put(ctxT(t), m, "after", "x")
	if err != nil {
		t.Fatal(err)
	}
	if after.Header.Revision != n+2 {
		t.Fatalf("revision after restart %d, want %d", after.Header.Revision, n+2)
	}
}

// TestRaftSnapshotsByBytes: with a count far off, a snapshot is still
// taken once the entries applied since the last hold SnapshotBytes of
// data, so raft's in-memory log does not grow with the entries' size.
func TestRaftSnapshotsByBytes(t *testing.T) {
	dir := t.TempDir()
	m, stop := openTest(t, dir, func(c *Config) { c.SnapshotBytes = 256 << 10 })
	const n = 40
	val := strings.Repeat("v", 32<<10)
	for i := range n {
		_, err := put(ctxT(t), m, fmt.Sprintf("k%04d", i), val)
		require.NoError(t, err)
	}
	// The driver records a snapshot the applier hands it after the put
	// that made it due has been answered: wait for it (bounded), then
	// stop.
	newest := func() uint64 {
		snap, err := loadSnap(vfs.Default, filepath.Join(dir, "member", "snap"), slog.Default())
		require.NoError(t, err)
		if snap == nil {
			return 0
		}
		return snap.Index
	}
	require.Eventually(t, func() bool { return newest() >= uint64(n-10) }, 30*time.Second, 10*time.Millisecond,
		"no snapshot at or past index %d after %d entries of 32 KiB, 256 KiB a snapshot", n-10, n)
	stop()
	require.GreaterOrEqual(t, newest(), uint64(n-10))
}
