// Package testseed gives randomized tests a seed that is printed and can be
// given back: set CAIRN_SEED=<n> to replay a run.
package testseed

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// Seed returns CAIRN_SEED if set, else a fresh seed, and logs it.
func Seed(tb testing.TB) int64 {
	tb.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("CAIRN_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			tb.Fatalf("CAIRN_SEED=%q: %v", s, err)
		}
		seed = v
	}
	tb.Logf("seed %d (replay with CAIRN_SEED=%d)", seed, seed)
	return seed
}
