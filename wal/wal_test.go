package wal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/vfs"
)

// small keeps tests fast: every open zero-fills a spare segment.
var small = &Options{SegmentSize: 64 << 10}

func ent(term, index uint64, data string) Entry {
	return Entry{Term: term, Index: index, Type: 0, Data: []byte(data)}
}

func mustOpen(t testing.TB, dir string, from Snapshot, opts *Options) (*WAL, *State) {
	t.Helper()
	w, st, err := Open(dir, from, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w, st
}

func appendEntries(t testing.TB, w *WAL, ents ...Entry) {
	t.Helper()
	recs := make([]Record, len(ents))
	for i, e := range ents {
		recs[i] = EntryRecord(e)
	}
	if err := w.Append(recs...); err != nil {
		t.Fatal(err)
	}
}

func indexes(ents []Entry) []uint64 {
	out := make([]uint64, len(ents))
	for i, e := range ents {
		out[i] = e.Index
	}
	return out
}

func TestAppendReopen(t *testing.T) {
	dir := t.TempDir()
	w, st := mustOpen(t, dir, Snapshot{}, small)
	if len(st.Entries) != 0 || !st.HardState.IsEmpty() {
		t.Fatalf("new WAL replayed %+v", st)
	}
	if err := w.Append(MetadataRecord([]byte("cluster-1"))); err != nil {
		t.Fatal(err)
	}
	appendEntries(t, w, ent(1, 1, "a"), ent(1, 2, "b"))
	if err := w.Append(HardStateRecord(HardState{Term: 1, Vote: 3, Commit: 2}), EntryRecord(ent(1, 3, "c"))); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	if err := w.Append(EntryRecord(ent(1, 4, "d"))); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	w2, st := mustOpen(t, dir, Snapshot{}, small)
	if string(st.Metadata) != "cluster-1" || st.HardState != (HardState{1, 3, 2}) {
		t.Fatalf("replayed %+v", st)
	}
	if got := indexes(st.Entries); !reflect.DeepEqual(got, []uint64{1, 2, 3}) || string(st.Entries[2].Data) != "c" {
		t.Fatalf("entries %v", got)
	}
	appendEntries(t, w2, ent(1, 4, "d"))
	_ = w2.Close()
	if err := Verify(dir, nil); err != nil {
		t.Fatal(err)
	}
}

// TestRotationTruncationRelease: replay is the same after close and reopen,
// across many segments, after appends that truncate, and after ReleaseTo.
func TestRotationTruncationRelease(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{SegmentSize: 4096}
	w, _ := mustOpen(t, dir, Snapshot{}, opts)
	if err := w.Append(MetadataRecord([]byte("md"))); err != nil {
		t.Fatal(err)
	}
	var want []Entry
	add := func(e Entry) {
		for len(want) > 0 && want[len(want)-1].Index >= e.Index {
			want = want[:len(want)-1]
		}
		want = append(want, e)
		appendEntries(t, w, e)
	}
	payload := string(bytes.Repeat([]byte{'x'}, 300))
	for i := uint64(1); i <= 100; i++ {
		add(ent(1, i, fmt.Sprint(i, payload)))
	}
	// A new leader overwrites the tail from 90.
	for i := uint64(90); i <= 120; i++ {
		add(ent(2, i, fmt.Sprint("t2-", i, payload)))
	}
	if err := w.Append(HardStateRecord(HardState{Term: 2, Vote: 1, Commit: 110})); err != nil {
		t.Fatal(err)
	}
	if n := len(w.Segments()); n < 10 {
		t.Fatalf("only %d segments: rotation was not exercised", n)
	}
	check := func(st *State, from uint64) {
		t.Helper()
		var exp []Entry
		for _, e := range want {
			if e.Index > from {
				exp = append(exp, e)
			}
		}
		if len(st.Entries) != len(exp) {
			t.Fatalf("replayed %d entries, want %d", len(st.Entries), len(exp))
		}
		for i := range exp {
			if st.Entries[i].Index != exp[i].Index || st.Entries[i].Term != exp[i].Term || !bytes.Equal(st.Entries[i].Data, exp[i].Data) {
				t.Fatalf("entry %d: %+v, want index %d term %d", i, st.Entries[i].Index, exp[i].Index, exp[i].Term)
			}
		}
		if st.HardState != (HardState{2, 1, 110}) || string(st.Metadata) != "md" {
			t.Fatalf("state %+v %q", st.HardState, st.Metadata)
		}
	}
	_ = w.Close()
	w, st := mustOpen(t, dir, Snapshot{}, opts)
	check(st, 0)
	_ = w.Close()
	w, st = mustOpen(t, dir, Snapshot{}, opts)
	check(st, 0)

	// Snapshot at 100, release what it covers, then more appends rotate
	// and carry metadata, hard state and the marker into new segments.
	snap := Snapshot{Term: 2, Index: 100, Membership: []byte("voters=1,2,3")}
	if err := w.Append(SnapshotRecord(snap)); err != nil {
		t.Fatal(err)
	}
	before := len(w.Segments())
	if err := w.ReleaseTo(100, 0); err != nil {
		t.Fatal(err)
	}
	if after := len(w.Segments()); after >= before {
		t.Fatalf("ReleaseTo(100) kept all %d segments", before)
	}
	for i := uint64(121); i <= 160; i++ {
		add(ent(2, i, fmt.Sprint(i, payload)))
	}
	_ = w.Close()
	w, st = mustOpen(t, dir, snap, opts)
	check(st, 100)
	if string(st.Snapshot.Membership) != "voters=1,2,3" {
		t.Fatalf("snapshot marker %+v", st.Snapshot)
	}
	// A later snapshot; releasing up to it drops the first one's segments.
	snap2 := Snapshot{Term: 2, Index: 150}
	if err := w.Append(SnapshotRecord(snap2)); err != nil {
		t.Fatal(err)
	}
	// With as many segments to keep as there are, nothing goes; with one
	// fewer, exactly the oldest.
	n := len(w.Segments())
	oldest := w.Segments()[0]
	if err := w.ReleaseTo(150, n); err != nil {
		t.Fatal(err)
	}
	if got := len(w.Segments()); got != n {
		t.Fatalf("ReleaseTo(150, keep %d) left %d segments", n, got)
	}
	if err := w.ReleaseTo(150, n-1); err != nil {
		t.Fatal(err)
	}
	if segs := w.Segments(); len(segs) != n-1 || slices.Contains(segs, oldest) {
		t.Fatalf("ReleaseTo(150, keep %d) of %d segments left %v", n-1, n, segs)
	}
	if err := w.ReleaseTo(150, 0); err != nil {
		t.Fatal(err)
	}
	for i := uint64(161); i <= 170; i++ {
		add(ent(2, i, fmt.Sprint(i, payload)))
	}
	_ = w.Close()
	_, st = mustOpen(t, dir, snap2, opts)
	check(st, 150)
	if _, _, err := Open(dir, snap, opts); !errors.Is(err, ErrReleased) {
		t.Fatalf("open from a released snapshot: %v", err)
	}
	if err := Verify(dir, nil); err != nil {
		t.Fatal(err)
	}
}

func TestFatalErrors(t *testing.T) {
	efs := vfs.NewErrorFS(vfs.Default)
	w, _ := mustOpen(t, t.TempDir(), Snapshot{}, &Options{FS: efs, SegmentSize: 1 << 16})
	appendEntries(t, w, ent(1, 1, "a"))
	// The next segment is made in the background and synced through the
	// same file system: wait for it, so that the fault meets the append's
	// sync and not the spare's.
	sp := <-w.spare
	w.spare = make(chan spare, 1)
	w.spare <- sp
	efs.Inject(vfs.FaultSync, 1, vfs.ErrInjected, false)
	err := w.Append(EntryRecord(ent(1, 2, "b")))
	var fatal *FatalError
	if !errors.As(err, &fatal) {
		t.Fatalf("append with a failing sync: %v", err)
	}
	if err := w.Append(EntryRecord(ent(1, 3, "c"))); !errors.As(err, &fatal) {
		t.Fatalf("append after a failed sync: %v (never retry an fsync)", err)
	}
}

// TestTornTailIsCut: garbage after the last batch (an incomplete write) is
// cut off at open, and the WAL goes on from there.
func TestTornTailIsCut(t *testing.T) {
	dir := t.TempDir()
	w, _ := mustOpen(t, dir, Snapshot{}, small)
	appendEntries(t, w, ent(1, 1, "a"), ent(1, 2, "b"))
	off := w.off
	_ = w.Close()
	seg := filepath.Join(dir, w.Segments()[0])
	f, _ := os.OpenFile(seg, os.O_RDWR, 0)
	// The start of a batch whose body never made it.
	bad, _ := encodeBatch(nil, []Record{EntryRecord(ent(1, 3, "c"))}, w.chain)
	_, _ = f.WriteAt(bad[:len(bad)-8], off)
	_ = f.Close()
	if err := Verify(dir, nil); err != nil {
		t.Fatalf("verify with a torn tail: %v", err)
	}
	w2, st := mustOpen(t, dir, Snapshot{}, small)
	if got := indexes(st.Entries); !reflect.DeepEqual(got, []uint64{1, 2}) {
		t.Fatalf("entries %v", got)
	}
	appendEntries(t, w2, ent(1, 3, "c2"))
	_ = w2.Close()
	_, st = mustOpen(t, dir, Snapshot{}, small)
	if got := indexes(st.Entries); !reflect.DeepEqual(got, []uint64{1, 2, 3}) || string(st.Entries[2].Data) != "c2" {
		t.Fatalf("after repair and append: %v", got)
	}
}

// TestCorruptionIsRefused: a flipped byte in a batch that later batches
// follow is corruption: Open and Verify refuse, saying where.
func TestCorruptionIsRefused(t *testing.T) {
	dir := t.TempDir()
	w, _ := mustOpen(t, dir, Snapshot{}, small)
	appendEntries(t, w, ent(1, 1, "first"))
	appendEntries(t, w, ent(1, 2, "second"))
	appendEntries(t, w, ent(1, 3, "third"))
	_ = w.Close()
	seg := filepath.Join(dir, w.Segments()[0])
	data, _ := os.ReadFile(seg)
	i := bytes.Index(data, []byte("second"))
	data[i] ^= 0x01
	_ = os.WriteFile(seg, data, 0o640)
	var ce *CorruptError
	if err := Verify(dir, nil); !errors.As(err, &ce) {
		t.Fatalf("verify: %v", err)
	}
	if _, _, err := Open(dir, Snapshot{}, small); !errors.As(err, &ce) || ce.File != filepath.Base(seg) {
		t.Fatalf("open: %v", err)
	}
	t.Logf("refused: %v", ce)

	// A missing segment in the middle is corruption too.
	dir2 := t.TempDir()
	w2, _ := mustOpen(t, dir2, Snapshot{}, &Options{SegmentSize: 1024})
	for i := uint64(1); i <= 20; i++ {
		appendEntries(t, w2, ent(1, i, string(bytes.Repeat([]byte{'y'}, 200))))
	}
	segs := w2.Segments()
	_ = w2.Close()
	_ = os.Remove(filepath.Join(dir2, segs[2]))
	if _, _, err := Open(dir2, Snapshot{}, small); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with a missing segment: %v", err)
	}
}

// An entry record keeps the entry's data apart until it is encoded; the
// batch is byte for byte what a record holding the whole body encodes, and
// the record reads back as the entry.
func TestEntryRecordEncoding(t *testing.T) {
	for _, e := range []Entry{ent(1, 1, ""), ent(7, 42, "abc"), {Term: 3, Index: 9, Type: 2, Data: bytes.Repeat([]byte{'d'}, 1000)}} {
		r := EntryRecord(e)
		whole := Record{Type: TypeEntry, payload: append(slices.Clip(r.payload), e.Data...)}
		got, gotChain := encodeBatch(nil, []Record{HardStateRecord(HardState{Term: 1}), r}, 5)
		want, wantChain := encodeBatch(nil, []Record{HardStateRecord(HardState{Term: 1}), whole}, 5)
		if !bytes.Equal(got, want) || gotChain != wantChain {
			t.Fatalf("entry %d: the batch differs from the whole body's", e.Index)
		}
		back, err := r.Entry()
		if err != nil || back.Term != e.Term || back.Index != e.Index || back.Type != e.Type || !bytes.Equal(back.Data, e.Data) {
			t.Fatalf("entry %d read back as %+v, %v", e.Index, back, err)
		}
	}
}

// TestHeldSync: a batch holding one entry is written and synced with held
// system calls while the last sync was quick, and any other batch is not;
// what the held calls wrote replays. A file system without held calls
// (here an ErrorFS wrapper) never uses them.
func TestHeldSync(t *testing.T) {
	dir := t.TempDir()
	w, _ := mustOpen(t, dir, Snapshot{}, small)
	index := uint64(0)
	next := func(n int) []Record {
		recs := make([]Record, n)
		for i := range recs {
			index++
			recs[i] = EntryRecord(ent(1, index, fmt.Sprintf("v%d", index)))
		}
		return recs
	}
	steps := []struct {
		name string
		recs []Record
		slow bool // the last sync is made to look slow first
	}{
		{"lone entry", next(1), false},
		{"lone entry with hard state", append(next(1), HardStateRecord(HardState{Term: 1, Commit: index})), false},
		{"three entries", next(3), false},
		{"metadata only", []Record{MetadataRecord([]byte("m"))}, false},
		{"lone entry after a slow sync", next(1), true},
		{"lone entry after that", next(1), false},
	}
	for _, s := range steps {
		w.mu.Lock()
		if s.slow {
			w.lastSync = heldSyncLimit
		}
		quick := w.lastSync < heldSyncLimit
		before := w.stats.HeldSyncs
		w.mu.Unlock()
		if err := w.Append(s.recs...); err != nil {
			t.Fatal(err)
		}
		entries := 0
		for _, r := range s.recs {
			if r.Type == TypeEntry {
				entries++
			}
		}
		want := before
		if entries == 1 && quick {
			want++
		}
		if got := w.Stats().HeldSyncs; got != want {
			t.Fatalf("%s (last sync quick: %v): %d held syncs, want %d", s.name, quick, got, want)
		}
	}
	_ = w.Close()
	_, st := mustOpen(t, dir, Snapshot{}, small)
	if len(st.Entries) != int(index) {
		t.Fatalf("replayed %d entries, want %d", len(st.Entries), index)
	}
	for i, e := range st.Entries {
		if e.Index != uint64(i+1) || string(e.Data) != fmt.Sprintf("v%d", i+1) {
			t.Fatalf("entry %d replayed as %d %q", i+1, e.Index, e.Data)
		}
	}
	if err := Verify(dir, nil); err != nil {
		t.Fatal(err)
	}

	w3, _ := mustOpen(t, t.TempDir(), Snapshot{}, &Options{SegmentSize: small.SegmentSize, FS: vfs.NewErrorFS(vfs.Default)})
	appendEntries(t, w3, ent(1, 1, "a"))
	if n := w3.Stats().HeldSyncs; n != 0 {
		t.Fatalf("%d held syncs on a file system without them", n)
	}
}

// TestNoSync: with NoSync (--unsafe-no-fsync) appends make no fdatasync,
// and what they wrote is there after a clean close.
func TestNoSync(t *testing.T) {
	dir := t.TempDir()
	efs := vfs.NewErrorFS(vfs.Default)
	w, _ := mustOpen(t, dir, Snapshot{}, &Options{FS: efs, SegmentSize: 1 << 16, NoSync: true})
	appendEntries(t, w, ent(1, 1, "a"))
	sp := <-w.spare // the spare segment is synced as it is made
	w.spare = make(chan spare, 1)
	w.spare <- sp
	syncs := efs.Count(vfs.FaultSync)
	for i := uint64(2); i <= 20; i++ {
		appendEntries(t, w, ent(1, i, "v"))
	}
	if n := efs.Count(vfs.FaultSync); n != syncs {
		t.Fatalf("%d fdatasyncs for appends with NoSync", n-syncs)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, st := mustOpen(t, dir, Snapshot{}, nil)
	if len(st.Entries) != 20 {
		t.Fatalf("%d entries after reopening, want 20", len(st.Entries))
	}
}

// TestOpenReadsFromTheSnapshotsSegment: Open replays from the segment that
// holds the entry after the snapshot. A segment before it is not read (its
// damage goes unseen by Open, though Verify reports it), and what Open
// returns is what a replay of the whole log returns.
func TestOpenReadsFromTheSnapshotsSegment(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{SegmentSize: 4096}
	w, _ := mustOpen(t, dir, Snapshot{}, opts)
	require.NoError(t, w.Append(MetadataRecord([]byte("md"))))
	payload := string(bytes.Repeat([]byte{'x'}, 300))
	for i := uint64(1); i <= 60; i++ {
		appendEntries(t, w, ent(1, i, fmt.Sprint(i, payload)))
	}
	require.NoError(t, w.Append(HardStateRecord(HardState{Term: 1, Vote: 1, Commit: 60})))
	snap := Snapshot{Term: 1, Index: 40, Membership: []byte("voters=1")}
	require.NoError(t, w.Append(SnapshotRecord(snap)))
	for i := uint64(61); i <= 70; i++ {
		appendEntries(t, w, ent(1, i, fmt.Sprint(i, payload)))
	}
	segs := w.Segments()
	require.NoError(t, w.Close())
	require.Greater(t, len(segs), 4)
	want := func(st *State) {
		t.Helper()
		var idx []uint64
		for i := uint64(41); i <= 70; i++ {
			idx = append(idx, i)
		}
		require.Equal(t, idx, indexes(st.Entries))
		require.Equal(t, HardState{Term: 1, Vote: 1, Commit: 60}, st.HardState)
		require.Equal(t, "md", string(st.Metadata))
		require.Equal(t, snap, st.Snapshot)
	}
	w, st := mustOpen(t, dir, snap, opts)
	want(st)
	require.NoError(t, w.Close())

	// Damage an entry of the first segment, which holds none after 40.
	seg := filepath.Join(dir, segs[0])
	data, err := os.ReadFile(seg)
	require.NoError(t, err)
	i := bytes.Index(data, []byte("2"+payload[:10]))
	require.Positive(t, i)
	data[i] ^= 0x01
	require.NoError(t, os.WriteFile(seg, data, 0o640))
	var ce *CorruptError
	require.ErrorAs(t, Verify(dir, nil), &ce)
	_, _, err = Open(dir, Snapshot{}, opts)
	require.ErrorAs(t, err, &ce)
	w, st = mustOpen(t, dir, snap, opts)
	want(st)
	// Appends after it go on from the last entry.
	appendEntries(t, w, ent(1, 71, "after"))
	require.NoError(t, w.Close())
	_, st = mustOpen(t, dir, snap, opts)
	require.Equal(t, uint64(71), st.Entries[len(st.Entries)-1].Index)
}

// TestOpenFindsAMarkerBeforeItsSegment: a snapshot whose marker is only in
// a segment before the one holding the entry after it (a later marker at
// the same index was carried into the new segment instead) is still found.
func TestOpenFindsAMarkerBeforeItsSegment(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{SegmentSize: 4096}
	w, _ := mustOpen(t, dir, Snapshot{}, opts)
	for i := uint64(1); i <= 5; i++ {
		appendEntries(t, w, ent(1, i, "small"))
	}
	older := Snapshot{Term: 1, Index: 5, Membership: []byte("voters=1")}
	require.NoError(t, w.Append(SnapshotRecord(older)))
	require.NoError(t, w.Append(SnapshotRecord(Snapshot{Term: 2, Index: 5})))
	// An entry too large for the segment's room: the next segment is cut
	// first, named for index 6, and carries the newer marker only.
	appendEntries(t, w, ent(2, 6, string(bytes.Repeat([]byte{'y'}, 3900))))
	require.Len(t, w.Segments(), 2)
	require.NoError(t, w.Close())
	_, st := mustOpen(t, dir, older, opts)
	require.Equal(t, []uint64{6}, indexes(st.Entries))
	require.Equal(t, older, st.Snapshot)
}

// TestOpenFromASegmentWithoutEntries: replay that starts at a segment
// holding no entry still knows the last index, so a segment cut by the first
// append is named for the entry it holds (the name Open starts from).
func TestOpenFromASegmentWithoutEntries(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{SegmentSize: 4096}
	big := string(bytes.Repeat([]byte{'z'}, 3900))
	w, _ := mustOpen(t, dir, Snapshot{}, opts)
	appendEntries(t, w, ent(1, 1, "small"))
	appendEntries(t, w, ent(1, 2, big))
	snap := Snapshot{Term: 1, Index: 2, Membership: []byte("voters=1")}
	require.NoError(t, w.Append(SnapshotRecord(snap))) // cuts the segment named for 3
	segs := w.Segments()
	require.NoError(t, w.Close())
	require.Len(t, segs, 2)
	require.Contains(t, segs[1], "-0000000000000003.wal")

	w, st := mustOpen(t, dir, snap, opts)
	require.Empty(t, st.Entries)
	appendEntries(t, w, ent(1, 3, string(bytes.Repeat([]byte{'w'}, 3950)))) // cuts the next segment
	segs = w.Segments()
	require.Len(t, segs, 3)
	require.Contains(t, segs[2], "-0000000000000003.wal")
	require.NoError(t, w.Close())
	_, st = mustOpen(t, dir, snap, opts)
	require.Equal(t, []uint64{3}, indexes(st.Entries))
}

// TestReadAllWritesNothing: ReadAll (and Verify) read a WAL as Open
// replays it, and pass over a segment a crash left half-made (.wal.tmp)
// where Open removes it.
func TestReadAllWritesNothing(t *testing.T) {
	dir := t.TempDir()
	w, _ := mustOpen(t, dir, Snapshot{}, small)
	if err := w.Append(MetadataRecord([]byte("m"))); err != nil {
		t.Fatal(err)
	}
	appendEntries(t, w, ent(1, 1, "a"), ent(1, 2, "b"))
	_ = w.Close()
	tmp := filepath.Join(dir, "0000000000000009-0000000000000003.wal.tmp")
	if err := os.WriteFile(tmp, []byte("half made"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := ReadAll(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := indexes(st.Entries); !reflect.DeepEqual(got, []uint64{1, 2}) || string(st.Metadata) != "m" {
		t.Fatalf("ReadAll: entries %v, metadata %q", got, st.Metadata)
	}
	if err := Verify(dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("ReadAll or Verify removed the half-made segment: %v", err)
	}
	w, _ = mustOpen(t, dir, Snapshot{}, small)
	_ = w.Close()
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("Open left the half-made segment: %v", err)
	}
}
