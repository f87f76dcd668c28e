package pagefile

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// TestChangesCarryACopy copies a file from a read transaction while
// commits go on (puts, deletes, empty values, buckets created and deleted,
// a commit rolled back), then carries the recorded changes over in rounds
// (each from a read transaction of its own, while more commits land), the
// way an online defragmentation does. The copy must hold exactly what the
// file holds after each round's commit, and pass Check.
func TestChangesCarryACopy(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	dir := t.TempDir()
	db := mustOpen(t, filepath.Join(dir, "db"), &Options{PageSize: 1024, InitialMmapSize: 1 << 20})
	defer db.Close()

	buckets := []string{"a", "b", "c"}
	mutate := func(tx *Tx, n int) {
		for range n {
			name := []byte(buckets[rng.Intn(len(buckets))])
			switch r := rng.Intn(100); {
			case r < 2:
				if tx.Bucket(name) != nil {
					require.NoError(t, tx.DeleteBucket(name))
				}
			case r < 70:
				b, err := tx.CreateBucketIfNotExists(name)
				require.NoError(t, err)
				v := fmt.Sprintf("v%d", rng.Intn(1000))
				switch rng.Intn(20) {
				case 0:
					v = ""
				case 1:
					v = string(make([]byte, 3000)) // an overflow run
				}
				require.NoError(t, b.Put(fmt.Appendf(nil, "k%03d", rng.Intn(300)), []byte(v)))
			default:
				if b := tx.Bucket(name); b != nil {
					require.NoError(t, b.Delete(fmt.Appendf(nil, "k%03d", rng.Intn(300))))
				}
			}
		}
	}
	commit := func(n int) {
		tx, err := db.Begin(true)
		require.NoError(t, err)
		mutate(tx, n)
		require.NoError(t, tx.Commit())
	}
	for range 20 {
		commit(50)
	}

	// Start recording on an empty write transaction, read from the state
	// it starts from, and copy that while commits go on.
	tx, err := db.Begin(true)
	require.NoError(t, err)
	changes, err := tx.TrackChanges()
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	src, err := db.Begin(false)
	require.NoError(t, err)
	for range 10 {
		commit(30)
	}
	// Bucket c exists, and is written no more: round 3 deletes it.
	tx, err = db.Begin(true)
	require.NoError(t, err)
	_, err = tx.CreateBucketIfNotExists([]byte("c"))
	require.NoError(t, err)
	require.NoError(t, tx.Commit())
	buckets = buckets[:2]
	// A rolled-back transaction records nothing.
	tx, err = db.Begin(true)
	require.NoError(t, err)
	b, err := tx.CreateBucketIfNotExists([]byte("rolled-back"))
	require.NoError(t, err)
	require.NoError(t, b.Put([]byte("k"), []byte("v")))
	require.NoError(t, tx.Rollback())

	cp := filepath.Join(dir, "copy")
	require.NoError(t, src.CompactTo(cp, nil))
	require.NoError(t, src.Rollback())
	dst := mustOpen(t, cp, nil)
	defer dst.Close()

	for round := range 6 {
		set := changes.Take()
		src, err := db.Begin(false)
		require.NoError(t, err)
		switch {
		case round == 3: // alone in its round
			tx, err := db.Begin(true)
			require.NoError(t, err)
			require.NoError(t, tx.DeleteBucket([]byte("c")))
			require.NoError(t, tx.Commit())
		case round < 5:
			commit(20) // lands after the read: the next round's
		}
		want := dumpTx(src)
		// Odd rounds carry the set in parts, one transaction each, as
		// the engine does.
		parts := []ChangeSet{set}
		if round%2 == 1 {
			parts = set.Split(src, 2048)
		}
		for _, part := range parts {
			dtx, err := dst.Begin(true)
			require.NoError(t, err)
			require.NoError(t, part.Apply(src, dtx))
			require.NoError(t, dtx.Commit())
		}
		require.NoError(t, src.Rollback())
		require.Empty(t, diffStates(want, state(dump(t, dst))), "round %d (%d changes)", round, set.Len())
		require.NoError(t, dst.Check(), "round %d", round)
	}

	// Once stopped, commits record nothing.
	changes.Stop()
	commit(20)
	require.Zero(t, changes.Take().Len())
	require.NoError(t, db.Check())
}

func mustOpen(t *testing.T, path string, opts *Options) *DB {
	t.Helper()
	db, err := Open(path, opts)
	require.NoError(t, err)
	return db
}

// TestEmptyBucketsKeepNoPage: empty buckets take no page, whether created
// empty or emptied by deletes (whose last page is freed); they read as
// empty through every cursor move, take keys again, survive a reopen and a
// compacted copy, and the file passes Check throughout.
func TestEmptyBucketsKeepNoPage(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db")
	db := mustOpen(t, path, &Options{PageSize: 1024})
	highWater := func(db *DB) int {
		tx, err := db.Begin(false)
		require.NoError(t, err)
		defer tx.Rollback()
		return int(tx.Size()) / 1024
	}
	fresh := highWater(db)
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"}
	require.NoError(t, db.Update(func(tx *Tx) error {
		for _, n := range names {
			if _, err := tx.CreateBucket([]byte(n)); err != nil {
				return err
			}
		}
		return nil
	}))
	// A new directory page and freelist page; the old ones are held.
	require.LessOrEqual(t, highWater(db), fresh+2, "nine empty buckets")
	require.NoError(t, db.Check())

	empty := func(db *DB, name string) {
		t.Helper()
		require.NoError(t, db.View(func(tx *Tx) error {
			b := tx.Bucket([]byte(name))
			require.NotNil(t, b, name)
			require.Zero(t, b.Stats().LeafPageN)
			c := b.Cursor()
			k, _ := c.First()
			require.Nil(t, k)
			k, _ = c.Last()
			require.Nil(t, k)
			k, _ = c.Seek([]byte("x"))
			require.Nil(t, k)
			require.Nil(t, b.Get([]byte("x")))
			return nil
		}))
	}
	for _, n := range names {
		empty(db, n)
	}
	// Filled, then emptied again: its page goes back to the free pages.
	require.NoError(t, db.Update(func(tx *Tx) error {
		b := tx.Bucket([]byte("a"))
		require.NoError(t, b.Delete([]byte("absent"))) // changes nothing
		return b.Put([]byte("k"), []byte("v"))
	}))
	require.NoError(t, db.View(func(tx *Tx) error {
		require.Equal(t, 1, tx.Bucket([]byte("a")).Stats().LeafPageN)
		return nil
	}))
	require.NoError(t, db.Update(func(tx *Tx) error { return tx.Bucket([]byte("a")).Delete([]byte("k")) }))
	empty(db, "a")
	require.NoError(t, db.Check())
	require.NoError(t, db.Update(func(tx *Tx) error { return tx.Bucket([]byte("b")).Put([]byte("k"), []byte("v")) }))
	require.NoError(t, db.Close())

	db = mustOpen(t, path, nil)
	defer db.Close()
	require.NoError(t, db.Check())
	empty(db, "a")
	cp := filepath.Join(dir, "copy")
	require.NoError(t, db.Compact(cp))
	cdb := mustOpen(t, cp, nil)
	defer cdb.Close()
	require.NoError(t, cdb.Check())
	// Two metas, the freelist, the directory and b's one leaf.
	require.Equal(t, 5, highWater(cdb))
	for _, n := range names {
		if n != "b" {
			empty(cdb, n)
		}
	}
	require.Equal(t, map[string]string{"k": "v"}, dump(t, cdb)["b"])
}

// TestChangeSetSplit: the parts of a split name every change once, each a
// whole bucket alone or keys whose values come to at most the bound (one
// key may pass it alone).
func TestChangeSetSplit(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "db"), nil)
	defer db.Close()
	set := ChangeSet{
		"a":    {Keys: map[string]struct{}{}},
		"b":    {Keys: map[string]struct{}{}},
		"gone": {Keys: map[string]struct{}{"x": {}}},
		"new":  {Whole: true},
	}
	require.NoError(t, db.Update(func(tx *Tx) error {
		for _, name := range []string{"a", "b", "new"} {
			b, err := tx.CreateBucket([]byte(name))
			require.NoError(t, err)
			for i := range 50 {
				k := fmt.Sprintf("k%03d", i)
				require.NoError(t, b.Put([]byte(k), make([]byte, 10*i)))
				if name != "new" {
					set[name].Keys[k] = struct{}{}
				}
			}
		}
		set["a"].Keys["deleted"] = struct{}{}
		return nil
	}))
	src, err := db.Begin(false)
	require.NoError(t, err)
	defer src.Rollback()

	const bound = 1000
	parts := set.Split(src, bound)
	seen := ChangeSet{}
	for i, part := range parts {
		require.NotEmpty(t, part, "part %d", i)
		size, keys := 0, 0
		for name, bc := range part {
			if bc.Whole || src.Bucket([]byte(name)) == nil {
				require.Len(t, part, 1, "part %d: a whole bucket is alone", i)
				seen[name] = bc
				continue
			}
			for k := range bc.Keys {
				size += len(k) + len(src.Bucket([]byte(name)).Get([]byte(k)))
				keys++
				sb := seen.bucket([]byte(name))
				_, dup := sb.Keys[k]
				require.False(t, dup, "part %d: %s/%s twice", i, name, k)
				sb.Keys[k] = struct{}{}
			}
		}
		if keys > 1 {
			require.LessOrEqual(t, size, bound, "part %d", i)
		}
	}
	require.Equal(t, set, seen)
	require.Greater(t, len(parts), 10)
}
