// Package testleak checks, in tests, that what a test started has ended.
package testleak

import (
	"runtime"
	"testing"
	"time"
)

// Goroutines waits (at most a second) until no more goroutines run than
// before, and fails the test with every goroutine's stack if more still do.
func Goroutines(t testing.TB, before int) {
	t.Helper()
	for i := 0; runtime.NumGoroutine() > before; i++ {
		if i == 1000 {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left (%d before):\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}
