package engine

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/cairn-kv/cairn/pagefile"
)

// dumped is everything a Dump reads.
type dumped struct {
	revs             []string
	compacted, sched int64
	leases           []LeaseRecord
	auth             AuthRecord
}

func dumpAll(t *testing.T, db *pagefile.DB) dumped {
	t.Helper()
	var d dumped
	require.NoError(t, db.View(func(tx *pagefile.Tx) error {
		dump, err := NewDump(tx)
		if err != nil {
			return err
		}
		if err := dump.Revisions(func(main, sub int64, tomb bool, kv KeyValue) error {
			d.revs = append(d.revs, fmt.Sprintf("%d.%d %v %+v", main, sub, tomb, kv))
			return nil
		}); err != nil {
			return err
		}
		d.compacted, d.sched = dump.Compacted()
		if d.leases, err = dump.Leases(); err != nil {
			return err
		}
		d.auth, err = dump.Auth()
		return err
	}))
	return d
}

// TestRecordsRoundTrip: a store with history (puts, deletes, several
// writes a revision), a finished compaction, leases with keys, users and
// roles, dumped and loaded into a new page file, opens as the same store:
// the same records, the same reads at every revision kept, and it checks
// whole.
func TestRecordsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	dir := t.TempDir()
	db, s := openStore(t, filepath.Join(dir, "a"))
	grantLeases(t, s, 7, 9)
	for i := range 200 {
		w := s.Write()
		for range 1 + rng.Intn(3) {
			k := []byte(fmt.Sprintf("k%02d", rng.Intn(30)))
			if w.wrote(k) {
				continue
			}
			if rng.Intn(4) == 0 {
				_, err := w.DeleteRange(k, nil)
				require.NoError(t, err)
			} else {
				_, err := w.Put(k, []byte(fmt.Sprint(i)), []int64{0, 7, 9}[rng.Intn(3)])
				require.NoError(t, err)
			}
		}
		w.End()
	}
	require.NoError(t, s.Compact(s.Rev()-50))
	finishCompaction(t, s)
	hashed, err := HashPassword("pw", 4)
	require.NoError(t, err)
	require.NoError(t, s.RoleAdd("r"))
	require.NoError(t, s.RoleGrantPermission("r", &Permission{Type: PermReadWrite, Key: []byte("k"), RangeEnd: []byte("l")}))
	require.NoError(t, s.UserAdd("u", hashed, false))
	require.NoError(t, s.UserAdd("cn", nil, true))
	require.NoError(t, s.UserGrantRole("u", "r"))
	require.NoError(t, s.RoleAdd(RootName))
	require.NoError(t, s.UserAdd(RootName, hashed, false))
	require.NoError(t, s.UserGrantRole(RootName, RootName))
	require.NoError(t, s.AuthEnable())
	require.NoError(t, s.Commit())
	rev, compacted := s.Rev(), s.CompactRev()
	want := dumpAll(t, db)

	db2, err := pagefile.Open(filepath.Join(dir, "b"), &pagefile.Options{NoSync: true, InitialMmapSize: 1 << 22})
	require.NoError(t, err)
	require.NoError(t, db.View(func(src *pagefile.Tx) error {
		dump, err := NewDump(src)
		if err != nil {
			return err
		}
		return db2.Update(func(tx *pagefile.Tx) error {
			l, err := NewLoad(tx)
			if err != nil {
				return err
			}
			if err := dump.Revisions(l.Revision); err != nil {
				return err
			}
			if err := l.Compacted(dump.Compacted()); err != nil {
				return err
			}
			leases, err := dump.Leases()
			if err != nil {
				return err
			}
			for _, le := range leases {
				if err := l.Lease(le); err != nil {
					return err
				}
			}
			a, err := dump.Auth()
			if err != nil {
				return err
			}
			return l.Auth(a)
		})
	}))
	require.Equal(t, want, dumpAll(t, db2))
	s2, err := Open(db2)
	require.NoError(t, err)
	require.NoError(t, s2.Check())
	require.Equal(t, rev, s2.Rev())
	require.Equal(t, compacted, s2.CompactRev())
	for r := compacted; r <= rev; r++ {
		a, err := s.Range([]byte{0}, []byte{0}, RangeOptions{Rev: r})
		require.NoError(t, err)
		b, err := s2.Range([]byte{0}, []byte{0}, RangeOptions{Rev: r})
		require.NoError(t, err)
		require.Equal(t, a.KVs, b.KVs, "revision %d", r)
	}
	require.ElementsMatch(t, s.Leases(), s2.Leases())
	_, err = s2.CheckPassword("u", "pw")
	require.NoError(t, err)
	require.NoError(t, s2.Close())
	require.NoError(t, db2.Close())
	require.NoError(t, s.Close())
	require.NoError(t, db.Close())
}

// TestLoadRefuses: a Load over a store, revisions out of order, a key-less
// revision and a lease without a TTL are refused.
func TestLoadRefuses(t *testing.T) {
	db, s := openStore(t, filepath.Join(t.TempDir(), "a"))
	require.NoError(t, s.Close())
	defer db.Close()
	require.Error(t, db.Update(func(tx *pagefile.Tx) error { _, err := NewLoad(tx); return err }))

	db2, err := pagefile.Open(filepath.Join(t.TempDir(), "b"), &pagefile.Options{NoSync: true, InitialMmapSize: 1 << 22})
	require.NoError(t, err)
	defer db2.Close()
	require.NoError(t, db2.Update(func(tx *pagefile.Tx) error {
		l, err := NewLoad(tx)
		require.NoError(t, err)
		require.NoError(t, l.Revision(2, 0, false, KeyValue{Key: []byte("a"), CreateRevision: 2, ModRevision: 2, Version: 1}))
		require.Error(t, l.Revision(2, 0, false, KeyValue{Key: []byte("b")}))
		require.Error(t, l.Revision(1, 5, false, KeyValue{Key: []byte("b")}))
		require.Error(t, l.Revision(3, 0, false, KeyValue{}))
		require.Error(t, l.Lease(LeaseRecord{ID: 5}))
		return nil
	}))
}

// TestOpenReadOnly: a store opened read-only on a read-only page file
// reads as the store and checks whole, refuses a commit, and leaves the
// file as it was, byte for byte; a page file with no store is refused.
func TestOpenReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, s := openStore(t, path)
	grantLeases(t, s, 3)
	for i := range 20 {
		w := s.Write()
		_, err := w.Put([]byte(fmt.Sprintf("k%d", i%7)), []byte(fmt.Sprint(i)), []int64{0, 3}[i%2])
		require.NoError(t, err)
		w.End()
	}
	require.NoError(t, s.Commit())
	rev := s.Rev()
	require.NoError(t, s.Close())
	require.NoError(t, db.Close())
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	ro, err := pagefile.Open(path, &pagefile.Options{ReadOnly: true})
	require.NoError(t, err)
	rs, err := OpenReadOnly(ro)
	require.NoError(t, err)
	require.Equal(t, rev, rs.Rev())
	r, err := rs.Range([]byte("k"), []byte("l"), RangeOptions{})
	require.NoError(t, err)
	require.Len(t, r.KVs, 7)
	require.Equal(t, []int64{3}, rs.Leases())
	require.NoError(t, rs.Check())
	require.ErrorIs(t, rs.Commit(), errReadOnly)
	require.NoError(t, rs.Close())
	require.NoError(t, ro.Close())
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, before, after, "the page file unchanged")

	empty, err := pagefile.Open(filepath.Join(t.TempDir(), "empty"), &pagefile.Options{NoSync: true, InitialMmapSize: 1 << 22})
	require.NoError(t, err)
	require.NoError(t, empty.Close())
	ro, err = pagefile.Open(filepath.Join(filepath.Dir(empty.Path()), "empty"), &pagefile.Options{ReadOnly: true})
	require.NoError(t, err)
	defer ro.Close()
	_, err = OpenReadOnly(ro)
	require.ErrorContains(t, err, "holds no store")
}
