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
