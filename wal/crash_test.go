package wal

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand"
	"path/filepath"
	"sort"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/cairn-kv/cairn/internal/vfs"
)

var crashPoints = flag.Int("wal.crashpoints", 1200, "crash points TestCrash checks (0: every recorded operation)")

// model replays records the way Open does, from the beginning.
func model(calls [][]Record) *State {
	st := &State{}
	for _, recs := range calls {
		for _, r := range recs {
			switch r.Type {
			case TypeEntry:
				e, _ := r.Entry()
				for len(st.Entries) > 0 && st.Entries[len(st.Entries)-1].Index >= e.Index {
					st.Entries = st.Entries[:len(st.Entries)-1]
				}
				st.Entries = append(st.Entries, e)
			case TypeHardState:
				st.HardState, _ = r.HardState()
			case TypeMetadata:
				st.Metadata, _ = r.Metadata()
			}
		}
	}
	return st
}

// sameState describes the first difference between two replayed states.
func sameState(a, b *State) string {
	if a.HardState != b.HardState {
		return fmt.Sprintf("hard state %+v vs %+v", a.HardState, b.HardState)
	}
	if !bytes.Equal(a.Metadata, b.Metadata) {
		return fmt.Sprintf("metadata %q vs %q", a.Metadata, b.Metadata)
	}
	if len(a.Entries) != len(b.Entries) {
		return fmt.Sprintf("%d entries vs %d", len(a.Entries), len(b.Entries))
	}
	for i := range a.Entries {
		x, y := a.Entries[i], b.Entries[i]
		if x.Index != y.Index || x.Term != y.Term || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) {
			return fmt.Sprintf("entry %d: index %d term %d vs index %d term %d", i, x.Index, x.Term, y.Index, y.Term)
		}
	}
	return ""
}

// randomCall makes the records of one Append: mostly new entries, now and
// then a new leader overwriting the tail, a hard state, or metadata.
func randomCall(rng *rand.Rand, next *uint64, term *uint64) []Record {
	var recs []Record
	for i, n := 0, 1+rng.Intn(3); i < n; i++ {
		switch r := rng.Intn(20); {
		case r == 0 && *next > 3:
			*term++
			*next -= uint64(1 + rng.Intn(3))
			fallthrough
		case r < 17:
			data := make([]byte, rng.Intn(600))
			rng.Read(data)
			recs = append(recs, EntryRecord(Entry{Term: *term, Index: *next, Type: uint8(rng.Intn(3)), Data: data}))
			*next++
		case r < 19:
			recs = append(recs, HardStateRecord(HardState{Term: *term, Vote: uint64(rng.Intn(5)), Commit: *next - 1}))
		default:
			recs = append(recs, MetadataRecord([]byte(fmt.Sprint("md-", rng.Intn(100)))))
		}
	}
	return recs
}

// TestCrash records every write and sync of a random workload (small
// segments, so segment cuts happen throughout), then for each crash point
// rebuilds the directory as a disk could hold it after a power loss there
// (unsynced writes dropped, kept as a prefix, kept as a random subset of
// 512-byte sectors, or with a torn sector; unsynced directory changes lost
// or partly kept). The WAL must open and replay exactly the records of the
// Append calls that had returned, plus possibly the one in flight, and the
// repaired WAL must take appends.
func TestCrash(t *testing.T) {
	seed := testseed.Seed(t)
	rng := rand.New(rand.NewSource(seed))
	root := t.TempDir()
	rec := vfs.NewRecorder(root)
	segSize := int64([]int{2048, 8192}[rng.Intn(2)])
	w, _, err := Open(filepath.Join(root, "wal"), Snapshot{}, &Options{FS: rec, SegmentSize: segSize, PrepareInline: true})
	if err != nil {
		t.Fatal(err)
	}
	type call struct {
		recs       []Record
		start, end int // crash points: after end the call had returned
	}
	var calls []call
	next, term := uint64(1), uint64(1)
	for rec.Len() < *crashPoints || len(calls) < 50 {
		recs := randomCall(rng, &next, &term)
		start := rec.Len()
		if err := w.Append(recs...); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, call{recs: recs, start: start, end: rec.Len()})
	}
	cuts := w.Stats().Cuts
	_ = w.Close()

	total := rec.Len()
	points := vfs.CrashPoints(total, *crashPoints, rng)
	t.Logf("segment size %d, %d appends, %d segment cuts, %d operations, %d crash points", segSize, len(calls), cuts, total, len(points))

	rp := rec.Replayer(t.TempDir())
	img := t.TempDir()
	outcomes := map[string]int{}
	for i, k := range points {
		if err := rp.Advance(k); err != nil {
			t.Fatal(err)
		}
		mode := vfs.AllCrashModes[i%len(vfs.AllCrashModes)]
		if err := rp.Image(img, mode, rand.New(rand.NewSource(seed+int64(k)))); err != nil {
			t.Fatal(err)
		}
		acked := sort.Search(len(calls), func(i int) bool { return calls[i].end > k })
		inflight := acked < len(calls) && calls[acked].start < k
		var prefix [][]Record
		for _, c := range calls[:acked] {
			prefix = append(prefix, c.recs)
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("crash point %d/%d (%v, seed %d, %d acked): %s", k, total, mode, seed, acked, fmt.Sprintf(format, args...))
		}
		dir := filepath.Join(img, "wal")
		w2, st, err := Open(dir, Snapshot{}, &Options{SegmentSize: segSize})
		if err != nil {
			fail("open: %v", err)
		}
		if diff := sameState(model(prefix), st); diff == "" {
			outcomes["acked"]++
		} else if inflight && sameState(model(append(prefix, calls[acked].recs)), st) == "" {
			outcomes["acked+inflight"]++
		} else {
			fail("replay differs from the acknowledged appends: %s", diff)
		}
		if i%5 == 0 {
			// The repaired WAL takes appends and replays them.
			last := uint64(1)
			if n := len(st.Entries); n > 0 {
				last = st.Entries[n-1].Index + 1
			}
			if err := w2.Append(EntryRecord(Entry{Term: 99, Index: last, Data: []byte("after")})); err != nil {
				fail("append after recovery: %v", err)
			}
			_ = w2.Close()
			w3, st2, err := Open(dir, Snapshot{}, &Options{SegmentSize: segSize})
			if err != nil {
				fail("reopen after recovery: %v", err)
			}
			_ = w3.Close()
			if n := len(st2.Entries); n == 0 || st2.Entries[n-1].Term != 99 {
				fail("the append after recovery was not replayed")
			}
			if err := Verify(dir, nil); err != nil {
				fail("verify after recovery: %v", err)
			}
		}
		_ = w2.Close()
	}
	t.Logf("outcomes: %v", outcomes)
}
