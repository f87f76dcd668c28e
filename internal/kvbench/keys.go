package kvbench

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
)

// Keys names the keys a workload touches: key i of the space is the prefix
// followed by i big-endian, padded with zeros to the key size (so the keys
// sort in the order of i, and a range over the prefix holds them all).
type Keys struct {
	Prefix string
	Size   int    // bytes a key, prefix included; at least len(Prefix)+1
	Space  uint64 // keys 0 to Space-1
	Dist   string // "sequential", "uniform" or "zipfian"
	Zipf   float64
	next   atomic.Uint64
}

// Dists are the key distributions a workload may draw from.
var Dists = []string{"sequential", "uniform", "zipfian"}

// Validate reports what is wrong with the key settings.
func (k *Keys) Validate() error {
	switch {
	case k.Space == 0:
		return fmt.Errorf("--key-space must be at least 1")
	case k.Size < len(k.Prefix)+1:
		return fmt.Errorf("--key-size %d leaves no room after the prefix %q", k.Size, k.Prefix)
	case k.Size-len(k.Prefix) < 8 && k.Space-1 >= 1<<(8*(k.Size-len(k.Prefix))):
		return fmt.Errorf("--key-space %d does not fit in %d bytes after the prefix; raise --key-size", k.Space, k.Size-len(k.Prefix))
	case k.Dist == "zipfian" && k.Zipf <= 1:
		return fmt.Errorf("--zipf-s must be above 1, not %g", k.Zipf)
	}
	for _, d := range Dists {
		if d == k.Dist {
			return nil
		}
	}
	return fmt.Errorf("--key-dist %q: want one of %v", k.Dist, Dists)
}

// Key returns key i.
func (k *Keys) Key(i uint64) string { return string(k.AppendKey(nil, i)) }

// AppendKey appends key i to dst (a client reuses one buffer: dst[:0]).
func (k *Keys) AppendKey(dst []byte, i uint64) []byte {
	dst = append(dst, k.Prefix...)
	var be [8]byte
	binary.BigEndian.PutUint64(be[:], i)
	w := k.Size - len(k.Prefix)
	for range w - 8 {
		dst = append(dst, 0)
	}
	return append(dst, be[8-min(w, 8):]...)
}

// End returns the key just past the space's keys: [Key(0), End()) holds
// them all.
func (k *Keys) End() string {
	if k.Prefix == "" {
		return "\x00" // every key from Key(0) on
	}
	p := []byte(k.Prefix)
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] < 0xff {
			p[i]++
			return string(p[:i+1])
		}
	}
	return "\x00"
}

// Picker draws key indexes for one client.
type Picker struct {
	k    *Keys
	r    *rand.Rand
	zipf *rand.Zipf
}

// Picker returns a picker seeded with seed (sequential keys are shared by
// every picker: each index is taken once, in order, wrapping at the space).
func (k *Keys) Picker(seed uint64) *Picker {
	p := &Picker{k: k, r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	if k.Dist == "zipfian" {
		p.zipf = rand.NewZipf(p.r, k.Zipf, 1, k.Space-1)
	}
	return p
}

// Next returns the index of the next key.
func (p *Picker) Next() uint64 {
	switch p.k.Dist {
	case "sequential":
		return (p.k.next.Add(1) - 1) % p.k.Space
	case "zipfian":
		return p.zipf.Uint64()
	default:
		return p.r.Uint64N(p.k.Space)
	}
}

// Float returns a number in [0, 1) (for a workload's mix).
func (p *Picker) Float() float64 { return p.r.Float64() }
