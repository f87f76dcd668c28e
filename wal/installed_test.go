package wal

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestInstalledSnapshotReplacesLog: a follower whose log went past the
// snapshot it then received (entries of an old term at and after the
// snapshot's index) installs it; replay from the installed marker holds
// only what was written after it, across rotation, and a local snapshot's
// marker keeps the entries written before it.
func TestInstalledSnapshotReplacesLog(t *testing.T) {
	dir := t.TempDir()
	opts := &Options{SegmentSize: 4096}
	w, _ := mustOpen(t, dir, Snapshot{}, opts)
	payload := string(bytes.Repeat([]byte{'x'}, 300))
	// The old log: entries 1..40 of term 1, of which the leader's
	// snapshot at 30 (term 2) shares nothing past 20.
	for i := uint64(1); i <= 40; i++ {
		appendEntries(t, w, ent(1, i, fmt.Sprint("old", i, payload)))
	}
	inst := Snapshot{Term: 2, Index: 30, Membership: []byte("m"), Installed: true}
	require.NoError(t, w.Append(SnapshotRecord(inst), HardStateRecord(HardState{Term: 2, Commit: 30})))
	// A restart before any entry follows: the old entries past 30 are not
	// the log's.
	require.NoError(t, w.Close())
	from := Snapshot{Term: 2, Index: 30}
	w, st := mustOpen(t, dir, from, opts)
	require.Empty(t, indexes(st.Entries), "replay right after the installed snapshot")
	for i := uint64(31); i <= 33; i++ {
		appendEntries(t, w, ent(2, i, fmt.Sprint("new", i)))
	}
	require.NoError(t, w.Close())

	w, st = mustOpen(t, dir, from, opts)
	require.Equal(t, []uint64{31, 32, 33}, indexes(st.Entries), "replay from the installed snapshot")
	for _, e := range st.Entries {
		require.Equal(t, uint64(2), e.Term)
	}
	require.Equal(t, []byte("m"), st.Snapshot.Membership)

	// Appends rotate past several segments: the marker carried into them
	// must not drop the entries after the installed one.
	for i := uint64(34); i <= 80; i++ {
		appendEntries(t, w, ent(2, i, fmt.Sprint("new", i, payload)))
	}
	require.Greater(t, len(w.Segments()), 3)
	require.NoError(t, w.Close())
	w, st = mustOpen(t, dir, from, opts)
	want := make([]uint64, 0, 50)
	for i := uint64(31); i <= 80; i++ {
		want = append(want, i)
	}
	require.Equal(t, want, indexes(st.Entries))

	// A local snapshot at 60, written after entries up to 80, keeps them;
	// its segments released, replay from it still drops nothing after it.
	local := Snapshot{Term: 2, Index: 60}
	require.NoError(t, w.Append(SnapshotRecord(local)))
	require.NoError(t, w.ReleaseTo(60, 0))
	require.NoError(t, w.Close())
	_, st = mustOpen(t, dir, local, opts)
	require.Equal(t, want[30:], indexes(st.Entries))
	require.NoError(t, Verify(dir, nil))
}

// TestReplayBeforeInstalledRefused: replay asked to start before an
// installed snapshot (its .snap file lost) is refused rather than handing
// back a log with a hole where the snapshot was.
func TestReplayBeforeInstalledRefused(t *testing.T) {
	dir := t.TempDir()
	w, _ := mustOpen(t, dir, Snapshot{}, small)
	appendEntries(t, w, ent(1, 1, "a"), ent(1, 2, "b"))
	require.NoError(t, w.Append(SnapshotRecord(Snapshot{Term: 2, Index: 10, Installed: true})))
	appendEntries(t, w, ent(2, 11, "c"))
	require.NoError(t, w.Close())
	_, _, err := Open(dir, Snapshot{}, small)
	require.ErrorIs(t, err, ErrInstalledAfterStart)
}
