package transport

import (
	"sync"
	"time"
)

// Faults is a network fault hook for tests: messages from one member to
// another are dropped while that link is cut, and delayed by a link's
// delay. One Faults may be shared by every member of a test cluster; each
// transport applies it to what it sends.
type Faults struct {
	mu     sync.Mutex
	cuts   map[[2]uint64]bool
	delays map[[2]uint64]time.Duration
}

// Cut drops every message from a to b until healed (one way).
func (f *Faults) Cut(a, b uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cuts == nil {
		f.cuts = map[[2]uint64]bool{}
	}
	f.cuts[[2]uint64{a, b}] = true
}

// Partition cuts both ways every link between a member of side and one of
// rest.
func (f *Faults) Partition(side, rest []uint64) {
	for _, a := range side {
		for _, b := range rest {
			f.Cut(a, b)
			f.Cut(b, a)
		}
	}
}

// Delay holds each frame from a to b for d before it goes.
func (f *Faults) Delay(a, b uint64, d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.delays == nil {
		f.delays = map[[2]uint64]time.Duration{}
	}
	f.delays[[2]uint64{a, b}] = d
}

// Heal removes every cut and delay.
func (f *Faults) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cuts, f.delays = nil, nil
}

func (f *Faults) cut(a, b uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cuts[[2]uint64{a, b}]
}

func (f *Faults) delay(a, b uint64) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.delays[[2]uint64{a, b}]
}
