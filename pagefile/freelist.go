package pagefile

import (
	"slices"
	"sort"
)

// extent is a run of consecutive pages [start, start+n).
type extent struct {
	start pgid
	n     pgid
}

func (e extent) end() pgid { return e.start + e.n }

// freelist tracks the pages below the high-water mark that no committed tree
// uses. It belongs to the writer (guarded by DB.rwlock).
//
// A page freed by transaction T was reachable in T-1 and earlier snapshots.
// It stays pending until it can be neither read nor needed for recovery:
// until no open reader sees a snapshot older than T+1, and until T is not one
// of the two committed transactions whose metas are on disk (so a torn meta
// write can always fall back to an intact previous tree).
type freelist struct {
	// Invariant: free is sorted, its extents disjoint and not adjacent.
	free    []extent
	pending map[txid][]extent // freed by a transaction, not yet reusable
	allocs  []alloc           // taken by the open write transaction, for rollback

	// Invariant: freeN and pendingN count the pages in free and pending.
	freeN, pendingN pgid
}

type alloc struct {
	e        extent
	fromFree bool // false: taken above the old high-water mark
}

func newFreelist() *freelist { return &freelist{pending: map[txid][]extent{}} }

// count returns the number of free and pending pages.
func (f *freelist) count() (free, pending int) { return int(f.freeN), int(f.pendingN) }

// recount recomputes the counters from the lists (after loading, and in
// Check to verify them).
func (f *freelist) recount() (free, pending pgid) {
	for _, e := range f.free {
		free += e.n
	}
	for _, es := range f.pending {
		for _, e := range es {
			pending += e.n
		}
	}
	return free, pending
}

// allocate takes n consecutive free pages, first fit, lowest first. It
// returns 0 when no free run is long enough; the caller then extends the
// high-water mark.
func (f *freelist) allocate(n pgid) pgid {
	for i := range f.free {
		e := &f.free[i]
		if e.n < n {
			continue
		}
		start := e.start
		e.start += n
		e.n -= n
		f.freeN -= n
		if e.n == 0 {
			f.free = slices.Delete(f.free, i, i+1)
		}
		f.allocs = append(f.allocs, alloc{e: extent{start, n}, fromFree: true})
		return start
	}
	return 0
}

// reserve takes a free run whole for a commit to fill in order: the
// smallest of at least n pages (best fit), or else the longest of at least
// atLeast pages. It returns 0 if there is none. The caller gives back what
// it does not use with unreserve.
func (f *freelist) reserve(n, atLeast pgid) (start, length pgid) {
	best, longest := -1, -1
	for i, e := range f.free {
		if e.n >= n && (best < 0 || e.n < f.free[best].n) {
			best = i
		}
		if longest < 0 || e.n > f.free[longest].n {
			longest = i
		}
	}
	if best < 0 {
		if longest < 0 || f.free[longest].n < atLeast {
			return 0, 0
		}
		best = longest
	}
	e := f.free[best]
	f.free = slices.Delete(f.free, best, best+1)
	f.freeN -= e.n
	f.allocs = append(f.allocs, alloc{e: e, fromFree: true})
	return e.start, e.n
}

// unreserve gives back the unused tail [start, start+n) of the reservation
// that begins at from.
func (f *freelist) unreserve(from, start, n pgid) {
	for i := range f.allocs {
		if a := &f.allocs[i]; a.e.start == from && a.fromFree {
			a.e.n -= n
			f.free = mergeExtents(f.free, []extent{{start, n}})
			f.freeN += n
			return
		}
	}
	panic("pagefile: unreserve of a run that was not reserved")
}

// freeCount returns the number of free pages.
func (f *freelist) freeCount() pgid { return f.freeN }

// pendingExtents returns the number of pending extents.
func (f *freelist) pendingExtents() int {
	n := 0
	for _, es := range f.pending {
		n += len(es)
	}
	return n
}

// shrinkExtend trims n pages off the end of the extension that begins at
// from (a reservation past the high-water mark that was not all used).
func (f *freelist) shrinkExtend(from, n pgid) {
	for i := range f.allocs {
		if a := &f.allocs[i]; a.e.start == from && !a.fromFree {
			a.e.n -= n
			return
		}
	}
	panic("pagefile: shrink of an extension that was not made")
}

// growExtend adds n pages to the end of the extension that begins at from.
func (f *freelist) growExtend(from, n pgid) {
	for i := range f.allocs {
		if a := &f.allocs[i]; a.e.start == from && !a.fromFree {
			a.e.n += n
			return
		}
	}
	panic("pagefile: growth of an extension that was not made")
}

// noteExtend records pages taken above the high-water mark.
func (f *freelist) noteExtend(start, n pgid) {
	f.allocs = append(f.allocs, alloc{e: extent{start, n}})
}

// freePages marks a run freed by transaction tx.
func (f *freelist) freePages(tx txid, start, n pgid) {
	f.pending[tx] = append(f.pending[tx], extent{start, n})
	f.pendingN += n
}

// release makes reusable every page freed by a transaction below limit.
func (f *freelist) release(limit txid) {
	var add []extent
	for tx, es := range f.pending {
		if tx < limit {
			add = append(add, es...)
			delete(f.pending, tx)
		}
	}
	for _, e := range add {
		f.pendingN -= e.n
		f.freeN += e.n
	}
	if len(add) > 0 {
		f.free = mergeExtents(f.free, add)
	}
}

// rollback undoes the open write transaction tx: its pending frees are
// forgotten and the pages it took from the free list go back.
func (f *freelist) rollback(tx txid) {
	for _, e := range f.pending[tx] {
		f.pendingN -= e.n
	}
	delete(f.pending, tx)
	var back []extent
	for _, a := range f.allocs {
		if a.fromFree {
			back = append(back, a.e)
			f.freeN += a.e.n
		}
	}
	if len(back) > 0 {
		f.free = mergeExtents(f.free, back)
	}
	f.allocs = f.allocs[:0]
}

// commit forgets the open transaction's allocation record.
func (f *freelist) commit() { f.allocs = f.allocs[:0] }

// mergeExtents returns the union of a sorted, merged list and any extents,
// sorted and merged. Overlapping extents (a double free, which is a bug) are
// merged; Check catches them by comparing the free set with the tree.
func mergeExtents(sorted []extent, add []extent) []extent {
	sort.Slice(add, func(i, j int) bool { return add[i].start < add[j].start })
	out := make([]extent, 0, len(sorted)+len(add))
	i, j := 0, 0
	push := func(e extent) {
		if n := len(out); n > 0 && out[n-1].end() >= e.start {
			if e.end() > out[n-1].end() {
				out[n-1].n = e.end() - out[n-1].start
			}
			return
		}
		out = append(out, e)
	}
	for i < len(sorted) || j < len(add) {
		if j == len(add) || (i < len(sorted) && sorted[i].start <= add[j].start) {
			push(sorted[i])
			i++
		} else {
			push(add[j])
			j++
		}
	}
	return out
}

// persisted returns what the freelist page of a commit by tx holds: the
// extents free once no reader remains (free and every pending list but tx's),
// and tx's own, which must wait one more transaction.
func (f *freelist) persisted(tx txid) (free, held []extent) {
	var add []extent
	for t, es := range f.pending {
		if t != tx {
			add = append(add, es...)
		}
	}
	free = mergeExtents(f.free, add)
	held = mergeExtents(nil, append([]extent(nil), f.pending[tx]...))
	return free, held
}

// encodedSize is the byte size of a freelist body holding nFree+nHeld extents.
func freelistBytes(nFree, nHeld int) int {
	return pageHeaderSize + freelistCounts + (nFree+nHeld)*extentSize
}

// encodeFreelist writes the body of a freelist run.
func encodeFreelist(p []byte, free, held []extent) {
	b := p[pageHeaderSize:]
	clear(b)
	le.PutUint64(b[0:], uint64(len(free)))
	le.PutUint64(b[8:], uint64(len(held)))
	off := freelistCounts
	for _, list := range [][]extent{free, held} {
		for _, e := range list {
			le.PutUint64(b[off:], uint64(e.start))
			le.PutUint64(b[off+8:], uint64(e.n))
			off += extentSize
		}
	}
}

// decodeFreelist reads a freelist run, validating every extent against the
// high-water mark.
func decodeFreelist(p []byte, id pgid, highWater pgid) (free, held []extent, err error) {
	if len(p) < pageHeaderSize+freelistCounts {
		return nil, nil, &CorruptError{Page: id, Msg: "freelist page is short"}
	}
	b := p[pageHeaderSize:]
	nf, nh := le.Uint64(b[0:]), le.Uint64(b[8:])
	room := uint64(len(b)-freelistCounts) / extentSize
	if nf > room || nh > room || nf+nh > room {
		return nil, nil, &CorruptError{Page: id, Msg: "freelist counts exceed its pages"}
	}
	off := freelistCounts
	read := func(n uint64) ([]extent, error) {
		out := make([]extent, 0, n)
		for i := uint64(0); i < n; i++ {
			e := extent{pgid(le.Uint64(b[off:])), pgid(le.Uint64(b[off+8:]))}
			off += extentSize
			if e.n == 0 || e.start < 2 || e.start > highWater || e.n > highWater-e.start {
				return nil, &CorruptError{Page: id, Msg: "freelist extent outside the file"}
			}
			if len(out) > 0 && out[len(out)-1].end() >= e.start {
				return nil, &CorruptError{Page: id, Msg: "freelist extents overlap or are unsorted"}
			}
			out = append(out, e)
		}
		return out, nil
	}
	if free, err = read(nf); err != nil {
		return nil, nil, err
	}
	if held, err = read(nh); err != nil {
		return nil, nil, err
	}
	return free, held, nil
}
