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
	runs, leaves, err := tx.readAheadRuns(root)
	tx.willNeedRuns(runs[leaves:])
	return err
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

// readAheadRuns returns the ranges readAhead asks for, in the order a scan
// meets them: each level of the tree's pages, in key order, the leaves last,
// adjacent pages in one range. It asks for each level of branches before it
// reads it, and leaves the leaves (a level whose first page is a leaf) to
// its caller, unread: they are runs[leaves:] (the first of them may begin
// with branch pages, already asked for). A corruption met ends the walk:
// the ranges so far and the error are returned.
func (tx *Tx) readAheadRuns(root pgid) (runs []pageRange, leaves int, err error) {
	defer catchCorrupt(&err)
	if root == 0 {
		return nil, 0, nil
	}
	level := []pgid{root}
	for depth := 1; len(level) > 0; depth++ {
		if depth > maxDepth {
			corruptf(level[0], "tree deeper than %d levels (a cycle?)", maxDepth)
		}
		// The level's ranges begin at runs[leaves], or in the range
		// before when its first page follows that range's last.
		leaves = len(runs)
		if leaves > 0 && len(level) > 0 && runs[leaves-1].to == level[0] {
			leaves--
		}
		runs = appendRuns(runs, level, tx.base.highWater)
		if pageType(tx.page(level[0])) == typeLeaf {
			break
		}
		tx.willNeedRuns(runs[leaves:])
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
	return runs, leaves, nil
}

// scanAhead asks for a whole-bucket scan's leaves a window at a time as
// the scan reaches them, where ReadAhead asks for them all at once. A copy
// made beside a busy store uses it: asking for every leaf of a 2.75 GB
// file at once is some 700,000 madvise calls, 0.3-0.4 s of a core in one
// burst, during which puts stalled 60-100 ms (docs/bench.md).
type scanAhead struct {
	ask    func([]pageRange)
	runs   []pageRange // not yet asked for
	window int         // leaf pages to keep asked for ahead of the scan
	ahead  int         // leaf pages asked for, less the leaves the scan reached
	leaf   pgid        // the leaf the scan is on
}

// scanAheadBytes is how far ahead of a scan scanAhead keeps asking: enough
// to keep a disk busy, in batches (half of it) of a millisecond or so of
// system calls.
const scanAheadBytes = 16 << 20

// scanAhead starts asking for the pages of the tree at root: the branches
// at once, the leaves window pages ahead of the scan (at), with ask. A
// corruption met becomes the transaction's error.
func (tx *Tx) scanAhead(root pgid, window int, ask func([]pageRange)) *scanAhead {
	runs, leaves, err := tx.readAheadRuns(root)
	if err != nil && tx.err == nil {
		tx.err = err
	}
	a := &scanAhead{ask: ask, runs: runs[leaves:], window: max(window, 2)}
	// Branch pages at the front of the first leaf range count as leaves
	// asked for: a few pages fewer ahead, once.
	a.more()
	return a
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

// more asks for ranges until a window of leaves is asked for ahead.
func (a *scanAhead) more() {
	n := 0
	for n < len(a.runs) && a.ahead < a.window {
		a.ahead += int(a.runs[n].to - a.runs[n].from)
		n++
	}
	if n > 0 {
		a.ask(a.runs[:n])
	}
	a.runs = a.runs[n:]
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
