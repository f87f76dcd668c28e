package member

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/raft"
)

func TestSnapFiles(t *testing.T) {
	dir := t.TempDir()
	metas := []raft.SnapshotMeta{
		{Term: 1, Index: 9, Voters: []uint64{7}},
		{Term: 2, Index: 100, Voters: []uint64{7, 8, 9}, Learners: []uint64{10}},
		{Term: 2, Index: 0x1_0000_0000, Voters: []uint64{7}},
	}
	for _, m := range metas {
		if err := writeSnap(vfs.Default, dir, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "db"), []byte("not a snapshot"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := loadSnap(vfs.Default, dir, slog.Default())
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
	got, err = loadSnap(vfs.Default, dir, slog.Default())
	if err != nil || !reflect.DeepEqual(*got, metas[1]) {
		t.Fatalf("with the newest damaged: %+v, %v; want %+v", got, err, metas[1])
	}
	// So is a file whose name does not match what it records.
	if err := os.Rename(filepath.Join(dir, snapName(1, 9)), filepath.Join(dir, snapName(1, 0x2_0000_0000))); err != nil {
		t.Fatal(err)
	}
	got, err = loadSnap(vfs.Default, dir, slog.Default())
	if err != nil || !reflect.DeepEqual(*got, metas[1]) {
		t.Fatalf("with a misnamed file: %+v, %v; want %+v", got, err, metas[1])
	}

	if err := purgeSnaps(vfs.Default, dir, 1); err != nil {
		t.Fatal(err)
	}
	names, _ := snapFiles(vfs.Default, dir)
	if len(names) != 1 || names[0] != snapName(1, 0x2_0000_0000) {
		t.Fatalf("after purging to 1: %v", names)
	}
	for _, b := range [][]byte{nil, []byte("CSNP"), encodeSnap(metas[0])[:30]} {
		if _, err := decodeSnap(b); err == nil {
			t.Fatalf("decodeSnap(%x) accepted", b)
		}
	}
}
