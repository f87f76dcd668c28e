// Package btreeindex is the engine's in-memory index: for every key, the
// history of its revisions, on github.com/tidwall/btree.
//
// A key's history is a list of generations. A generation runs from the put
// that created the key (after it did not exist) to the tombstone that
// deleted it; the tombstone is the generation's last revision, and the
// next put begins a new one. Reads at a revision find the latest revision
// at or before it: a tombstone means the key did not exist then; a put
// gives the key's mod revision, and the put that began its generation the
// create revision and version. Compaction drops what no read at or after
// the compaction revision can need, and reports the revisions the backend
// must keep.
//
// # Layout
//
// An index of a million keys is mostly small histories, so each key is
// one allocation holding the key and its history, and the tree holds
// 16-byte entries by value (a pointer and two lengths), not pointers to
// structures holding slices. The history after the key is:
//
//	lastGen  u32  index of the first revision of the last generation
//	flag     u8   0; or 1 when compaction dropped puts of the first
//	              generation, followed by its create revision (main u64,
//	              sub u32) and the number of its puts dropped (u64)
//	revisions     12 bytes each, oldest first: main u64, sub u32 with the
//	              top bit set for a tombstone
//
// (little-endian). Generations are implicit: each ends at a tombstone.
// The last revision's generation starts at lastGen, so a read of the
// latest state is O(1); a historical read walks back from the newest, as
// etcd's does. An allocation's size is a function of the bytes in use
// (allocSize), so appending a revision writes in place until the next
// size step and only then copies. Key bytes are never written after the
// allocation is made: keys returned by Range stay valid.
//
// The tree is a tidwall BTreeG without its own locks, under the index's
// lock; writes (from the single apply goroutine) use a path hint, so
// in-order keys are cheap.
package btreeindex

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync"
	"unsafe"

	"github.com/tidwall/btree"
)

// Revision is (main, sub): main counts write transactions, sub the writes
// within one.
type Revision struct {
	Main, Sub int64
}

// Less orders revisions.
func (a Revision) Less(b Revision) bool {
	return a.Main < b.Main || (a.Main == b.Main && a.Sub < b.Sub)
}

// ErrRevisionNotFound: the key does not exist at the revision asked.
var ErrRevisionNotFound = errors.New("btreeindex: revision not found")

const (
	revSize  = 12
	tombBit  = 1 << 31
	hdrSize  = 5  // lastGen, flag
	dropSize = 20 // created main, created sub, dropped
	// MaxSub is the largest sub revision the index records.
	MaxSub = tombBit - 1
)

// entry is one key with its history, in one allocation of allocSize(n)
// bytes of which n are in use. A probe (a key to search for) has p on the
// caller's key and n == klen.
type entry struct {
	p    *byte
	klen uint32
	n    uint32
}

func probe(key []byte) entry {
	return entry{p: unsafe.SliceData(key), klen: uint32(len(key)), n: uint32(len(key))}
}

func (e entry) key() []byte { return unsafe.Slice(e.p, e.klen) }

func (e entry) all() []byte { return unsafe.Slice(e.p, e.n) }

func less(a, b entry) bool { return bytes.Compare(a.key(), b.key()) < 0 }

// allocSize is the size of the allocation that holds n bytes: one of Go's
// size classes (multiples of 16 up to 256, then powers of two), so nothing
// the allocator hands out is wasted, and a step function of n, so the
// capacity need not be stored.
func allocSize(n int) int {
	if n <= 256 {
		return (n + 15) &^ 15
	}
	return 1 << bits.Len(uint(n-1))
}

// hist is a parsed view of an entry's history.
type hist struct {
	lastGen int
	dropped int64    // puts of the first generation compacted away
	created Revision // the first generation's create revision, if dropped > 0
	revs    []byte
}

func (e entry) hist() hist {
	h := e.all()[e.klen:]
	v := hist{lastGen: int(binary.LittleEndian.Uint32(h))}
	o := hdrSize
	if h[4] != 0 {
		v.created = Revision{Main: int64(binary.LittleEndian.Uint64(h[o:])), Sub: int64(binary.LittleEndian.Uint32(h[o+8:]))}
		v.dropped = int64(binary.LittleEndian.Uint64(h[o+12:]))
		o += dropSize
	}
	v.revs = h[o:]
	return v
}

func (v *hist) count() int { return len(v.revs) / revSize }

func (v *hist) main(i int) int64 { return int64(binary.LittleEndian.Uint64(v.revs[i*revSize:])) }

func (v *hist) tomb(i int) bool { return binary.LittleEndian.Uint32(v.revs[i*revSize+8:])&tombBit != 0 }

func (v *hist) rev(i int) Revision {
	return Revision{Main: v.main(i), Sub: int64(binary.LittleEndian.Uint32(v.revs[i*revSize+8:]) &^ tombBit)}
}

func putRev(b []byte, r Revision, tomb bool) {
	binary.LittleEndian.PutUint64(b, uint64(r.Main))
	sub := uint32(r.Sub)
	if tomb {
		sub |= tombBit
	}
	binary.LittleEndian.PutUint32(b[8:], sub)
}

// build lays out an entry: key, the header for lastGen, dropped and
// created, then revs (already encoded), with room for one more revision.
func build(key []byte, lastGen int, dropped int64, created Revision, revs []byte) entry {
	n := len(key) + hdrSize + len(revs)
	if dropped > 0 {
		n += dropSize
	}
	b := make([]byte, n, allocSize(n))
	o := copy(b, key)
	binary.LittleEndian.PutUint32(b[o:], uint32(lastGen))
	o += 4
	if dropped > 0 {
		b[o] = 1
		binary.LittleEndian.PutUint64(b[o+1:], uint64(created.Main))
		binary.LittleEndian.PutUint32(b[o+9:], uint32(created.Sub))
		binary.LittleEndian.PutUint64(b[o+13:], uint64(dropped))
		o += dropSize
	}
	o++
	copy(b[o:], revs)
	return entry{p: unsafe.SliceData(b), klen: uint32(len(key)), n: uint32(n)}
}

func newEntry(key []byte, rev Revision) entry {
	var r [revSize]byte
	putRev(r[:], rev, false)
	return build(key, 0, 0, Revision{}, r[:])
}

// add appends rev (a put, or a tombstone) to the history, in place when
// the allocation has room.
func (e entry) add(rev Revision, tomb bool) (entry, error) {
	v := e.hist()
	m := v.count()
	if last := v.rev(m - 1); !last.Less(rev) {
		return e, fmt.Errorf("btreeindex: put of %q at %v, not after %v", e.key(), rev, last)
	}
	n := int(e.n) + revSize
	if n > math.MaxUint32 {
		return e, fmt.Errorf("btreeindex: history of %q too long; compact", e.key())
	}
	b := unsafe.Slice(e.p, allocSize(int(e.n)))
	if n > len(b) {
		nb := make([]byte, allocSize(n))
		copy(nb, e.all())
		b = nb
	}
	if v.tomb(m - 1) {
		binary.LittleEndian.PutUint32(b[e.klen:], uint32(m)) // a new generation
	}
	putRev(b[e.n:], rev, tomb)
	return entry{p: unsafe.SliceData(b), klen: e.klen, n: uint32(n)}, nil
}

func (e entry) alive() bool {
	v := e.hist()
	return !v.tomb(v.count() - 1)
}

func (e entry) get(atRev int64) (modified, created Revision, ver int64, err error) {
	v := e.hist()
	i := v.count() - 1
	for i >= 0 && v.main(i) > atRev {
		i--
	}
	if i < 0 || v.tomb(i) {
		return Revision{}, Revision{}, 0, ErrRevisionNotFound
	}
	s := v.lastGen // the start of i's generation
	if i < s {
		for s = i; s > 0 && !v.tomb(s-1); s-- {
		}
	}
	created, ver = v.rev(s), int64(i-s+1)
	if s == 0 && v.dropped > 0 {
		created, ver = v.created, ver+v.dropped
	}
	return v.rev(i), created, ver, nil
}

// compaction works out what compacting at atRev does to the history: it
// drops the first k revisions, adding to available the one a read at
// atRev needs (the latest at or below it, if a put) and, when keepTomb is
// set, a tombstone at atRev itself (a watch from atRev must still see that
// delete). Everything up to the last tombstone at or below atRev goes; in
// the generation after it, every put before the latest at or below atRev.
func (e entry) compaction(atRev int64, keepTomb bool, available map[Revision]struct{}) (k int) {
	v := e.hist()
	m := v.count()
	t, j := -1, 0 // the last tombstone at or below atRev; the first revision above it
	for ; j < m && v.main(j) <= atRev; j++ {
		if v.tomb(j) {
			t = j
		}
	}
	if t >= 0 && keepTomb && v.main(t) == atRev {
		available[v.rev(t)] = struct{}{}
	}
	k = t + 1
	if j > k {
		k = j - 1
		available[v.rev(k)] = struct{}{}
	}
	return k
}

// drop returns the entry without its first k revisions (0 < k < count),
// in a new allocation.
func (e entry) drop(k int) entry {
	v := e.hist()
	s := k // the start of k's generation
	for s > 0 && !v.tomb(s-1) {
		s--
	}
	dropped, created := int64(k-s), v.rev(s)
	if s == 0 && v.dropped > 0 {
		dropped, created = dropped+v.dropped, v.created
	}
	lastGen := max(v.lastGen-k, 0)
	return build(e.key(), lastGen, dropped, created, v.revs[k*revSize:])
}

// Index maps keys to their revision histories.
type Index struct {
	mu   sync.RWMutex // guards tree and hint
	tree *btree.BTreeG[entry]
	hint btree.PathHint
}

// New returns an empty index.
func New() *Index {
	return &Index{tree: btree.NewBTreeGOptions(less, btree.Options{NoLocks: true})}
}

// Replace gives ix the contents of other, which must not be used after:
// a store that installs a whole new state keeps its index, which readers
// hold, and swaps what is in it.
func (ix *Index) Replace(other *Index) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.tree, ix.hint = other.tree, btree.PathHint{}
	other.tree = nil
}

// Len returns the number of keys with a history.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.tree.Len()
}

// Put records a put of key at rev (which must be after its last revision).
func (ix *Index) Put(key []byte, rev Revision) error { return ix.record(key, rev, false) }

// Tombstone records the deletion of key at rev. Deleting a key that does
// not exist is ErrRevisionNotFound.
func (ix *Index) Tombstone(key []byte, rev Revision) error { return ix.record(key, rev, true) }

func (ix *Index) record(key []byte, rev Revision, tomb bool) error {
	if rev.Sub < 0 || rev.Sub > MaxSub {
		return fmt.Errorf("btreeindex: sub revision %d out of range", rev.Sub)
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	e, ok := ix.tree.GetHint(probe(key), &ix.hint)
	switch {
	case tomb && (!ok || !e.alive()):
		return ErrRevisionNotFound
	case !ok:
		ix.tree.SetHint(newEntry(key, rev), &ix.hint)
		return nil
	}
	e, err := e.add(rev, tomb)
	if err != nil {
		return err
	}
	ix.tree.SetHint(e, &ix.hint)
	return nil
}

// Get returns key's mod revision, create revision and version at atRev.
func (ix *Index) Get(key []byte, atRev int64) (modified, created Revision, ver int64, err error) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	e, ok := ix.tree.Get(probe(key))
	if !ok {
		return Revision{}, Revision{}, 0, ErrRevisionNotFound
	}
	return e.get(atRev)
}

// visit calls fn, in key order, for each key of [start, end) alive at
// atRev, until fn returns false. A nil end means start alone; an end of
// "\x00" means every key from start.
func (ix *Index) visit(start, end []byte, atRev int64, fn func(key []byte, mod Revision) bool) {
	if end == nil {
		if e, ok := ix.tree.Get(probe(start)); ok {
			if mod, _, _, err := e.get(atRev); err == nil {
				fn(e.key(), mod)
			}
		}
		return
	}
	toEnd := len(end) == 1 && end[0] == 0
	ix.tree.Ascend(probe(start), func(e entry) bool {
		if !toEnd && bytes.Compare(e.key(), end) >= 0 {
			return false
		}
		mod, _, _, err := e.get(atRev)
		if err != nil {
			return true
		}
		return fn(e.key(), mod)
	})
}

// Range returns the keys of [start, end) alive at atRev, in order, with
// their mod revisions: at most limit of them if limit > 0. End follows
// etcd: nil for start alone, "\x00" for every key from start. The keys
// are the index's own; callers must not change them.
func (ix *Index) Range(start, end []byte, atRev int64, limit int) (keys [][]byte, revs []Revision) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	ix.visit(start, end, atRev, func(key []byte, mod Revision) bool {
		keys = append(keys, key)
		revs = append(revs, mod)
		return limit <= 0 || len(keys) < limit
	})
	return keys, revs
}

// Revisions returns the mod revisions of the keys of [start, end) alive at
// atRev, in key order: at most limit of them if limit > 0.
func (ix *Index) Revisions(start, end []byte, atRev int64, limit int) (revs []Revision) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	ix.visit(start, end, atRev, func(_ []byte, mod Revision) bool {
		revs = append(revs, mod)
		return limit <= 0 || len(revs) < limit
	})
	return revs
}

// CountRevisions returns how many keys of [start, end) are alive at atRev.
func (ix *Index) CountRevisions(start, end []byte, atRev int64) int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n := 0
	ix.visit(start, end, atRev, func([]byte, Revision) bool { n++; return true })
	return n
}

// Compact drops what no read at or after rev needs and returns the
// revisions at or below rev that the backend must keep (every other one at
// or below rev may go): what reads at rev need, and the tombstones at rev
// itself, which a watch from rev reports. Keys left with no history are
// removed.
func (ix *Index) Compact(rev int64) map[Revision]struct{} {
	available := map[Revision]struct{}{}
	for next := []byte{}; next != nil; {
		next = ix.CompactStep(rev, next, math.MaxInt, available)
	}
	return available
}

// CompactStep is Compact for at most limit keys, from key from on (nil or
// empty: the first); it returns the key to go on from (nil: none left).
// A read at rev or later finds the same whether a key is compacted yet or
// not, so a compaction can go in steps with reads and writes between them;
// only reads below rev must be refused from the first step on.
func (ix *Index) CompactStep(rev int64, from []byte, limit int, available map[Revision]struct{}) (next []byte) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var changed, gone []entry
	seen := 0
	ix.tree.Ascend(probe(from), func(e entry) bool {
		if seen == limit {
			next = append([]byte{}, e.key()...)
			return false
		}
		seen++
		k := e.compaction(rev, true, available)
		v := e.hist()
		switch {
		case k == v.count():
			gone = append(gone, e)
		case k > 0:
			changed = append(changed, e.drop(k))
		}
		return true
	})
	var hint btree.PathHint
	for _, e := range changed {
		ix.tree.SetHint(e, &hint)
	}
	for _, e := range gone {
		ix.tree.DeleteHint(e, &hint)
	}
	return next
}

// Keep returns the revisions reads at rev need, changing nothing: what
// Compact(rev) keeps but the tombstones at rev (HashKV hashes exactly
// these, as etcd's does).
func (ix *Index) Keep(rev int64) map[Revision]struct{} {
	available := map[Revision]struct{}{}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	ix.tree.Scan(func(e entry) bool {
		e.compaction(rev, false, available)
		return true
	})
	return available
}

// Sane checks the whole index: keys in order and unique; every entry laid
// out as the package comment says, with at least one revision, revisions
// strictly increasing, tombstones only at the end of a generation, lastGen
// the start of the last revision's generation, and a first generation's
// dropped puts recorded only with a create revision before its first
// revision kept.
func (ix *Index) Sane() error {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var prev []byte
	var err error
	ix.tree.Scan(func(e entry) bool {
		err = e.sane(prev)
		prev = e.key()
		return err == nil
	})
	return err
}

func (e entry) sane(prev []byte) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("btreeindex: key %q: %s", e.key(), fmt.Sprintf(format, args...))
	}
	if prev != nil && bytes.Compare(prev, e.key()) >= 0 {
		return fail("out of order after %q", prev)
	}
	h := e.all()[e.klen:]
	if len(h) < hdrSize || h[4] > 1 || (h[4] == 1 && len(h) < hdrSize+dropSize) {
		return fail("history of %d bytes with flag %d", len(h), h[min(4, len(h)-1)])
	}
	v := e.hist()
	m := v.count()
	if m == 0 || len(v.revs)%revSize != 0 {
		return fail("%d bytes of revisions", len(v.revs))
	}
	if v.tomb(0) {
		return fail("begins with tombstone %v", v.rev(0))
	}
	if h[4] == 1 && (v.dropped <= 0 || !v.created.Less(v.rev(0))) {
		return fail("dropped %d puts created at %v, first revision %v", v.dropped, v.created, v.rev(0))
	}
	for i := 0; i < m; i++ {
		if i > 0 && !v.rev(i-1).Less(v.rev(i)) {
			return fail("revision %v not after %v", v.rev(i), v.rev(i-1))
		}
		if i > 0 && v.tomb(i) && v.tomb(i-1) {
			return fail("tombstone %v right after tombstone %v", v.rev(i), v.rev(i-1))
		}
	}
	if v.lastGen >= m || (v.lastGen > 0 && !v.tomb(v.lastGen-1)) {
		return fail("last generation at %d of %d revisions", v.lastGen, m)
	}
	for i := v.lastGen; i < m-1; i++ {
		if v.tomb(i) {
			return fail("tombstone %v inside the last generation", v.rev(i))
		}
	}
	return nil
}
