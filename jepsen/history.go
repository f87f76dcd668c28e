package jepsen

import (
	"bufio"
	"cmp"
	"encoding/json"
	"io"
	"slices"
	"sync"
	"time"
)

// Status is how an operation ended. An unknown outcome (a write whose
// answer was lost, or that timed out) may or may not have happened, and
// every checker treats it so: it may take effect at any time after its
// call, or never.
type Status string

const (
	StatusOK      Status = "ok"
	StatusFail    Status = "fail"    // did not happen
	StatusUnknown Status = "unknown" // may have happened
)

// Event is one line of a history: an operation's invocation, or its
// completion (ok, fail or unknown), as Jepsen records them.
type Event struct {
	Index   int    `json:"index"`
	Type    string `json:"type"` // "invoke", or the Status it ended with
	Process int    `json:"process"`
	F       string `json:"f"`
	Value   any    `json:"value,omitempty"`
	Time    int64  `json:"time"` // nanoseconds since the run started
	Member  int    `json:"member"`
	Error   string `json:"error,omitempty"`
}

// Op is an operation with its invocation and completion put together:
// what checkers read. An unknown outcome has Return math.MaxInt64 for
// porcupine (it may take effect at any time after its call).
type Op struct {
	Process int
	F       string
	In, Out any
	Call    int64
	Return  int64
	Status  Status
	Err     string
	Member  int
}

// History records a run's operations as they happen, from any number of
// goroutines, and writes them as JSON lines (history.jsonl).
type History struct {
	start time.Time

	mu     sync.Mutex
	events int // written so far: the next event's index
	ops    []*Op
	w      io.Writer // events are written as they complete, if set
	werr   error
}

// NewHistory starts a history at now; w, if not nil, receives every
// event as a JSON line.
func NewHistory(w io.Writer) *History {
	return &History{start: time.Now(), w: w}
}

// Now is the time since the history started, in nanoseconds, on the
// monotonic clock every event uses.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Pending is an operation invoked and not yet completed.
type Pending struct {
	h  *History
	op *Op
}

// Invoke records that process calls f with in on member.
func (h *History) Invoke(process int, f string, in any, member int) *Pending {
	op := &Op{Process: process, F: f, In: in, Member: member}
	h.mu.Lock()
	defer h.mu.Unlock()
	op.Call = h.Now()
	h.appendLocked(Event{Type: "invoke", Process: process, F: f, Value: in, Time: op.Call, Member: member})
	return &Pending{h: h, op: op}
}

// OK completes the operation with out.
func (p *Pending) OK(out any) { p.complete(StatusOK, out, nil) }

// Fail completes the operation as one that did not happen.
func (p *Pending) Fail(err error) { p.complete(StatusFail, nil, err) }

// Unknown completes the operation as one that may have happened.
func (p *Pending) Unknown(err error) { p.complete(StatusUnknown, nil, err) }

func (p *Pending) complete(s Status, out any, err error) {
	h := p.h
	h.mu.Lock()
	defer h.mu.Unlock()
	op := p.op
	op.Return, op.Status, op.Out = h.Now(), s, out
	if err != nil {
		op.Err = err.Error()
	}
	h.ops = append(h.ops, op)
	h.appendLocked(Event{Type: string(s), Process: op.Process, F: op.F, Value: out, Time: op.Return, Member: op.Member, Error: op.Err})
}

func (h *History) appendLocked(e Event) {
	e.Index = h.events
	h.events++
	if h.w != nil && h.werr == nil {
		b, err := json.Marshal(e)
		if err == nil {
			_, err = h.w.Write(append(b, '\n'))
		}
		h.werr = err
	}
}

// Flush flushes w, the buffer the history is written through, and
// returns the first error writing the history out.
func (h *History) Flush(w *bufio.Writer) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := w.Flush(); h.werr == nil {
		h.werr = err
	}
	return h.werr
}

// Ops returns the completed operations whose f is one of fs (all if
// none), in the order they were called.
func (h *History) Ops(fs ...string) []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ops []Op
	for _, op := range h.ops {
		if len(fs) == 0 || slices.Contains(fs, op.F) {
			ops = append(ops, *op)
		}
	}
	slices.SortFunc(ops, func(a, b Op) int { return cmp.Compare(a.Call, b.Call) })
	return ops
}
