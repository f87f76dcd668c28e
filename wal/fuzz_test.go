package wal

import (
	"os"
	"path/filepath"
	"testing"
)

// sampleSegment returns a segment file holding a few batches.
func sampleSegment(tb testing.TB) []byte {
	tb.Helper()
	dir := tb.TempDir()
	w, _, err := Open(dir, Snapshot{}, &Options{SegmentSize: 4096})
	if err != nil {
		tb.Fatal(err)
	}
	_ = w.Append(MetadataRecord([]byte("md")))
	_ = w.Append(EntryRecord(Entry{Term: 1, Index: 1, Data: []byte("one")}), EntryRecord(Entry{Term: 1, Index: 2, Data: []byte("two")}))
	_ = w.Append(HardStateRecord(HardState{Term: 1, Vote: 1, Commit: 2}), SnapshotRecord(Snapshot{Term: 1, Index: 2, Membership: []byte("m")}))
	segs := w.Segments()
	_ = w.Close()
	data, err := os.ReadFile(filepath.Join(dir, segs[0]))
	if err != nil {
		tb.Fatal(err)
	}
	return data[:512] // the batches; the rest is preallocated zeros
}

func fuzzSeeds(f *testing.F) {
	seg := sampleSegment(f)
	f.Add(seg)
	f.Add(seg[:100])
	f.Add(seg[:segmentHeaderSize])
	for _, off := range []int{4, 40, 60, 90, 150, 200} {
		b := append([]byte(nil), seg...)
		b[off] ^= 0x40
		f.Add(b)
	}
	huge := append([]byte(nil), seg...)
	le.PutUint32(huge[segmentHeaderSize+batchHeaderSize:], 0xfffffff0) // a bogus record length
	f.Add(huge)
}

// FuzzReadSegment feeds arbitrary bytes to the segment reader: it returns
// records or an error, never panics or hangs, and allocates nothing sized
// by a length field (records are slices of the input).
func FuzzReadSegment(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		h, why := decodeSegmentHeader(data)
		chain := h.prevCRC
		if why != "" {
			chain = 0
		}
		for _, last := range []bool{true, false} {
			c := chain
			_, _, _ = scanSegment(data, "fuzz.wal", &c, last, func(r Record) error {
				switch r.Type {
				case TypeEntry:
					_, err := r.Entry()
					return err
				case TypeHardState:
					_, err := r.HardState()
					return err
				case TypeSnapshot:
					_, err := r.Snapshot()
					return err
				}
				return nil
			})
		}
	})
}

// FuzzOpen puts arbitrary bytes in a WAL's only segment and opens and
// verifies it: an error or a state, never a panic.
func FuzzOpen(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentName{seq: 0, first: 1}.String()), data, 0o640); err != nil {
			t.Fatal(err)
		}
		_ = Verify(dir, nil)
		w, _, err := Open(dir, Snapshot{}, &Options{SegmentSize: 4096})
		if err != nil {
			return
		}
		_ = w.Append(EntryRecord(Entry{Term: 9, Index: 1}))
		_ = w.Close()
	})
}
