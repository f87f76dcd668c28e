// Package failpoint provides named points in the code where tests can inject
// an error or a crash.
//
// Production code calls Hit at a named point; it costs one atomic load while
// no failpoint is enabled. A test enables a point with a function that decides
// what happens there: return an error (the caller treats it as an I/O error),
// panic (a simulated process crash), or record that the point was reached.
//
//	if err := failpoint.Hit("pagefile/beforeMetaWrite"); err != nil {
//		return err
//	}
//
// Names are "<package>/<point>" and are listed in each package's doc.
package failpoint

import (
	"sync"
	"sync/atomic"
)

var (
	enabled atomic.Int32 // number of enabled points; 0 keeps Hit on its fast path

	mu     sync.Mutex
	points = map[string]func() error{}
)

// Enable arms the named point: every Hit of it calls fn and returns its
// result. Enabling an armed point replaces its function.
func Enable(name string, fn func() error) {
	mu.Lock()
	defer mu.Unlock()
	if _, ok := points[name]; !ok {
		enabled.Add(1)
	}
	points[name] = fn
}

// Disable disarms the named point. Disabling a point that is not armed does
// nothing.
func Disable(name string) {
	mu.Lock()
	defer mu.Unlock()
	if _, ok := points[name]; ok {
		delete(points, name)
		enabled.Add(-1)
	}
}

// Hit runs the function armed at name, if any, and returns its error.
func Hit(name string) error {
	if enabled.Load() == 0 {
		return nil
	}
	mu.Lock()
	fn := points[name]
	mu.Unlock()
	if fn == nil {
		return nil
	}
	return fn()
}
