// Package btreeindex is the engine's in-memory index: for every key, the
// history of its revisions, on github.com/tidwall/btree.
//
// A key's history is a list of generations. A generation runs from the put
// that created the key (after it did not exist) to the tombstone that
// deleted it; the tombstone is the generation's last revision, and an empty
// generation follows it, waiting for the next put. Reads at a revision find
// the generation alive then and, in it, the latest revision at or before
// it: that gives the key's mod revision, its create revision and its
// version. Compaction drops what no read at or after the compaction
// revision can need, and reports the revisions the backend must keep.
//
// The tree is a tidwall BTreeG without its own locks, under the index's
// lock; writes (from the single apply goroutine) use a path hint, so
// in-order keys are cheap.
package btreeindex

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

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

type generation struct {
	ver     int64    // puts in the generation, compacted ones included
	created Revision // the put that began it
	revs    []Revision
}

func (g *generation) isEmpty() bool { return len(g.revs) == 0 }

// walk returns the index of the last revision for which f is false,
// scanning from the newest, or -1.
func (g *generation) walk(f func(Revision) bool) int {
	for i := len(g.revs) - 1; i >= 0; i-- {
		if !f(g.revs[i]) {
			return i
		}
	}
	return -1
}

// keyIndex is one key's history.
type keyIndex struct {
	key      []byte
	modified Revision // the latest revision, put or tombstone
	// Invariant: at least one generation; all but the last are non-empty
	// and end with their tombstone.
	generations []generation
}

func (ki *keyIndex) isEmpty() bool {
	return len(ki.generations) == 1 && ki.generations[0].isEmpty()
}

func (ki *keyIndex) put(rev Revision) error {
	if !ki.modified.Less(rev) {
		return fmt.Errorf("btreeindex: put of %q at %v, not after %v", ki.key, rev, ki.modified)
	}
	if len(ki.generations) == 0 {
		ki.generations = append(ki.generations, generation{})
	}
	g := &ki.generations[len(ki.generations)-1]
	if g.isEmpty() {
		g.created = rev
	}
	g.revs = append(g.revs, rev)
	g.ver++
	ki.modified = rev
	return nil
}

// findGeneration returns the generation alive at rev, or nil.
func (ki *keyIndex) findGeneration(rev int64) *generation {
	last := len(ki.generations) - 1
	for i := last; i >= 0; i-- {
		g := &ki.generations[i]
		if g.isEmpty() {
			continue
		}
		if i != last {
			if tomb := g.revs[len(g.revs)-1].Main; tomb <= rev {
				return nil // deleted by then
			}
		}
		if g.revs[0].Main <= rev {
			return g
		}
	}
	return nil
}

func (ki *keyIndex) get(atRev int64) (modified, created Revision, ver int64, err error) {
	g := ki.findGeneration(atRev)
	if g == nil {
		return Revision{}, Revision{}, 0, ErrRevisionNotFound
	}
	n := g.walk(func(r Revision) bool { return r.Main > atRev })
	if n == -1 {
		return Revision{}, Revision{}, 0, ErrRevisionNotFound
	}
	return g.revs[n], g.created, g.ver - int64(len(g.revs)-n-1), nil
}

// compact drops the revisions at or below atRev except the latest of the
// generation alive at atRev (a tombstone at or below atRev takes its whole
// generation), adding the revisions to keep to available. A tombstone at
// exactly atRev goes from the index but stays in available when
// keepTomb is set: a watch from atRev must still see that delete.
func (ki *keyIndex) compact(atRev int64, available map[Revision]struct{}, keepTomb bool) {
	i := 0
	// Generations deleted at or before atRev go entirely.
	for i < len(ki.generations)-1 {
		g := &ki.generations[i]
		tomb := g.revs[len(g.revs)-1]
		if tomb.Main > atRev {
			break
		}
		if keepTomb && tomb.Main == atRev {
			available[tomb] = struct{}{}
		}
		i++
	}
	g := &ki.generations[i]
	n := g.walk(func(r Revision) bool {
		if r.Main <= atRev {
			available[r] = struct{}{}
			return false
		}
		return true
	})
	if n > 0 {
		g.revs = g.revs[n:]
	}
	ki.generations = ki.generations[i:]
}

// Index maps keys to their revision histories.
type Index struct {
	mu   sync.RWMutex // guards tree and hint
	tree *btree.BTreeG[*keyIndex]
	hint btree.PathHint
}

// New returns an empty index.
func New() *Index {
	return &Index{tree: btree.NewBTreeGOptions(func(a, b *keyIndex) bool { return bytes.Compare(a.key, b.key) < 0 },
		btree.Options{NoLocks: true})}
}

// Len returns the number of keys with a history.
func (ix *Index) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.tree.Len()
}

// Put records a put of key at rev (which must be after its last revision).
func (ix *Index) Put(key []byte, rev Revision) error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	probe := &keyIndex{key: key}
	ki, ok := ix.tree.GetHint(probe, &ix.hint)
	if !ok {
		ki = &keyIndex{key: bytes.Clone(key)}
		ix.tree.SetHint(ki, &ix.hint)
	}
	return ki.put(rev)
}

// Tombstone records the deletion of key at rev. Deleting a key that does
// not exist is ErrRevisionNotFound.
func (ix *Index) Tombstone(key []byte, rev Revision) error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ki, ok := ix.tree.GetHint(&keyIndex{key: key}, &ix.hint)
	if !ok || ki.generations[len(ki.generations)-1].isEmpty() {
		return ErrRevisionNotFound
	}
	if err := ki.put(rev); err != nil {
		return err
	}
	ki.generations = append(ki.generations, generation{})
	return nil
}

// Get returns key's mod revision, create revision and version at atRev.
func (ix *Index) Get(key []byte, atRev int64) (modified, created Revision, ver int64, err error) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	ki, ok := ix.tree.Get(&keyIndex{key: key})
	if !ok {
		return Revision{}, Revision{}, 0, ErrRevisionNotFound
	}
	return ki.get(atRev)
}

// visit calls fn, in key order, for each key of [start, end) alive at
// atRev, until fn returns false. A nil end means start alone; an end of
// "\x00" means every key from start.
func (ix *Index) visit(start, end []byte, atRev int64, fn func(key []byte, mod Revision) bool) {
	if end == nil {
		if ki, ok := ix.tree.Get(&keyIndex{key: start}); ok {
			if mod, _, _, err := ki.get(atRev); err == nil {
				fn(ki.key, mod)
			}
		}
		return
	}
	toEnd := len(end) == 1 && end[0] == 0
	ix.tree.Ascend(&keyIndex{key: start}, func(ki *keyIndex) bool {
		if !toEnd && bytes.Compare(ki.key, end) >= 0 {
			return false
		}
		mod, _, _, err := ki.get(atRev)
		if err != nil {
			return true
		}
		return fn(ki.key, mod)
	})
}

// Range returns the keys of [start, end) alive at atRev, in order, with
// their mod revisions: at most limit of them if limit > 0. End follows
// etcd: nil for start alone, "\x00" for every key from start.
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
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var empty []*keyIndex
	ix.tree.Scan(func(ki *keyIndex) bool {
		ki.compact(rev, available, true)
		if ki.isEmpty() {
			empty = append(empty, ki)
		}
		return true
	})
	for _, ki := range empty {
		ix.tree.Delete(ki)
	}
	return available
}

// Keep returns the revisions reads at rev need, changing nothing: what
// Compact(rev) keeps but the tombstones at rev (HashKV hashes exactly
// these, as etcd's does).
func (ix *Index) Keep(rev int64) map[Revision]struct{} {
	available := map[Revision]struct{}{}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	ix.tree.Scan(func(ki *keyIndex) bool {
		cp := &keyIndex{key: ki.key, modified: ki.modified, generations: make([]generation, len(ki.generations))}
		for i, g := range ki.generations {
			cp.generations[i] = generation{ver: g.ver, created: g.created, revs: g.revs}
		}
		cp.compact(rev, available, false)
		return true
	})
	return available
}

// Sane checks the whole index: keys in order and unique; in every key,
// generations as the keyIndex invariant says, revisions strictly
// increasing across them, modified the latest, versions no fewer than the
// revisions kept, created no later than the first one kept.
func (ix *Index) Sane() error {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	var prev []byte
	var err error
	ix.tree.Scan(func(ki *keyIndex) bool {
		fail := func(format string, args ...any) bool {
			err = fmt.Errorf("btreeindex: key %q: %s", ki.key, fmt.Sprintf(format, args...))
			return false
		}
		if prev != nil && bytes.Compare(prev, ki.key) >= 0 {
			return fail("out of order after %q", prev)
		}
		prev = ki.key
		if len(ki.generations) == 0 || ki.isEmpty() {
			return fail("no history")
		}
		var last Revision
		for i, g := range ki.generations {
			if g.isEmpty() {
				if i != len(ki.generations)-1 {
					return fail("empty generation %d before the last", i)
				}
				continue
			}
			if g.ver < int64(len(g.revs)) {
				return fail("generation %d has version %d but %d revisions", i, g.ver, len(g.revs))
			}
			if g.revs[0].Less(g.created) {
				return fail("generation %d created at %v after its revision %v", i, g.created, g.revs[0])
			}
			for _, r := range g.revs {
				if !last.Less(r) {
					return fail("revision %v not after %v", r, last)
				}
				last = r
			}
		}
		if last != ki.modified {
			return fail("modified %v, latest revision %v", ki.modified, last)
		}
		return true
	})
	return err
}
