package server

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/raft"
)

// TestRaftSnapshots writes past several snapshots with small WAL
// segments, and checks that old segments and .snap files go within their
// limits, and that a restart from the newest snapshot has every key.
func TestRaftSnapshots(t *testing.T) {
	dir := t.TempDir()
	set := func(c *Config) {
		c.SnapshotCount, c.MaxWALs, c.MaxSnapshots = 100, 2, 2
		c.walSegmentSize = 64 << 10
	}
	_, c, stop := startMemberWith(t, dir, set)
	const n = 1000
	val := strings.Repeat("v", 200)
	for i := range n {
		if _, err := c.Put(ctxT(t), fmt.Sprintf("k%04d", i), fmt.Sprint(i, val)); err != nil {
			t.Fatal(err)
		}
	}
	stop()

	snapDir, walDir := filepath.Join(dir, "member", "snap"), filepath.Join(dir, "member", "wal")
	snaps, err := snapFiles(snapDir)
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
	snap, err := loadSnap(snapDir, slog.Default())
	if err != nil || snap == nil || snap.Index < n-100 {
		t.Fatalf("newest snapshot %+v, %v: want one at or past %d", snap, err, n-100)
	}

	_, c, _ = startMemberWith(t, dir, set)
	resp, err := c.Get(ctxT(t), "k", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != n {
		t.Fatalf("after restart %d keys, want %d", len(resp.Kvs), n)
	}
	for i, kv := range resp.Kvs {
		if string(kv.Key) != fmt.Sprintf("k%04d", i) || string(kv.Value) != fmt.Sprint(i, val) {
			t.Fatalf("key %d: %q = %q", i, kv.Key, kv.Value)
		}
	}
	put, err := c.Put(ctxT(t), "after", "x")
	if err != nil {
		t.Fatal(err)
	}
	if put.Header.Revision != n+2 {
		t.Fatalf("revision after restart %d, want %d", put.Header.Revision, n+2)
	}
}

func TestSnapFiles(t *testing.T) {
	dir := t.TempDir()
	metas := []raft.SnapshotMeta{
		{Term: 1, Index: 9, Voters: []uint64{7}},
		{Term: 2, Index: 100, Voters: []uint64{7, 8, 9}, Learners: []uint64{10}},
		{Term: 2, Index: 0x1_0000_0000, Voters: []uint64{7}},
	}
	for _, m := range metas {
		if err := writeSnap(dir, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "db"), []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := loadSnap(dir, slog.Default())
	if err != nil || !reflect.DeepEqual(*got, metas[2]) {
		t.Fatalf("newest: %+v, %v; want %+v", got, err, metas[2])
	}

	// A damaged newest file is passed over for the one before it.
	newest := filepath.Join(dir, snapName(metas[2].Term, metas[2].Index))
	data, _ := os.ReadFile(newest)
	data[20] ^= 1
	if err := os.WriteFile(newest, data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = loadSnap(dir, slog.Default())
	if err != nil || !reflect.DeepEqual(*got, metas[1]) {
		t.Fatalf("with the newest damaged: %+v, %v; want %+v", got, err, metas[1])
	}
	// So is a file whose name does not match what it records.
	if err := os.Rename(filepath.Join(dir, snapName(1, 9)), filepath.Join(dir, snapName(1, 0x2_0000_0000))); err != nil {
		t.Fatal(err)
	}
	got, err = loadSnap(dir, slog.Default())
	if err != nil || !reflect.DeepEqual(*got, metas[1]) {
		t.Fatalf("with a misnamed file: %+v, %v; want %+v", got, err, metas[1])
	}

	if err := purgeSnaps(dir, 1); err != nil {
		t.Fatal(err)
	}
	names, _ := snapFiles(dir)
	if len(names) != 1 || names[0] != snapName(1, 0x2_0000_0000) {
		t.Fatalf("after purging to 1: %v", names)
	}
	for _, b := range [][]byte{nil, []byte("CSNP"), encodeSnap(metas[0])[:30]} {
		if _, err := decodeSnap(b); err == nil {
			t.Fatalf("decodeSnap(%x) accepted", b)
		}
	}
}
