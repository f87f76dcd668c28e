package engine

import (
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/stretchr/testify/require"
)

// mevent is one change in the naive model.
type mevent struct {
	rev     int64
	value   string
	lease   int64
	deleted bool
}

// kvModel is the naive version: key -> every change, never compacted.
type kvModel map[string][]mevent

// at returns key as of rev, as the store must.
func (m kvModel) at(key string, rev int64) (KeyValue, bool) {
	evs := m[key]
	last := -1
	for i, e := range evs {
		if e.rev <= rev {
			last = i
		}
	}
	if last < 0 || evs[last].deleted {
		return KeyValue{}, false
	}
	first := last
	for first > 0 && !evs[first-1].deleted {
		first--
	}
	e := evs[last]
	return KeyValue{Key: []byte(key), Value: []byte(e.value), Lease: e.lease, ModRevision: e.rev,
		CreateRevision: evs[first].rev, Version: int64(last - first + 1)}, true
}

func (m kvModel) rangeAt(start, end string, rev int64) []KeyValue {
	var out []KeyValue
	for k := range m {
		if k < start || (end != "" && end != "\x00" && k >= end) || (end == "" && k != start) {
			continue
		}
		if kv, ok := m.at(k, rev); ok {
			out = append(out, kv)
		}
	}
	sort.Slice(out, func(i, j int) bool { return string(out[i].Key) < string(out[j].Key) })
	return out
}

// sortAndFilter is the model of a read's filters and sort over the keys
// of a range in key order: a target other than the key sorts ascending
// unless descending is asked; ties are in key order.
func sortAndFilter(kvs []KeyValue, o RangeOptions) []KeyValue {
	var out []KeyValue
	for _, kv := range kvs {
		if (o.MinModRev == 0 || kv.ModRevision >= o.MinModRev) && (o.MaxModRev == 0 || kv.ModRevision <= o.MaxModRev) &&
			(o.MinCreateRev == 0 || kv.CreateRevision >= o.MinCreateRev) && (o.MaxCreateRev == 0 || kv.CreateRevision <= o.MaxCreateRev) {
			out = append(out, kv)
		}
	}
	field := func(kv KeyValue) string {
		switch o.SortTarget {
		case SortByVersion:
			return fmt.Sprintf("%020d", kv.Version)
		case SortByCreate:
			return fmt.Sprintf("%020d", kv.CreateRevision)
		case SortByMod:
			return fmt.Sprintf("%020d", kv.ModRevision)
		case SortByValue:
			return string(kv.Value)
		}
		return string(kv.Key)
	}
	sort.Slice(out, func(i, j int) bool {
		fi, fj := field(out[i]), field(out[j])
		if fi != fj {
			return (fi < fj) != (o.SortOrder == SortDescend)
		}
		return string(out[i].Key) < string(out[j].Key)
	})
	return out
}

// finishCompaction runs the compaction under way to its end.
func finishCompaction(t *testing.T, s *Store) {
	t.Helper()
	for {
		done, err := s.CompactStep(100)
		if err != nil {
			t.Fatal(err)
		}
		if done {
			return
		}
	}
}

// requireHappened logs what a randomized run did and fails it if any of
// the named operations never happened (the run tested less than it says).
func requireHappened(t *testing.T, counts map[string]int, names ...string) {
	t.Helper()
	t.Logf("%v", counts)
	for _, c := range names {
		if counts[c] == 0 {
			t.Fatalf("no %s happened: %v", c, counts)
		}
	}
}

// grantLeases grants leases with the given ids (a minute each) and
// commits them, for tests whose writes name leases.
func grantLeases(t *testing.T, s *Store, ids ...int64) {
	t.Helper()
	for _, id := range ids {
		if _, err := s.LeaseGrant(id, 60); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
}

func openStore(t testing.TB, path string) (*pagefile.DB, *Store) {
	t.Helper()
	db, err := pagefile.Open(path, &pagefile.Options{NoSync: true, InitialMmapSize: 1 << 22})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(db)
	if err != nil {
		t.Fatal(err)
	}
	return db, s
}

// TestStoreAgainstModel runs random write transactions (puts and single-key
// and range deletes, several per revision), batch commits, compactions and
// restarts against a naive model that keeps every change, and checks ranges
// with every option at random revisions, the compacted and future revision
// errors, and the whole store at the end.
func TestStoreAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	path := filepath.Join(t.TempDir(), "db")
	db, s := openStore(t, path)
	grantLeases(t, s, 1, 2)
	m := kvModel{}
	key := func() string { return fmt.Sprintf("k%02d", rng.Intn(25)) }
	rev, compacted := int64(1), int64(0) // a fresh store is at revision 1
	var commits, compactions, restarts int
	for step := 0; step < 3000; step++ {
		if rng.Intn(4) == 0 {
			// The compaction under way goes on a little.
			if _, err := s.CompactStep(1 + rng.Intn(8)); err != nil {
				t.Fatal(err)
			}
		}
		switch r := rng.Intn(100); {
		case r < 55: // a write transaction
			w := s.Write()
			used := map[string]bool{}
			changed := false
			for i := 0; i < 1+rng.Intn(3); i++ {
				k := key()
				if used[k] {
					continue
				}
				if rng.Intn(4) == 0 {
					end := ""
					if rng.Intn(3) == 0 {
						end = key()
					}
					var endB []byte
					if end != "" {
						if end <= k {
							continue
						}
						endB = []byte(end)
					}
					victims := m.rangeAt(k, end, w.Rev())
					clash := false
					for _, v := range victims {
						if used[string(v.Key)] {
							clash = true
						}
					}
					deleted, err := w.DeleteRange([]byte(k), endB)
					if clash {
						if !errors.Is(err, ErrDuplicateOp) {
							t.Fatalf("step %d: delete over a key written in the same txn: %v", step, err)
						}
						continue
					}
					if err != nil || len(deleted) != len(victims) {
						t.Fatalf("step %d: DeleteRange(%s, %q) deleted %d (%v), want %d", step, k, end, len(deleted), err, len(victims))
					}
					for _, v := range victims {
						m[string(v.Key)] = append(m[string(v.Key)], mevent{rev: w.Rev(), deleted: true})
						used[string(v.Key)] = true
						changed = true
					}
				} else {
					val := fmt.Sprintf("v%d-%d", step, rng.Intn(1000))
					lease := int64(rng.Intn(3))
					prev, err := w.Put([]byte(k), []byte(val), lease)
					if err != nil {
						t.Fatal(err)
					}
					want, existed := m.at(k, w.Rev()-1)
					if existed != (prev != nil) || (prev != nil && string(prev.Value) != string(want.Value)) {
						t.Fatalf("step %d: Put(%s) prev = %+v, want %+v (existed %v)", step, k, prev, want, existed)
					}
					m[k] = append(m[k], mevent{rev: w.Rev(), value: val, lease: lease})
					used[k] = true
					changed = true
				}
			}
			w.End()
			if changed {
				rev = w.Rev()
			}
			if s.Rev() != rev {
				t.Fatalf("step %d: store at revision %d, want %d", step, s.Rev(), rev)
			}
		case r < 65:
			if err := s.Commit(); err != nil {
				t.Fatal(err)
			}
			commits++
		case r < 68 && rev > compacted:
			c := compacted + 1 + rng.Int63n(rev-compacted)
			if err := s.Compact(c); err != nil {
				t.Fatal(err)
			}
			compacted = c
			compactions++
			if err := s.Compact(c); !errors.Is(err, ErrCompacted) {
				t.Fatalf("compacting twice to %d: %v", c, err)
			}
		case r < 70: // restart from what is committed
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			_ = db.Close()
			db, s = openStore(t, path)
			restarts++
			if s.Rev() != rev || s.CompactRev() != compacted {
				t.Fatalf("step %d: reopened at revision %d compacted %d, want %d and %d", step, s.Rev(), s.CompactRev(), rev, compacted)
			}
		default: // a read
			at := rev
			if rev > compacted && rng.Intn(2) == 0 {
				at = compacted + rng.Int63n(rev-compacted+1)
			}
			a, end := key(), ""
			switch rng.Intn(3) {
			case 0:
				end = key()
				if end <= a {
					end = "\x00"
				}
			case 1:
				end = "\x00"
			}
			var endB []byte
			if end != "" {
				endB = []byte(end)
			}
			o := RangeOptions{Rev: at, KeysOnly: rng.Intn(4) == 0, CountOnly: rng.Intn(6) == 0}
			if rng.Intn(3) == 0 {
				o.Limit = 1 + rng.Intn(4)
			}
			if rng.Intn(3) == 0 {
				o.SortOrder, o.SortTarget = SortOrder(rng.Intn(3)), SortTarget(rng.Intn(5))
			}
			if rng.Intn(4) == 0 {
				bound := func() int64 {
					if rng.Intn(2) == 0 {
						return 0
					}
					return 1 + rng.Int63n(rev+1)
				}
				o.MinModRev, o.MaxModRev, o.MinCreateRev, o.MaxCreateRev = bound(), bound(), bound(), bound()
			}
			res, err := s.Range([]byte(a), endB, o)
			if at != 0 && at < compacted {
				if !errors.Is(err, ErrCompacted) {
					t.Fatalf("read below the compaction: %v", err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("step %d: Range(%s, %q, %+v): %v", step, a, end, o, err)
			}
			if at == 0 {
				at = rev // revision 0 reads the current one
			}
			want := m.rangeAt(a, end, at)
			if res.Count != len(want) || res.Rev != rev {
				t.Fatalf("step %d: Range(%s, %q, %+v): count %d rev %d, want %d and %d", step, a, end, o, res.Count, res.Rev, len(want), rev)
			}
			if o.CountOnly {
				if len(res.KVs) != 0 {
					t.Fatalf("count-only range returned keys")
				}
				continue
			}
			want = sortAndFilter(want, o)
			if more := o.Limit > 0 && len(want) > o.Limit; more != res.More {
				t.Fatalf("step %d: Range(%s, %q, %+v): more %v, want %v", step, a, end, o, res.More, more)
			}
			if o.Limit > 0 && len(want) > o.Limit {
				want = want[:o.Limit]
			}
			if len(res.KVs) != len(want) {
				t.Fatalf("step %d: Range(%s, %q, %+v): %d keys, want %d", step, a, end, o, len(res.KVs), len(want))
			}
			for i, kv := range res.KVs {
				w := want[i]
				if o.KeysOnly {
					w.Value = nil
				}
				if string(kv.Key) != string(w.Key) || string(kv.Value) != string(w.Value) || kv.CreateRevision != w.CreateRevision ||
					kv.ModRevision != w.ModRevision || kv.Version != w.Version || kv.Lease != w.Lease {
					t.Fatalf("step %d: key %d = %+v, want %+v", step, i, kv, w)
				}
			}
		}
	}
	t.Logf("revision %d, %d commits, %d compactions (to %d), %d restarts", rev, commits, compactions, compacted, restarts)
	if commits == 0 || compactions == 0 || restarts == 0 {
		t.Fatal("the run did not commit, compact and restart")
	}
	if _, err := s.Range([]byte("a"), nil, RangeOptions{Rev: rev + 1}); !errors.Is(err, ErrFutureRev) {
		t.Fatalf("read past the current revision: %v", err)
	}
	finishCompaction(t, s)
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
}

// TestConcurrentReads: readers range while the writer writes, commits and
// compacts (run with -race). Every read is either refused as compacted or
// returns keys in order, each at or below the revision read.
func TestConcurrentReads(t *testing.T) {
	db, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer func() { _ = s.Close(); _ = db.Close() }()
	done := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				at := int64(0)
				if cur := s.Rev(); i%2 == 1 && cur > 0 {
					at = cur - int64(i%7)
				}
				res, err := s.Range([]byte("k"), []byte("\x00"), RangeOptions{Rev: max(at, 0)})
				if errors.Is(err, ErrCompacted) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				for j, kv := range res.KVs {
					if (at > 0 && kv.ModRevision > at) || (j > 0 && string(res.KVs[j-1].Key) >= string(kv.Key)) {
						errs <- fmt.Errorf("reader %d at %d: key %q@%d out of place", r, at, kv.Key, kv.ModRevision)
						return
					}
				}
				if i%10 == 0 && at > 0 {
					// A past revision's hash holds still while writes and
					// commits go on (a batch may commit between taking the
					// buffer and the page file: the same write, once).
					h1, err1 := s.HashKV(at)
					h2, err2 := s.HashKV(at)
					if err1 == nil && err2 == nil && h1.CompactRev == h2.CompactRev && h1 != h2 {
						errs <- fmt.Errorf("reader %d: revision %d hashes %+v, then %+v", r, at, h1, h2)
						return
					}
				}
			}
		}(r)
	}
	for i := 0; i < 2000; i++ {
		w := s.Write()
		if _, err := w.Put([]byte(fmt.Sprintf("k%02d", i%40)), []byte(fmt.Sprint(i)), 0); err != nil {
			t.Fatal(err)
		}
		w.End()
		if i%50 == 49 {
			if err := s.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if i%300 == 299 {
			if err := s.Compact(s.Rev() - 20); err != nil {
				t.Fatal(err)
			}
			finishCompaction(t, s)
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestWritesKeepNoCallerBuffer: a request's key and value buffers may be
// reused once the write returns; reads from the open batch, from the page
// file after a commit, and the event a watcher got all keep what was
// written.
func TestWritesKeepNoCallerBuffer(t *testing.T) {
	_, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	ws := s.NewWatchStream()
	defer ws.Close()
	if _, err := ws.Watch(WatchOptions{Key: []byte("k"), End: []byte("l")}); err != nil {
		t.Fatal(err)
	}
	key, val := []byte("k1"), []byte("value-1")
	if _, err := s.Txn(&TxnRequest{Success: []Op{{Type: OpPut, Key: key, Value: val}}}); err != nil {
		t.Fatal(err)
	}
	copy(key, "zz")
	copy(val, "XXXXXXX")
	check := func(when string) {
		t.Helper()
		res, err := s.Range([]byte("k1"), nil, RangeOptions{})
		if err != nil || len(res.KVs) != 1 || string(res.KVs[0].Key) != "k1" || string(res.KVs[0].Value) != "value-1" {
			t.Fatalf("%s: read %+v %v", when, res, err)
		}
	}
	check("in the open batch")
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	check("after the commit")
	r := <-ws.Chan()
	if len(r.Events) != 1 || string(r.Events[0].KV.Key) != "k1" || string(r.Events[0].KV.Value) != "value-1" {
		t.Fatalf("event %+v", r.Events)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestFailedCommitLeavesNoBatch: a commit whose write fails leaves the
// store without a batch (the page file rolled it back): a second commit
// says so rather than writing into the finished transaction, and Close
// has nothing left to commit.
func TestFailedCommitLeavesNoBatch(t *testing.T) {
	efs := vfs.NewErrorFS(vfs.Default)
	db, err := pagefile.Open(filepath.Join(t.TempDir(), "db"), &pagefile.Options{FS: efs, InitialMmapSize: 1 << 22})
	require.NoError(t, err)
	defer db.Close()
	s, err := Open(db)
	require.NoError(t, err)
	_, ok, err := s.Apply(1, &TxnRequest{Success: []Op{{Type: OpPut, Key: []byte("k"), Value: []byte("v")}}})
	require.True(t, ok)
	require.NoError(t, err)
	efs.Inject(vfs.FaultWrite, 1, vfs.ErrInjected, true)
	require.ErrorIs(t, s.Commit(), vfs.ErrInjected)
	require.ErrorIs(t, s.Commit(), errNoBatch)
	require.NoError(t, s.Close())
}

// TestBumpRevision: a bump raises the revision past the last write and
// compacts there, across a restart (the compaction finished or not):
// reads at any older revision are refused as compacted, the keys keep
// their latest values, and the next write is one past the bump.
func TestBumpRevision(t *testing.T) {
	for _, finish := range []bool{true, false} {
		t.Run(fmt.Sprintf("finished=%v", finish), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "db")
			db, s := openStore(t, path)
			for i := range 5 {
				w := s.Write()
				_, err := w.Put([]byte(fmt.Sprintf("k%d", i%2)), []byte(fmt.Sprint(i)), 0)
				require.NoError(t, err)
				w.End()
			}
			require.NoError(t, s.Commit())
			require.Equal(t, int64(6), s.Rev())
			require.Error(t, s.BumpRevision(0))
			require.NoError(t, s.BumpRevision(1000))
			if finish {
				finishCompaction(t, s)
				require.NoError(t, s.Commit())
			}
			require.NoError(t, s.Close())
			require.NoError(t, db.Close())

			db, s = openStore(t, path)
			defer db.Close()
			defer s.Close()
			finishCompaction(t, s)
			require.Equal(t, int64(1006), s.Rev())
			require.Equal(t, int64(1006), s.CompactRev())
			_, err := s.Range([]byte("k"), []byte("l"), RangeOptions{Rev: 6})
			require.ErrorIs(t, err, ErrCompacted)
			r, err := s.Range([]byte("k"), []byte("l"), RangeOptions{})
			require.NoError(t, err)
			require.Len(t, r.KVs, 2)
			require.Equal(t, "4", string(r.KVs[0].Value))
			require.Equal(t, "3", string(r.KVs[1].Value))
			w := s.Write()
			_, err = w.Put([]byte("k0"), []byte("after"), 0)
			require.NoError(t, err)
			w.End()
			r, err = s.Range([]byte("k0"), nil, RangeOptions{})
			require.NoError(t, err)
			require.Equal(t, int64(1007), r.KVs[0].ModRevision)
			require.NoError(t, s.Commit())
			require.NoError(t, s.Check())
		})
	}
}
