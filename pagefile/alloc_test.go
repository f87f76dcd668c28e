package pagefile

import (
	"encoding/binary"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

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

// TestFreelistRoomForTwoNewExtents: the run a commit takes for its freelist
// is sized before two changes that each add an extent: taking its pages
// from the front of a free extent that adjoins one still pending from an
// earlier transaction (merged into one until then), and giving back the
// unused end of the commit's reserved run. A freelist whose extents fill
// its run exactly once sized must still fit after both.
func TestFreelistRoomForTwoNewExtents(t *testing.T) {
	const ps = 1024
	db, tx := craftTx(t, ps)

	// What the freelist will hold, held: the old freelist page, freed by
	// this commit. Free once sized: the pending extent and the extent
	// after it merged into one, and singles, as many as make a two-page run
	// exactly full.
	room := (2*ps - pageHeaderSize - freelistCounts) / extentSize
	singles := room - 1 /* the merged pair */ - 1 /* held */ - 2 /* the two to come */ + 1 /* sized for */
	fl := db.freelist
	fl.pending[tx.meta.txid-1] = []extent{{100, 2}}
	fl.pendingN = 2
	fl.free = []extent{{102, 8}}
	for i := range singles {
		fl.free = append(fl.free, extent{pgid(1000 + 2*i), 1})
	}
	fl.freeN = pgid(8 + singles)
	// The commit's reserved run, one page of it unused: too short for the
	// freelist's two pages, which come from the first free extent long
	// enough, the one after the pending extent.
	fl.allocs = append(fl.allocs, alloc{e: extent{5000, 4}, fromFree: true})
	tx.run.from, tx.run.next, tx.run.end = 5000, 5003, 5004

	free, held := fl.persisted(tx.meta.txid)
	sized := len(free) + len(held) + 1 // and the old freelist page, freed first
	require.Equal(t, room, sized+1, "sized for one more, the run is two pages exactly")

	require.NoError(t, tx.writeFreelist())
	id := tx.meta.freelist
	require.Equal(t, pgid(102), id, "the freelist's run comes from the front of the extent after the pending one")
	buf := tx.pages[id]
	gotFree, gotHeld, err := decodeFreelist(buf, id, 1<<20)
	require.NoError(t, err)
	free, held = fl.persisted(tx.meta.txid)
	require.Equal(t, sized+2, len(free)+len(held), "two extents more than when sized")
	require.Greater(t, freelistBytes(len(free), len(held)), 2*ps, "more than two pages hold")
	require.Equal(t, free, gotFree)
	require.Equal(t, held, gotHeld)
}

// TestExtensionRunGrowsToFit: a commit's run taken at the end of the file
// that has pages left but too few for a node grows to fit it, where it
// used to leave its unused pages between it and the pages taken next, and
// giving them back (releaseRun) panicked: "unreserve of a run that was not
// reserved". Found by a defragmentation benchmark (a fresh copy has no
// free pages, so small commits take their runs at the end).
func TestExtensionRunGrowsToFit(t *testing.T) {
	const ps = 4096
	db, tx := craftTx(t, ps)
	fl := db.freelist
	require.Empty(t, fl.free, "a new file has no free pages")

	// A two-page run at the end, as reserveRun takes for a small commit.
	start := tx.meta.highWater
	tx.meta.highWater += 2
	fl.noteExtend(start, 2)
	tx.run.from, tx.run.next, tx.run.end = start, start, start+2

	id, _, err := tx.allocate(ps)
	require.NoError(t, err)
	require.Equal(t, start, id)
	id, _, err = tx.allocate(2 * ps) // one page left in the run
	require.NoError(t, err)
	require.Equal(t, start+1, id, "the run grew to fit")
	require.Equal(t, start+3, tx.meta.highWater)
	require.NotPanics(t, tx.releaseRun)
	require.Equal(t, start+3, tx.meta.highWater)
	require.Equal(t, []alloc{{e: extent{start, 3}}}, fl.allocs)
}

// craftTx opens a new file of page size ps and begins a write transaction
// whose freelist state a test sets by hand. The file is closed unchecked
// (a crafted freelist need not match the file) and the transaction rolled
// back.
func craftTx(t *testing.T, ps int) (*DB, *Tx) {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "db"), &Options{NoSync: true, PageSize: ps})
	require.NoError(t, err)
	tx, err := db.Begin(true)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = tx.Rollback()
		_ = db.Close()
	})
	return db, tx
}
