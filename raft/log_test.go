package raft

import (
	"math/rand"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// TestLogChunksAgainstSlice drives the chunked log and a plain slice with
// the same random appends and truncations and compares every read.
func TestLogChunksAgainstSlice(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	l := newLog(0, 0, nil, 0, 0)
	model := []Entry{{}}
	for step := 0; step < 20000; step++ {
		if rng.Intn(10) == 0 && len(model) > 1 {
			first := uint64(1 + rng.Intn(len(model)-1))
			n := 1 + rng.Intn(3*chunkSize)
			ents := make([]Entry, n)
			for i := range ents {
				ents[i] = Entry{Term: uint64(step), Index: first + uint64(i)}
			}
			l.truncateAndAppend(ents)
			model = append(model[:first], ents...)
		} else {
			e := Entry{Term: uint64(step), Index: uint64(len(model))}
			l.truncateAndAppend([]Entry{e})
			model = append(model, e)
		}
		if l.lastIndex() != uint64(len(model)-1) {
			t.Fatalf("step %d: last index %d, want %d", step, l.lastIndex(), len(model)-1)
		}
		lo := uint64(rng.Intn(len(model)))
		hi := lo + uint64(rng.Intn(len(model)-int(lo)+1))
		got := l.slice(lo, hi)
		if len(got) != int(hi-lo) {
			t.Fatalf("step %d: slice(%d,%d) has %d entries", step, lo, hi, len(got))
		}
		for i, e := range got {
			if e.Term != model[lo+uint64(i)].Term || e.Index != model[lo+uint64(i)].Index {
				t.Fatalf("step %d: slice(%d,%d)[%d] = %+v, want %+v", step, lo, hi, i, e, model[lo+uint64(i)])
			}
		}
	}
}

// TestNewRefusesBadStorage: a node does not start from a persisted state
// that cannot be right.
func TestNewRefusesBadStorage(t *testing.T) {
	base := Config{ID: 1, Peers: []uint64{1, 2, 3}, ElectionTick: 10, HeartbeatTick: 1, Rand: rand.New(rand.NewSource(1))}
	cases := map[string]func(c *Config){
		"gap":                 func(c *Config) { c.Entries = []Entry{{Term: 1, Index: 1}, {Term: 1, Index: 3}}; c.HardState.Term = 1 },
		"term goes down":      func(c *Config) { c.Entries = []Entry{{Term: 2, Index: 1}, {Term: 1, Index: 2}}; c.HardState.Term = 2 },
		"commit past the log": func(c *Config) { c.Entries = []Entry{{Term: 1, Index: 1}}; c.HardState = HardState{Term: 1, Commit: 2} },
		"entry past the term": func(c *Config) { c.Entries = []Entry{{Term: 3, Index: 1}}; c.HardState = HardState{Term: 2} },
		"applied past commit": func(c *Config) {
			c.Entries = []Entry{{Term: 1, Index: 1}}
			c.HardState = HardState{Term: 1}
			c.Applied = 1
		},
		"not after snapshot": func(c *Config) {
			c.Snapshot = &SnapshotMeta{Index: 5, Term: 1, Voters: []uint64{1, 2, 3}}
			c.Entries = []Entry{{Term: 1, Index: 5}}
			c.HardState = HardState{Term: 1, Commit: 5}
		},
	}
	for name, mutate := range cases {
		c := base
		mutate(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	c := base
	c.Snapshot = &SnapshotMeta{Index: 5, Term: 1, Voters: []uint64{1, 2, 3}}
	c.Entries = []Entry{{Term: 1, Index: 6}, {Term: 2, Index: 7}}
	c.HardState = HardState{Term: 2, Vote: 1, Commit: 6}
	c.Applied = 5
	if _, err := New(c); err != nil {
		t.Errorf("a sound persisted state: %v", err)
	}
}

// TestCatchUpFrom: the entries kept up to an index for slow followers are
// bounded by count and by data size, whichever bounds first; an entry
// larger than the bound keeps none.
func TestCatchUpFrom(t *testing.T) {
	var ents []Entry
	for i := uint64(1); i <= 10; i++ {
		ents = append(ents, Entry{Term: 1, Index: i, Data: make([]byte, 100*i)}) // 100, 200, ... 1000 bytes
	}
	r, err := New(Config{ID: 1, Peers: []uint64{1}, ElectionTick: 10, HeartbeatTick: 1, Rand: rand.New(rand.NewSource(1)),
		HardState: HardState{Term: 1, Commit: 10}, Entries: ents, Applied: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		index, keep uint64
		maxBytes    int
		want        uint64
	}{
		{10, 3, 1 << 20, 7},   // the count bounds: 8, 9, 10 kept
		{10, 100, 1 << 20, 0}, // everything
		{10, 100, 1900, 8},    // 1000 + 900 fit, 800 more does not
		{10, 100, 999, 10},    // not even the last
		{6, 2, 1 << 20, 4},    // up to an earlier index
	} {
		if got := r.CatchUpFrom(tc.index, tc.keep, tc.maxBytes); got != tc.want {
			t.Errorf("CatchUpFrom(%d, %d, %d) = %d, want %d", tc.index, tc.keep, tc.maxBytes, got, tc.want)
		}
	}
}
