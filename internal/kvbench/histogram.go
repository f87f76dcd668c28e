package kvbench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram counts durations in buckets whose width is at most 1/128 of
// their lower bound: exact below 256 ns, then 128 buckets for each power of
// two. A percentile it reports is the highest value of the bucket that
// holds the sample of that rank (never above the largest sample recorded),
// so it is at least the exact value and less than 1/128 (0.8%) above it.
// Count, sum, min and max are exact.
//
// The zero value is empty and ready. A Histogram is not safe for concurrent
// use; a run keeps one per shard of its clients and merges them.
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      time.Duration
	min, max time.Duration
}

const (
	subBits     = 7  // 128 buckets for each power of two
	maxBits     = 44 // durations up to 2^44 ns (4.9 h); longer ones count as that
	histBuckets = (maxBits-subBits-1)<<subBits + 2<<subBits
)

// bucketOf returns the bucket of v ns, v ≥ 0.
func bucketOf(v uint64) int {
	l := bits.Len64(v)
	if l <= subBits+1 {
		return int(v)
	}
	if l > maxBits {
		l, v = maxBits, 1<<maxBits-1
	}
	shift := l - (subBits + 1)
	return shift<<subBits + int(v>>shift)
}

// bucketHigh returns the highest value bucket i holds.
func bucketHigh(i int) uint64 {
	if i < 2<<subBits {
		return uint64(i)
	}
	shift := i>>subBits - 1
	v := uint64(i - shift<<subBits)
	return (v+1)<<shift - 1
}

// Record adds one sample; a negative duration counts as 0.
func (h *Histogram) Record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Reset empties h.
func (h *Histogram) Reset() { *h = Histogram{} }

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max returns the largest sample (0 when empty).
func (h *Histogram) Max() time.Duration { return h.max }

// Min returns the smallest sample (0 when empty).
func (h *Histogram) Min() time.Duration { return h.min }

// Mean returns the samples' mean (0 when empty).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// Percentile returns the sample of rank ⌈q/100·n⌉ (nearest rank; q in
// (0, 100]), as bucketed; 0 when empty.
func (h *Histogram) Percentile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q / 100 * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	if rank == h.n {
		return h.max
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == histBuckets-1 {
				return h.max // past the buckets' range
			}
			v := time.Duration(bucketHigh(i))
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// Distribution returns the values at the percentiles of a plot (1 to
// 99.9999, in steps that close in on 100) and at 100.
func (h *Histogram) Distribution() []Point {
	var out []Point
	for _, q := range plotPercentiles {
		out = append(out, Point{Q: q, D: h.Percentile(q)})
	}
	return append(out, Point{Q: 100, D: h.max})
}

// Point is a percentile and its value.
type Point struct {
	Q float64
	D time.Duration
}

// plotPercentiles: 1–90 by 1, then 9/10 of the way to 100 again and again
// (99, 99.9, ...) in tenths of each step.
var plotPercentiles = func() []float64 {
	var qs []float64
	for q := 1.0; q <= 90; q++ {
		qs = append(qs, q)
	}
	for lo, step := 90.0, 9.0; step >= 0.0009; lo, step = lo+step, step/10 {
		for k := 1; k <= 10; k++ {
			qs = append(qs, lo+step*float64(k)/10)
		}
	}
	return qs
}()
