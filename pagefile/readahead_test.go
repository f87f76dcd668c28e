package pagefile

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// putShuffled puts keys 0..n-1 into bucket "kv" in random order, in
// transactions of 1-300 keys, with small values and one in 50 long enough
// for an overflow run: siblings are not always adjacent pages.
func putShuffled(t *testing.T, db *DB, rng *rand.Rand, n int) {
	t.Helper()
	keys := rng.Perm(n)
	for len(keys) > 0 {
		n := min(len(keys), 1+rng.Intn(300))
		require.NoError(t, db.Update(func(tx *Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("kv"))
			if err != nil {
				return err
			}
			for _, k := range keys[:n] {
				v := make([]byte, 40)
				if rng.Intn(50) == 0 {
					v = make([]byte, 3000+rng.Intn(5000)) // an overflow run
				}
				if err := b.Put(fmt.Appendf(nil, "key-%06d", k), v); err != nil {
					return err
				}
			}
			return nil
		}))
		keys = keys[n:]
	}
}

// TestReadAheadRuns builds a tree of three levels or more with small and
// large values (leaves of one page and overflow runs), keys put in random
// order so that siblings are not always adjacent pages, and checks what
// ReadAhead asks for: every page of the tree once, the first page of each
// run only, each level before the next and in a call of its own, in key
// order within a level, adjacent pages joined.
func TestReadAheadRuns(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	db := openTest(t, &Options{PageSize: 1024, InitialMmapSize: 1 << 24})
	defer checkAndClose(t, db)
	putShuffled(t, db, rng, 4000)
	require.NoError(t, db.View(func(tx *Tx) error {
		b := tx.Bucket([]byte("kv"))
		// The tree's pages by level, in key order, walked from the root.
		var levels [][]pgid
		var walk func(id pgid, depth int)
		walk = func(id pgid, depth int) {
			if depth == len(levels) {
				levels = append(levels, nil)
			}
			levels[depth] = append(levels[depth], id)
			p := tx.page(id)
			if pageType(p) == typeBranch {
				for i := 0; i < pageCount(p); i++ {
					_, child := branchElem(p, id, i)
					walk(child, depth+1)
				}
			}
		}
		walk(b.root, 0)
		require.GreaterOrEqual(t, len(levels), 3, "the test wants a deeper tree")

		// What ReadAhead asks for, call by call.
		var got []pgid
		var calls [][]pageRange
		a := tx.scanAhead(b.root, math.MaxInt, func(rs []pageRange) { calls = append(calls, rs) })
		require.NoError(t, a.err)
		require.Len(t, calls, len(levels), "a call a level")
		for _, runs := range calls {
			for i, r := range runs {
				require.Less(t, r.from, r.to)
				if i > 0 {
					require.NotEqual(t, runs[i-1].to, r.from, "adjacent ranges are joined")
				}
				for id := r.from; id < r.to; id++ {
					got = append(got, id)
				}
			}
		}
		var want []pgid
		for _, l := range levels {
			want = append(want, l...)
		}
		require.Equal(t, want, got)
		st := b.Stats()
		require.Positive(t, st.LeafOverflowN, "the test wants overflow runs")
		require.Len(t, got, st.BranchPageN+st.LeafPageN)
		require.NoError(t, b.ReadAhead())
		return nil
	}))
}

// TestReadAheadCorrupt: a branch naming a page outside the file is reported
// as the transaction's error, as a scan would report it.
func TestReadAheadCorrupt(t *testing.T) {
	db := openTest(t, &Options{PageSize: 1024, InitialMmapSize: 1 << 22})
	defer db.Close()
	require.NoError(t, db.Update(func(tx *Tx) error {
		b, err := tx.CreateBucket([]byte("kv"))
		if err != nil {
			return err
		}
		for i := range 2000 {
			if err := b.Put(fmt.Appendf(nil, "key-%06d", i), make([]byte, 40)); err != nil {
				return err
			}
		}
		return nil
	}))
	tx, err := db.Begin(false)
	require.NoError(t, err)
	defer tx.Rollback()
	b := tx.Bucket([]byte("kv"))
	root := tx.page(b.root)
	require.EqualValues(t, typeBranch, pageType(root))
	// A private copy of the map, with the root's first child pointing
	// past the high-water mark (the checksum is not what ReadAhead reads).
	data := append([]byte(nil), tx.data[:int(tx.base.highWater)*db.pageSize]...)
	tx.data = data
	le.PutUint64(tx.page(b.root)[pageHeaderSize+8:], uint64(tx.base.highWater+5))
	require.ErrorIs(t, b.ReadAhead(), ErrCorrupt)
}

// TestWillNeedRange: WillNeed advises the map from the OS page holding a
// value's first byte to its last byte, for a value read from the map
// (one page, or an overflow run), and nothing for bytes outside the map.
func TestWillNeedRange(t *testing.T) {
	db := openTest(t, &Options{PageSize: 1024, InitialMmapSize: 1 << 22})
	defer checkAndClose(t, db)
	big := make([]byte, 20000)
	for i := range big {
		big[i] = byte(i)
	}
	require.NoError(t, db.Update(func(tx *Tx) error {
		b, err := tx.CreateBucket([]byte("kv"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("small"), []byte("value")); err != nil {
			return err
		}
		return b.Put([]byte("big"), big)
	}))
	require.NoError(t, db.View(func(tx *Tx) error {
		b := tx.Bucket([]byte("kv"))
		for _, key := range []string{"small", "big"} {
			v := b.Get([]byte(key))
			from, to, ok := tx.mapRange(v)
			require.True(t, ok, key)
			require.Zero(t, from%osPageSize, key)
			off := to - len(v)
			require.Less(t, off-from, osPageSize, key)
			require.Equal(t, v, tx.data[off:to], key)
			tx.WillNeed(v)
		}
		_, _, ok := tx.mapRange(append([]byte(nil), big...))
		require.False(t, ok, "a copy is not in the map")
		_, _, ok = tx.mapRange(nil)
		require.False(t, ok)
		return nil
	}))
}

// TestScanAheadWindow scans a tree as a copy does and checks what scanAhead
// asks for: the branches at the start, every leaf once and in order, each
// leaf before the scan reaches it, and never more than a window ahead.
func TestScanAheadWindow(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	db := openTest(t, &Options{PageSize: 1024, InitialMmapSize: 1 << 24})
	defer checkAndClose(t, db)
	putShuffled(t, db, rng, 6000)
	window := 8 + rng.Intn(40)
	t.Logf("window %d pages", window)
	require.NoError(t, db.View(func(tx *Tx) error {
		b := tx.Bucket([]byte("kv"))
		// The leaves, in key order.
		var leaves []pgid
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if id := c.leafPage(); len(leaves) == 0 || leaves[len(leaves)-1] != id {
				leaves = append(leaves, id)
			}
		}
		var asked []pageRange
		askedPages := map[pgid]bool{}
		var branches int
		a := tx.scanAhead(b.root, window, func(rs []pageRange) {
			for _, r := range rs {
				asked = append(asked, r)
				for id := r.from; id < r.to; id++ {
					askedPages[id] = true
				}
			}
		})
		require.NoError(t, a.err)
		for id := range askedPages {
			if pageType(tx.page(id)) == typeBranch {
				branches++
			}
		}
		require.Equal(t, b.Stats().BranchPageN, branches, "the branches are asked for at the start")
		require.LessOrEqual(t, len(askedPages)-branches, window, "a window of leaves at the start")
		visited := map[pgid]bool{}
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			id := c.leafPage()
			require.True(t, askedPages[id], "leaf %d asked for before the scan reaches it", id)
			a.at(id)
			visited[id] = true
			ahead := 0
			for p := range askedPages {
				if !visited[p] && pageType(tx.page(p)) == typeLeaf {
					ahead++
				}
			}
			require.LessOrEqual(t, ahead, window, "asked for ahead of the scan")
		}
		var askedLeaves []pgid
		for _, r := range asked {
			for id := r.from; id < r.to; id++ {
				if pageType(tx.page(id)) == typeLeaf {
					askedLeaves = append(askedLeaves, id)
				}
			}
		}
		require.Equal(t, leaves, askedLeaves, "every leaf, in order, once")
		return nil
	}))
}

// TestScanAheadDoesNotListTheLeaves: starting a scan's read-ahead over a
// tree of many leaves reads their parents, not all their ids: it allocates
// a small part of what a list of every leaf takes (8 bytes a leaf).
func TestScanAheadDoesNotListTheLeaves(t *testing.T) {
	db := openTest(t, &Options{PageSize: 1024, InitialMmapSize: 1 << 26})
	defer checkAndClose(t, db)
	for batch := range 20 {
		require.NoError(t, db.Update(func(tx *Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("kv"))
			if err != nil {
				return err
			}
			for i := range 10000 {
				if err := b.Put(fmt.Appendf(nil, "key-%08d", batch*10000+i), make([]byte, 200)); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	require.NoError(t, db.View(func(tx *Tx) error {
		b := tx.Bucket([]byte("kv"))
		leaves := b.Stats().LeafPageN
		require.Greater(t, leaves, 30000, "the test wants many leaves")
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		a := tx.scanAhead(b.root, 8, func([]pageRange) {})
		runtime.ReadMemStats(&after)
		require.NoError(t, a.err)
		allocated := after.TotalAlloc - before.TotalAlloc
		t.Logf("%d leaves; starting the read-ahead allocated %d bytes", leaves, allocated)
		require.Less(t, allocated, uint64(leaves*8/4))
		return nil
	}))
}
