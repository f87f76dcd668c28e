package btreeindex

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// event is one write in the naive model: a put or a tombstone.
type event struct {
	rev  Revision
	tomb bool
}

// model is the naive version: every event of every key, never compacted;
// answers are recomputed from scratch.
type model map[string][]event

// get answers as the index should at atRev.
func (m model) get(key string, atRev int64) (mod, created Revision, ver int64, ok bool) {
	evs := m[key]
	last := -1
	for i, e := range evs {
		if e.rev.Main <= atRev {
			last = i
		}
	}
	if last < 0 || evs[last].tomb {
		return Revision{}, Revision{}, 0, false
	}
	first := last
	for first > 0 && !evs[first-1].tomb {
		first--
	}
	return evs[last].rev, evs[first].rev, int64(last - first + 1), true
}

// keep is what a compaction at c must keep: each key's latest event at or
// below c, if it is a put.
func (m model) keep(c int64) map[Revision]struct{} {
	out := map[Revision]struct{}{}
	for _, evs := range m {
		var last *event
		for i := range evs {
			if evs[i].rev.Main <= c {
				last = &evs[i]
			}
		}
		if last != nil && !last.tomb {
			out[last.rev] = struct{}{}
		}
	}
	return out
}

// keepCompact is what Compact(c) must report: keep(c) and the tombstones
// at c itself.
func (m model) keepCompact(c int64) map[Revision]struct{} {
	out := m.keep(c)
	for _, evs := range m {
		for _, e := range evs {
			if e.tomb && e.rev.Main == c {
				out[e.rev] = struct{}{}
			}
		}
	}
	return out
}

func (m model) rangeKeys(start, end string, atRev int64) []string {
	var keys []string
	for k := range m {
		if k < start || (end != "\x00" && k >= end) {
			continue
		}
		if _, _, _, ok := m.get(k, atRev); ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// TestIndexAgainstModel runs random puts and deletes (several per
// revision), compactions and reads at random revisions at or after the last
// compaction, comparing every answer with the naive model, and runs Sane
// throughout.
func TestIndexAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	for round := 0; round < 20; round++ {
		ix, m := New(), model{}
		var main, compacted int64 = 1, 0
		// A compaction in steps, under way: a few keys a write.
		var stepped struct {
			next      []byte // nil: none under way
			available map[Revision]struct{}
		}
		// Keys of many lengths, so histories cross allocation sizes.
		key := func() string { i := rng.Intn(30); return fmt.Sprintf("k%02d", i) + strings.Repeat("x", i*i/3) }
		for step := 0; step < 2000; step++ {
			main++
			// One write transaction: up to three writes, distinct keys.
			used := map[string]bool{}
			for sub := int64(0); sub < int64(1+rng.Intn(3)); sub++ {
				k := key()
				if used[k] {
					continue
				}
				used[k] = true
				rev := Revision{Main: main, Sub: sub}
				if rng.Intn(4) == 0 {
					err := ix.Tombstone([]byte(k), rev)
					_, _, _, exists := m.get(k, main)
					if exists != (err == nil) {
						t.Fatalf("round %d: tombstone %s at %v: %v (exists %v)", round, k, rev, err, exists)
					}
					if err == nil {
						m[k] = append(m[k], event{rev: rev, tomb: true})
					} else if !errors.Is(err, ErrRevisionNotFound) {
						t.Fatal(err)
					}
				} else {
					if err := ix.Put([]byte(k), rev); err != nil {
						t.Fatal(err)
					}
					m[k] = append(m[k], event{rev: rev})
				}
			}
			if stepped.next != nil {
				stepped.next = ix.CompactStep(compacted, stepped.next, 1+rng.Intn(4), stepped.available)
				if stepped.next == nil {
					// Writes since the first step are past compacted:
					// they change nothing kept.
					if want := m.keepCompact(compacted); !sameSet(stepped.available, want) {
						t.Fatalf("round %d: CompactStep(%d) kept %d revisions, want %d", round, compacted, len(stepped.available), len(want))
					}
				}
			}
			if rng.Intn(50) == 0 {
				// Past the last compaction, as the engine allows; in one
				// go, or in steps (which supersede those under way).
				c := compacted + 1 + rng.Int63n(main-compacted)
				want := m.keep(c)
				if got := ix.Keep(c); !sameSet(got, want) {
					t.Fatalf("round %d: Keep(%d) = %d revisions, want %d", round, c, len(got), len(want))
				}
				want = m.keepCompact(c)
				if rng.Intn(2) == 0 {
					stepped.next, stepped.available = []byte{}, map[Revision]struct{}{}
				} else if got := ix.Compact(c); !sameSet(got, want) {
					t.Fatalf("round %d: Compact(%d) kept %d revisions, want %d", round, c, len(got), len(want))
				} else {
					stepped.next = nil
				}
				compacted = c
			}
			// Reads at or after the compaction.
			at := compacted + rng.Int63n(main-compacted+1)
			k := key()
			mod, created, ver, err := ix.Get([]byte(k), at)
			wmod, wcreated, wver, ok := m.get(k, at)
			if ok != (err == nil) || mod != wmod || created != wcreated || ver != wver {
				t.Fatalf("round %d: Get(%s, %d) = %v %v %d %v, want %v %v %d (exists %v)", round, k, at, mod, created, ver, err, wmod, wcreated, wver, ok)
			}
			if rng.Intn(5) == 0 {
				a, b := key(), key()
				if a > b {
					a, b = b, a
				}
				if rng.Intn(4) == 0 {
					b = "\x00"
				}
				want := m.rangeKeys(a, b, at)
				limit := 0
				if rng.Intn(3) == 0 {
					limit = 1 + rng.Intn(5)
				}
				keys, revs := ix.Range([]byte(a), []byte(b), at, limit)
				wantN := len(want)
				if limit > 0 && wantN > limit {
					wantN = limit
				}
				if len(keys) != wantN {
					t.Fatalf("round %d: Range(%s, %q, %d, %d) gave %d keys, want %d", round, a, b, at, limit, len(keys), wantN)
				}
				for i := range keys {
					wm, _, _, _ := m.get(want[i], at)
					if string(keys[i]) != want[i] || revs[i] != wm {
						t.Fatalf("round %d: Range key %d = %q@%v, want %q@%v", round, i, keys[i], revs[i], want[i], wm)
					}
				}
				if n := ix.CountRevisions([]byte(a), []byte(b), at); n != len(want) {
					t.Fatalf("round %d: CountRevisions = %d, want %d", round, n, len(want))
				}
				single, _ := ix.Range([]byte(a), nil, at, 0)
				if _, _, _, ok := m.get(a, at); ok != (len(single) == 1) || (ok && !bytes.Equal(single[0], []byte(a))) {
					t.Fatalf("round %d: single-key Range(%s) = %q", round, a, single)
				}
			}
			if step%200 == 0 {
				if err := ix.Sane(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := ix.Sane(); err != nil {
			t.Fatal(err)
		}
	}
}

func sameSet(a, b map[Revision]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for r := range a {
		if _, ok := b[r]; !ok {
			return false
		}
	}
	return true
}

func TestPutMustAdvance(t *testing.T) {
	ix := New()
	if err := ix.Put([]byte("a"), Revision{Main: 5}); err != nil {
		t.Fatal(err)
	}
	if err := ix.Put([]byte("a"), Revision{Main: 5}); err == nil {
		t.Fatal("a put at the same revision was accepted")
	}
	if err := ix.Tombstone([]byte("b"), Revision{Main: 6}); !errors.Is(err, ErrRevisionNotFound) {
		t.Fatalf("deleting an absent key: %v", err)
	}
	if err := ix.Tombstone([]byte("a"), Revision{Main: 6}); err != nil {
		t.Fatal(err)
	}
	if err := ix.Tombstone([]byte("a"), Revision{Main: 7}); !errors.Is(err, ErrRevisionNotFound) {
		t.Fatalf("deleting a deleted key: %v", err)
	}
	// Compacting at the tombstone removes the key from the index, keeping
	// the tombstone for watches from 6; compacting past it keeps nothing.
	if kept := ix.Compact(6); len(kept) != 1 || ix.Len() != 0 {
		t.Fatalf("after compacting at its tombstone: kept %v, %d keys", kept, ix.Len())
	}
	if kept := ix.Compact(7); len(kept) != 0 {
		t.Fatalf("after compacting past its tombstone: kept %v", kept)
	}
	if err := ix.Sane(); err != nil {
		t.Fatal(err)
	}
}
