package kvbench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// TestHistogramAgainstSort: every percentile the histogram reports is the
// exact nearest-rank value of the samples (sorted), or above it by less
// than 1/128 of it; count, min, max and mean are exact; a merge of parts
// equals the whole.
func TestHistogramAgainstSort(t *testing.T) {
	seed := uint64(testseed.Seed(t))
	r := rand.New(rand.NewPCG(seed, seed))
	draws := map[string]func() time.Duration{
		"uniform µs":  func() time.Duration { return time.Duration(r.Int64N(int64(time.Millisecond))) },
		"exponential": func() time.Duration { return time.Duration(r.ExpFloat64() * float64(2*time.Millisecond)) },
		"log-uniform": func() time.Duration { return time.Duration(math.Exp(r.Float64() * math.Log(float64(100*time.Second)))) },
		"small":       func() time.Duration { return time.Duration(r.Int64N(300)) },
		"bimodal": func() time.Duration {
			if r.IntN(100) == 0 {
				return time.Duration(r.Int64N(int64(time.Second)))
			}
			return time.Duration(r.Int64N(int64(time.Millisecond)))
		},
	}
	for name, draw := range draws {
		for _, n := range []int{1, 2, 10, 999, 20000} {
			var whole, a, b Histogram
			samples := make([]time.Duration, n)
			var sum time.Duration
			for i := range samples {
				d := draw()
				samples[i] = d
				sum += d
				whole.Record(d)
				if i%3 == 0 {
					a.Record(d)
				} else {
					b.Record(d)
				}
			}
			a.Merge(&b)
			require.Equal(t, whole, a, "%s, %d samples: a merge of parts is the whole", name, n)
			slices.Sort(samples)
			require.Equal(t, uint64(n), whole.Count())
			require.Equal(t, samples[0], whole.Min())
			require.Equal(t, samples[n-1], whole.Max())
			require.Equal(t, sum/time.Duration(n), whole.Mean())
			for _, q := range append([]float64{0.1, 1, 25, 33.3, 75, 99.99, 100}, Percentiles...) {
				rank := int(math.Ceil(q / 100 * float64(n)))
				exact := samples[max(rank, 1)-1]
				got := whole.Percentile(q)
				require.GreaterOrEqual(t, got, exact, "%s, %d samples, p%g", name, n, q)
				require.LessOrEqual(t, float64(got-exact), float64(exact)/128, "%s, %d samples, p%g: %v against %v", name, n, q, got, exact)
			}
		}
	}
}

// TestHistogramBuckets: the buckets tile the values without gaps, each at
// most 1/128 of its lowest value wide; values past the range land in the
// last bucket.
func TestHistogramBuckets(t *testing.T) {
	low := uint64(0)
	for i := range histBuckets {
		high := bucketHigh(i)
		require.Equal(t, i, bucketOf(low), "bucket %d's lowest value", i)
		require.Equal(t, i, bucketOf(high), "bucket %d's highest value", i)
		require.LessOrEqual(t, float64(high-low), float64(low)/128+0.5, "bucket %d [%d, %d]", i, low, high)
		low = high + 1
	}
	require.Equal(t, uint64(1)<<maxBits, low, "the buckets end at 2^%d", maxBits)
	require.Equal(t, histBuckets-1, bucketOf(math.MaxUint64))
	var h Histogram
	h.Record(-time.Second)
	h.Record(time.Duration(math.MaxInt64))
	require.Equal(t, time.Duration(0), h.Percentile(50))
	require.Equal(t, time.Duration(math.MaxInt64), h.Percentile(100), "the max is exact past the buckets")
}
