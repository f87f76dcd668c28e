package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-kv/cairn/pagefile"
	"github.com/stretchr/testify/require"
)

// installPair builds two stores that apply the same entries, the second
// stopping at behind: a leader and a follower that fell back. The writes
// put and delete keys, attach leases and add a user, so every part of
// the state has something to move.
func installPair(t *testing.T, total, behind int) (leader, follower *Store, dir string) {
	t.Helper()
	dir = t.TempDir()
	_, leader = openStore(t, filepath.Join(dir, "leader"))
	_, follower = openStore(t, filepath.Join(dir, "follower"))
	t.Cleanup(func() { leader.Close(); follower.Close() })
	apply := func(s *Store, i int) {
		idx := uint64(i)
		var err error
		switch {
		case i%10 == 1:
			_, _, err = s.ApplyLeaseGrant(idx, int64(i), 60)
		case i%10 == 5:
			_, err = s.ApplyChange(idx, func() error { return s.UserAdd(fmt.Sprint("user", i), nil, true) })
		case i%7 == 0:
			_, _, err = s.Apply(idx, &TxnRequest{Success: []Op{{Type: OpDelete, Key: []byte(fmt.Sprint("k", i%13))}}})
		default:
			var lease int64
			if i%10 != 0 {
				lease = int64(i/10*10 + 1) // granted at the start of its ten
			}
			_, _, err = s.Apply(idx, &TxnRequest{Success: []Op{{Type: OpPut, Key: []byte(fmt.Sprint("k", i%13)), Value: []byte(fmt.Sprint("v", i)), Lease: lease}}})
		}
		require.NoError(t, err)
	}
	for i := 1; i <= total; i++ {
		apply(leader, i)
		if i <= behind {
			apply(follower, i)
		}
	}
	require.NoError(t, leader.Commit())
	require.NoError(t, follower.Commit())
	return leader, follower, dir
}

// sendCopy writes a copy of s's page file, as a snapshot send reads it
// (one read transaction), to a file in dir.
func sendCopy(t *testing.T, s *Store, dir string) string {
	t.Helper()
	tx, err := s.SnapshotTx()
	require.NoError(t, err)
	defer tx.Rollback()
	path := filepath.Join(dir, "received")
	f, err := os.Create(path)
	require.NoError(t, err)
	_, err = tx.WriteTo(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return path
}

func reopen(path string) (*pagefile.DB, error) {
	return pagefile.Open(path, &pagefile.Options{NoSync: true, InitialMmapSize: 1 << 22})
}

// TestInstall: a follower installs the leader's page file and is then the
// leader's state in every part (hash, ranges, leases with their keys,
// users, applied index), passes its checker, and goes on applying; its
// watchers get the revisions they missed, in order, from the new history.
func TestInstall(t *testing.T) {
	leader, follower, dir := installPair(t, 120, 40)
	before := follower.Rev()
	ws := follower.NewWatchStream()
	defer ws.Close()
	_, err := ws.Watch(WatchOptions{Key: []byte("k"), End: []byte("l")})
	require.NoError(t, err)
	_, err = ws.Watch(WatchOptions{Key: []byte("k3")})
	require.NoError(t, err)

	require.NoError(t, follower.Install(sendCopy(t, leader, dir), reopen))
	require.NoError(t, follower.Check())
	require.Equal(t, leader.Rev(), follower.Rev())
	require.Equal(t, leader.AppliedIndex(), follower.AppliedIndex())
	ci, err := follower.ConsistentIndex()
	require.NoError(t, err)
	require.Equal(t, uint64(120), ci)
	lh, err := leader.HashKV(0)
	require.NoError(t, err)
	fh, err := follower.HashKV(0)
	require.NoError(t, err)
	require.Equal(t, lh, fh)
	require.Equal(t, leader.Leases(), follower.Leases())
	for _, id := range leader.Leases() {
		li, err := leader.LeaseTimeToLive(id, true)
		require.NoError(t, err)
		fi, err := follower.LeaseTimeToLive(id, true)
		require.NoError(t, err)
		require.Equal(t, li.Keys, fi.Keys, "keys of lease %d", id)
	}
	require.Equal(t, leader.UserList(), follower.UserList())
	lr, err := leader.Range([]byte{0}, []byte{0}, RangeOptions{})
	require.NoError(t, err)
	fr, err := follower.Range([]byte{0}, []byte{0}, RangeOptions{})
	require.NoError(t, err)
	require.Equal(t, lr.KVs, fr.KVs)

	// Every revision after the follower's, once, in order, to each watcher.
	want := map[int64][]int64{}
	hist, err := leader.history(before+1, leader.Rev(), false)
	require.NoError(t, err)
	for _, ev := range hist {
		want[0] = append(want[0], ev.KV.ModRevision)
		if string(ev.KV.Key) == "k3" {
			want[1] = append(want[1], ev.KV.ModRevision)
		}
	}
	require.NotEmpty(t, want[1])
	got := map[int64][]int64{}
	for len(got[0]) < len(want[0]) || len(got[1]) < len(want[1]) {
		r := next(t, ws)
		require.False(t, r.Canceled)
		for _, ev := range r.Events {
			got[r.WatchID] = append(got[r.WatchID], ev.KV.ModRevision)
		}
	}
	require.Equal(t, want, got)

	// It goes on from the installed state.
	_, ok, err := follower.Apply(121, &TxnRequest{Success: []Op{{Type: OpPut, Key: []byte("k-after"), Value: []byte("x")}}})
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, follower.Commit())
	require.NoError(t, follower.Check())
	require.Equal(t, leader.Rev()+1, next(t, ws).Revision)
}

// TestInstallPastCompaction: a watcher whose next revision the installed
// state has compacted away is cancelled with the compacted revision (its
// client lists again), not silently given a gap.
func TestInstallPastCompaction(t *testing.T) {
	leader, follower, dir := installPair(t, 60, 20)
	ws := follower.NewWatchStream()
	defer ws.Close()
	_, err := ws.Watch(WatchOptions{Key: []byte("k"), End: []byte("l")})
	require.NoError(t, err)
	_, err = leader.ApplyCompact(61, leader.Rev()-2)
	require.NoError(t, err)
	finishCompaction(t, leader)
	require.NoError(t, follower.Install(sendCopy(t, leader, dir), reopen))
	r := next(t, ws)
	require.True(t, r.Canceled)
	require.Equal(t, leader.CompactRev(), r.CompactRevision)
	require.NoError(t, follower.Check())
}
