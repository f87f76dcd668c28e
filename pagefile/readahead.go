package pagefile

import (
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
	runs, err := tx.readAheadRuns(root)
	ps := uint64(tx.db.pageSize)
	for _, r := range runs {
		// A hint: a failure (or a map shorter than the file) changes nothing.
		if to := uint64(r.to) * ps; to <= uint64(len(tx.data)) {
			_ = vfs.MadviseWillNeed(tx.data[uint64(r.from)*ps : to])
		}
	}
	return err
}

// pageRange is the pages [from, to).
type pageRange struct{ from, to pgid }

// readAheadRuns returns the ranges readAhead asks for, in the order a scan
// meets them: each level of the tree's pages, in key order, the leaves last,
// adjacent pages in one range. A level is read only once it has been asked
// for, and the leaves (a level whose first page is a leaf) are not read at
// all. A corruption met ends the walk: the ranges so far and the error are
// returned.
func (tx *Tx) readAheadRuns(root pgid) (runs []pageRange, err error) {
	defer catchCorrupt(&err)
	if root == 0 {
		return nil, nil
	}
	level := []pgid{root}
	for depth := 1; len(level) > 0; depth++ {
		if depth > maxDepth {
			corruptf(level[0], "tree deeper than %d levels (a cycle?)", maxDepth)
		}
		runs = appendRuns(runs, level, tx.base.highWater)
		if pageType(tx.page(level[0])) == typeLeaf {
			break
		}
		var next []pgid
		for _, id := range level {
			p := tx.page(id)
			if pageType(p) != typeBranch {
				corruptf(id, "page type %d beside branches at one level", pageType(p))
			}
			for i := 0; i < pageCount(p); i++ {
				_, child := branchElem(p, id, i)
				next = append(next, child)
			}
		}
		level = next
	}
	return runs, nil
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
