package pagefile

import (
	"encoding/binary"
	"math/rand"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// TestSmallCommitsWriteRuns: once warmed up, commits of one in-order put
// write their pages in runs, by reusing the runs earlier commits freed.
// Page-by-page reuse settles into interleaved pages and one write per page.
func TestSmallCommitsWriteRuns(t *testing.T) {
	db := openTest(t, &Options{NoSync: true})
	key := make([]byte, 16)
	var before TxStats
	for i := 0; i < 600; i++ {
		if i == 300 {
			before = db.Stats().TxStats
		}
		err := db.Update(func(tx *Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("key"))
			if err != nil {
				return err
			}
			binary.BigEndian.PutUint64(key[8:], uint64(i))
			return b.Put(key, make([]byte, 256))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	after := db.Stats().TxStats
	// Write counts the meta's write too: one per commit.
	writes, pages := after.Write-before.Write-300, after.PageCount-before.PageCount
	t.Logf("300 single-put commits: %d page runs in %d writes", pages, writes)
	if float64(writes) > 0.75*float64(pages) {
		t.Fatalf("300 single-put commits wrote %d page runs in %d writes: pages are not being kept together", pages, writes)
	}
}

// TestSmallCommitChurnStaysBounded: small commits that update and delete
// keys of a fixed set do not grow the file past a small multiple of the
// largest tree they ever built.
func TestSmallCommitChurnStaysBounded(t *testing.T) {
	seed := testseed.Seed(t)
	rng := rand.New(rand.NewSource(seed))
	const ps = 1024
	db := openTest(t, &Options{NoSync: true, PageSize: ps})
	var maxLive int64
	for i := 0; i < 8000; i++ {
		err := db.Update(func(tx *Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			for j := 0; j < 1+rng.Intn(5); j++ {
				k := []byte{byte(rng.Intn(200))}
				if rng.Intn(3) == 0 {
					err = b.Delete(k)
				} else {
					err = b.Put(k, make([]byte, rng.Intn(300)))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		_ = db.View(func(tx *Tx) error {
			s := tx.Bucket([]byte("b")).Stats()
			// The live tree, the directory and freelist pages, the metas.
			live := int64(s.LeafAlloc+s.BranchAlloc) + 4*ps
			maxLive = max(maxLive, live)
			return nil
		})
	}
	size := db.Size()
	t.Logf("file %d bytes, largest live tree %d bytes (%.2fx)", size, maxLive, float64(size)/float64(maxLive))
	if size > 2*maxLive {
		t.Fatalf("file is %d bytes, more than twice the largest live tree (%d bytes)", size, maxLive)
	}
}
