package wal

import (
	"encoding/binary"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairn-kv/cairn/internal/vfs"
)

// TestConcurrentAppenders: many goroutines append at once (run it with
// -race). Every record whose Append returned is replayed exactly once, each
// goroutine's records in its own order, and appends were grouped: fewer
// syncs than calls.
func TestConcurrentAppenders(t *testing.T) {
	root := t.TempDir()
	// The Recorder's sync records a barrier and costs nothing, so the test
	// measures grouping, not the disk.
	rec := vfs.NewRecorder(root)
	dir := filepath.Join(root, "wal")
	w, _, err := Open(dir, Snapshot{}, &Options{FS: rec, SegmentSize: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 16, 200
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				data := make([]byte, 16)
				binary.LittleEndian.PutUint64(data, uint64(g))
				binary.LittleEndian.PutUint64(data[8:], uint64(i))
				// Metadata records carry no index, so goroutines need not
				// agree on one.
				if err := w.Append(MetadataRecord(data)); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	stats := w.Stats()
	_ = w.Close()
	if stats.Records < writers*each {
		t.Fatalf("stats count %d records, want at least %d", stats.Records, writers*each)
	}
	t.Logf("%d appends in %d batches (%d syncs), %d segment cuts", writers*each, stats.Batches, stats.Syncs, stats.Cuts)

	// Read every batch back and check what each writer appended.
	segs, err := listSegments(vfs.Default, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	nextOf := make([]uint64, writers)
	seen := 0
	var chain uint32
	for i, s := range segs {
		data, err := vfs.ReadFile(vfs.Default, filepath.Join(dir, s.String()))
		if err != nil {
			t.Fatal(err)
		}
		h, why := decodeSegmentHeader(data)
		if why != "" {
			t.Fatal(why)
		}
		chain = h.prevCRC
		_, _, err = scanSegment(data, s.String(), &chain, i == len(segs)-1, func(r Record) error {
			md, _ := r.Metadata()
			if len(md) != 16 {
				return nil // a segment's carried copy of the latest metadata
			}
			g, n := binary.LittleEndian.Uint64(md), binary.LittleEndian.Uint64(md[8:])
			if i > 0 && n < nextOf[g] {
				return nil // carried into a new segment: a copy of one already seen
			}
			if n != nextOf[g] {
				t.Fatalf("writer %d: record %d after %d", g, n, nextOf[g])
			}
			nextOf[g]++
			seen++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if seen != writers*each {
		t.Fatalf("replayed %d records, want %d", seen, writers*each)
	}
}
