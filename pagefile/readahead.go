package pagefile

import (
	"math"
	"os"
	"unsafe"

	"github.com/cairn-kv/cairn/internal/vfs"
)

// ReadAhead asks the kernel to read the pages a scan of the whole bucket
// will touch into the page cache, without waiting for them: a scan of a file
// the cache does not hold then meets pages already read, instead of faulting
// them in one at a time (the map is advised random, so a fault reads one
// page). The branch pages are read level by level, each level asked for
// before it is read; of the leaves, only the first page of each run is asked
// for, so a leaf holding one large value does not bring the value in. It
// changes nothing a transaction sees and returns the transaction's error
// (a corrupt branch met on the way becomes it, as a scan's would).
func (b *Bucket) ReadAhead() error {
	if err := b.tx.readAhead(b.root); err != nil && b.tx.err == nil {
		b.tx.err = err
	}
	return b.tx.err
}

// readAhead asks for the pages of the committed tree at root (see
// ReadAhead), returning a corruption it met, which ends it.
func (tx *Tx) readAhead(root pgid) error {
	return tx.scanAhead(root, math.MaxInt, tx.willNeedRuns).err
}

// willNeedRuns asks for the pages of runs. A hint: a failure (or a map
// shorter than the file) changes nothing.
func (tx *Tx) willNeedRuns(runs []pageRange) {
	ps := uint64(tx.db.pageSize)
	for _, r := range runs {
		if to := uint64(r.to) * ps; to <= uint64(len(tx.data)) {
			_ = vfs.MadviseWillNeed(tx.data[uint64(r.from)*ps : to])
		}
	}
}

// pageRange is the pages [from, to).
type pageRange struct{ from, to pgid }

// scanAhead asks for the pages a scan of a whole tree meets, in the order
// it meets them. The branches are asked for at once, level by level, each
// level before it is read. The leaves are asked for a window ahead of the
// scan (at), half a window at a time, their ids read from their parents
// one parent at a time; only the first page of each leaf run is asked for.
//
// ReadAhead asks with an unbounded window: every leaf at once. A copy made
// beside a busy store asks 16 MiB ahead of its scan: asking for every leaf
// of a 2.75 GB file at once was some 700,000 madvise calls, 0.3-0.4 s of a
// core in one burst, and the leaves' ids alone some 30 MB of memory
// allocated at once, which started a collection of the Go heap; puts
// stalled 50-100 ms behind the two (docs/bench.md).
type scanAhead struct {
	tx      *Tx
	ask     func([]pageRange)
	parents []pgid // the leaves' parents not yet read, in key order
	pending []pgid // leaves read from their parents and not yet asked for
	window  int    // leaf pages to keep asked for ahead of the scan
	ahead   int    // leaf pages asked for, less the leaves the scan reached
	leaf    pgid   // the leaf the scan is on
	err     error  // a corruption met, which ends the asking
}

// scanAheadBytes is how far ahead of a scan a copy asks (scanAhead): enough
// to keep a disk busy, in batches (half of it) of a millisecond or so of
// system calls.
const scanAheadBytes = 16 << 20

// scanAhead starts asking for the pages of the committed tree at root, with
// ask: the branches at once, the first window pages of leaves. A corruption
// met is in its err.
func (tx *Tx) scanAhead(root pgid, window int, ask func([]pageRange)) *scanAhead {
	a := &scanAhead{tx: tx, ask: ask, window: max(window, 2)}
	if root != 0 {
		a.err = a.branches(root)
		a.more()
	}
	return a
}

// branches asks for the tree's branch pages, level by level, each level
// before it is read, down to the leaves' parents (a.parents). A tree that
// is one leaf has no parents: the leaf is pending.
func (a *scanAhead) branches(root pgid) (err error) {
	defer catchCorrupt(&err)
	tx := a.tx
	a.ask(appendRuns(nil, []pgid{root}, tx.base.highWater))
	if pageType(tx.page(root)) == typeLeaf {
		a.pending = []pgid{root}
		return nil
	}
	level := []pgid{root}
	for depth := 2; ; depth++ {
		if depth > maxDepth {
			corruptf(level[0], "tree deeper than %d levels (a cycle?)", maxDepth)
		}
		// All leaves are at one depth: the first child tells what the
		// level's children are, before any of their ids are listed.
		next := a.children(nil, level[0])
		if len(next) == 0 || pageType(tx.page(next[0])) == typeLeaf {
			a.parents = level
			return nil
		}
		for _, id := range level[1:] {
			next = a.children(next, id)
		}
		a.ask(appendRuns(nil, next, tx.base.highWater))
		level = next
	}
}

// children appends the children of the branch page id to ids.
func (a *scanAhead) children(ids []pgid, id pgid) []pgid {
	p := a.tx.page(id)
	if pageType(p) != typeBranch {
		corruptf(id, "page type %d beside branches at one level", pageType(p))
	}
	for i := 0; i < pageCount(p); i++ {
		_, child := branchElem(p, id, i)
		ids = append(ids, child)
	}
	return ids
}

// at tells it that the scan is on leaf page id, asking for the next half
// window once fewer than half a window's leaves are asked for ahead.
func (a *scanAhead) at(id pgid) {
	if id == a.leaf {
		return
	}
	a.leaf = id
	a.ahead--
	if a.ahead < a.window/2 {
		a.more()
	}
}

// more reads leaves from their parents until a window of them is asked for
// ahead of the scan, and asks for them, adjacent pages in one range.
func (a *scanAhead) more() {
	if a.err != nil {
		return
	}
	defer catchCorrupt(&a.err)
	for len(a.parents) > 0 && a.ahead+len(a.pending) < a.window {
		a.pending = a.children(a.pending, a.parents[0])
		a.parents = a.parents[1:]
	}
	n := min(len(a.pending), max(a.window-a.ahead, 0))
	if n == 0 {
		return
	}
	a.ahead += n
	runs := appendRuns(nil, a.pending[:n], a.tx.base.highWater)
	a.pending = a.pending[n:]
	if len(runs) > 0 {
		a.ask(runs)
	}
}

// appendRuns appends the pages ids to runs, one page each, joining a page
// to the range before it when it follows it (the last of the level above
// too); ids outside the file (which a read would report) are left out.
func appendRuns(runs []pageRange, ids []pgid, highWater pgid) []pageRange {
	for _, id := range ids {
		if id < 2 || id >= highWater {
			continue
		}
		if n := len(runs); n > 0 && runs[n-1].to == id {
			runs[n-1].to++
			continue
		}
		runs = append(runs, pageRange{id, id + 1})
	}
	return runs
}

// WillNeed asks the kernel to read the pages under b, a key or value this
// transaction returned, without waiting: a long value copied out of the map
// would otherwise fault in one page at a time (the map is advised random),
// each a read of its own when the page cache does not hold it. A b not in
// the map (a value a write transaction holds in memory) is left alone.
func (tx *Tx) WillNeed(b []byte) {
	if from, to, ok := tx.mapRange(b); ok {
		_ = vfs.MadviseWillNeed(tx.data[from:to])
	}
}

// mapRange returns where b lies in the transaction's map, widened down to
// the start of its first OS page (madvise starts on one); !ok if b is not
// all in the map.
func (tx *Tx) mapRange(b []byte) (from, to int, ok bool) {
	if len(b) == 0 || len(tx.data) == 0 {
		return 0, 0, false
	}
	base := uintptr(unsafe.Pointer(unsafe.SliceData(tx.data)))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if at < base || at-base+uintptr(len(b)) > uintptr(len(tx.data)) {
		return 0, 0, false
	}
	off := int(at - base)
	return off &^ (osPageSize - 1), off + len(b), true
}

var osPageSize = os.Getpagesize()

// WillNeedBytes is the length from which a value is worth asking for with
// WillNeed before it is copied: 16 pages, where faulting it in a page at a
// time starts to cost.
const WillNeedBytes = 64 << 10
