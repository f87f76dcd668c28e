package pagefile

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// TestCompactRandom compacts random databases (several buckets, one empty,
// keys and values of every size, values past a page) and checks the copy:
// it passes Check, holds exactly the same data, has no free pages, is no
// larger than the original, and takes writes afterwards.
func TestCompactRandom(t *testing.T) {
	seed := testseed.Seed(t)
	rng := rand.New(rand.NewSource(seed))
	for round := 0; round < 6; round++ {
		ps := []int{1024, 4096}[round%2]
		db := openTest(t, &Options{NoSync: true, PageSize: ps})
		err := db.Update(func(tx *Tx) error {
			if _, err := tx.CreateBucket([]byte("empty")); err != nil {
				return err
			}
			for b := 0; b < 1+rng.Intn(4); b++ {
				bk, err := tx.CreateBucket([]byte(fmt.Sprintf("bucket-%d", b)))
				if err != nil {
					return err
				}
				for i, n := 0, rng.Intn(3000); i < n; i++ {
					k := make([]byte, 1+rng.Intn(64))
					rng.Read(k)
					v := make([]byte, rng.Intn(200))
					if rng.Intn(100) == 0 {
						v = make([]byte, ps*(1+rng.Intn(4)))
					}
					rng.Read(v)
					if err := bk.Put(k, v); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "compacted")
		if err := db.Compact(dst); err != nil {
			t.Fatal(err)
		}
		c, err := Open(dst, &Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { checkAndClose(t, c) })
		if err := c.Check(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		assertSameContents(t, db, c)
		if s := c.Stats(); s.FreePageN+s.PendingPageN != 0 {
			t.Fatalf("round %d: compacted file has free pages: %+v", round, s)
		}
		if c.Size() > db.Size() {
			t.Fatalf("round %d: compacted %d bytes, original %d", round, c.Size(), db.Size())
		}
		err = c.Update(func(tx *Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("empty"))
			if err != nil {
				return err
			}
			for i := 0; i < 500; i++ {
				if err := b.Put([]byte(fmt.Sprint(i)), bytes.Repeat([]byte{'v'}, 100)); err != nil {
					return err
				}
			}
			return tx.DeleteBucket([]byte("bucket-0"))
		})
		if err != nil {
			t.Fatalf("round %d: writing to the compacted file: %v", round, err)
		}
	}
}

// TestCompactPaced: a paced copy (CompactOptions.Duty) rests between steps
// and writes the same file as one made flat out; a duty outside (0, 1] is
// refused.
func TestCompactPaced(t *testing.T) {
	dir := t.TempDir()
	db := mustOpen(t, filepath.Join(dir, "db"), &Options{NoSync: true})
	defer db.Close()
	require.NoError(t, db.Update(func(tx *Tx) error {
		b, err := tx.CreateBucket([]byte("key"))
		require.NoError(t, err)
		v := bytes.Repeat([]byte{'v'}, 1000)
		for i := range 3 * PaceStep / 1000 { // three steps of pages and more
			require.NoError(t, b.Put(fmt.Appendf(nil, "%08d", i), v))
		}
		return nil
	}))
	flat, paced := filepath.Join(dir, "flat"), filepath.Join(dir, "paced")
	require.NoError(t, db.View(func(tx *Tx) error { return tx.CompactTo(flat, nil) }))
	var rests int
	restHook = func() { rests++ }
	defer func() { restHook = nil }()
	require.NoError(t, db.View(func(tx *Tx) error { return tx.CompactTo(paced, &CompactOptions{Duty: 0.5}) }))
	require.GreaterOrEqual(t, rests, 3)
	a, err := os.ReadFile(flat)
	require.NoError(t, err)
	b, err := os.ReadFile(paced)
	require.NoError(t, err)
	require.True(t, bytes.Equal(a, b), "the paced copy differs")

	for _, duty := range []float64{-0.5, 1.5} {
		err := db.View(func(tx *Tx) error {
			return tx.CompactTo(filepath.Join(dir, fmt.Sprint("bad", duty)), &CompactOptions{Duty: duty})
		})
		require.ErrorContains(t, err, "duty")
	}
}
