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
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

// ErrInjected is the error a point armed by EnableSpec with "error"
// returns: an I/O error, as the code at the point would see one.
var ErrInjected = &os.PathError{Op: "failpoint", Path: "", Err: syscall.EIO}

// EnableSpec arms the points a spec names, for a process started by a
// test (cmd/cairn reads CAIRN_FAILPOINTS), in the form etcd's gofail
// reads from GOFAIL_FAILPOINTS: "name=term;name=term". A term is "error"
// (Hit returns ErrInjected) or "panic" (a crash at the point), either
// after "N*off->": the first N hits pass. A spec it cannot read arms
// nothing.
func EnableSpec(spec string) error {
	type point struct {
		name   string
		skip   int
		action string
	}
	var points []point
	for _, part := range strings.Split(spec, ";") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		name, term, ok := strings.Cut(part, "=")
		if !ok || name == "" {
			return fmt.Errorf("failpoint: %q: want name=term", part)
		}
		p := point{name: name, action: term}
		if off, action, ok := strings.Cut(term, "*off->"); ok {
			n, err := strconv.Atoi(off)
			if err != nil || n < 0 {
				return fmt.Errorf("failpoint: %q: want N*off->action", part)
			}
			p.skip, p.action = n, action
		}
		if p.action != "error" && p.action != "panic" {
			return fmt.Errorf("failpoint: %q: the action is error or panic", part)
		}
		points = append(points, p)
	}
	for _, p := range points {
		var hits atomic.Int64
		Enable(p.name, func() error {
			if hits.Add(1) <= int64(p.skip) {
				return nil
			}
			if p.action == "panic" {
				panic("failpoint " + p.name)
			}
			return ErrInjected
		})
	}
	return nil
}
