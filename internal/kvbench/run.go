package kvbench

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/status"
)

// Op issues one request of a client and says what kind it was ("put",
// "get", "lease-grant", ...). A client's Op is called from one goroutine
// at a time.
type Op func(ctx context.Context) (kind string, err error)

// RunConfig says how many requests to issue, how fast and how long.
type RunConfig struct {
	// Total stops the run after that many requests (0: no limit);
	// Duration stops issuing after that long (0: no limit). One of them
	// must be set.
	Total    uint64
	Duration time.Duration
	// Rate, when above 0, is the open loop's requests a second (all
	// clients together): request i is due at start + i/Rate, and its
	// latency counts from then, so a stall is counted in full for every
	// request due during it. At 0 each client issues its next request when
	// its last one returns, and latency counts from the issue.
	Rate float64
	// Timeout bounds each request (0: none); a request over it fails with
	// DeadlineExceeded.
	Timeout time.Duration
	// Every Interval (default 1 s) Progress, when set, is given the run so
	// far; the result's timeline has one sample an interval either way.
	Interval time.Duration
	Progress func(Progress)
	// Clock is the time source (tests use a fake one); nil is the real
	// clock.
	Clock Clock
}

// Progress is the run at one moment: requests done so far and the rate
// over the last interval.
type Progress struct {
	Elapsed time.Duration
	Done    uint64
	Errors  uint64
	Rate    float64 // requests a second over the last interval
	Total   uint64  // the run's Total, 0 if it runs for a Duration
	Of      time.Duration
}

// Clock is what a run reads time from.
type Clock interface {
	Now() time.Time
	SleepUntil(ctx context.Context, t time.Time)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) SleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

// schedule hands out request numbers and their due times.
type schedule struct {
	start time.Time
	rate  float64
	total uint64
	end   time.Time // zero: none
	next  atomic.Uint64
}

// take returns the next request's number and due time; ok is false once
// the run has issued its total or its duration is over.
func (s *schedule) take(now time.Time) (i uint64, due time.Time, ok bool) {
	i = s.next.Add(1) - 1
	if s.total > 0 && i >= s.total {
		return 0, time.Time{}, false
	}
	due = now
	if s.rate > 0 {
		due = s.due(i)
	}
	if !s.end.IsZero() && !due.Before(s.end) {
		return 0, time.Time{}, false
	}
	return i, due, true
}

// due returns request i's due time in the open loop.
func (s *schedule) due(i uint64) time.Time {
	return s.start.Add(time.Duration(float64(i) * float64(time.Second) / s.rate))
}

// Result is what a run measured.
type Result struct {
	Elapsed  time.Duration
	Requests uint64 // done, failed or not
	Kinds    []*KindResult
	All      *Histogram // every kind's successful requests together (not events)
	Timeline []Sample
	Rate     float64 // the open loop's target, 0 for a closed loop
}

// KindResult is one kind of request's (or event's) latencies and errors.
type KindResult struct {
	Kind    string
	Hist    *Histogram // successful requests, timed events
	Untimed uint64     // events without a latency
	Event   bool       // events, not requests
	Errors  map[string]uint64
}

// Count returns the kind's successful requests or events.
func (k *KindResult) Count() uint64 { return k.Hist.Count() + k.Untimed }

// Failed returns the kind's errors.
func (k *KindResult) Failed() (n uint64) {
	for _, c := range k.Errors {
		n += c
	}
	return n
}

// Errors returns every error, counted by code and message, of all kinds.
func (r *Result) Errors() map[string]uint64 {
	all := map[string]uint64{}
	for _, k := range r.Kinds {
		for e, c := range k.Errors {
			all[e] += c
		}
	}
	return all
}

// Throughput returns the requests done a second (failed ones included).
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Sample is one interval of the run: the requests that ended in it and
// their latency percentiles (successful requests, all kinds).
type Sample struct {
	At       time.Duration // the interval's end, from the run's start
	Done     uint64
	Errors   uint64
	Rate     float64
	P50, P99 time.Duration
	Max      time.Duration
}

// Recorder collects latencies from many goroutines: each records into its
// shard (a lock each), and the run merges the shards.
type Recorder struct {
	shards []shard
	done   atomic.Uint64
	failed atomic.Uint64
}

type shard struct {
	mu    sync.Mutex
	kinds map[string]*kindStats
	_     [40]byte // keeps shards' locks off each other's cache lines
}

type kindStats struct {
	total, interval Histogram
	untimed         uint64
	event           bool // recorded by Event or Count
	errors          map[string]uint64
}

// NewRecorder returns a recorder with n shards.
func NewRecorder(n int) *Recorder {
	r := &Recorder{shards: make([]shard, max(n, 1))}
	for i := range r.shards {
		r.shards[i].kinds = map[string]*kindStats{}
	}
	return r
}

// Record adds one request of kind that took d (err nil) or failed, into
// shard i (modulo the shards).
func (r *Recorder) Record(i int, kind string, d time.Duration, err error) {
	s, k := r.kind(i, kind)
	if err == nil {
		k.total.Record(d)
		k.interval.Record(d)
	} else {
		k.errors[ErrorCode(err)]++
	}
	s.mu.Unlock()
	r.done.Add(1)
	if err != nil {
		r.failed.Add(1)
	}
}

// Event adds one event of kind that is not a request (a watch's delivery)
// and took d.
func (r *Recorder) Event(i int, kind string, d time.Duration) {
	s, k := r.kind(i, kind)
	k.event = true
	k.total.Record(d)
	s.mu.Unlock()
}

// Count adds one event of kind that has no latency.
func (r *Recorder) Count(i int, kind string) {
	s, k := r.kind(i, kind)
	k.event = true
	k.untimed++
	s.mu.Unlock()
}

// kind returns shard i's stats of kind, with the shard locked.
func (r *Recorder) kind(i int, kind string) (*shard, *kindStats) {
	s := &r.shards[i%len(r.shards)]
	s.mu.Lock()
	k := s.kinds[kind]
	if k == nil {
		k = &kindStats{errors: map[string]uint64{}}
		s.kinds[kind] = k
	}
	return s, k
}

// sample merges and empties every shard's interval histograms.
func (r *Recorder) sample(into *Histogram) {
	into.Reset()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for _, k := range s.kinds {
			into.Merge(&k.interval)
			k.interval.Reset()
		}
		s.mu.Unlock()
	}
}

// result merges the shards by kind.
func (r *Recorder) result() ([]*KindResult, *Histogram) {
	byKind := map[string]*KindResult{}
	all := &Histogram{}
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for name, k := range s.kinds {
			kr := byKind[name]
			if kr == nil {
				kr = &KindResult{Kind: name, Hist: &Histogram{}, Event: k.event, Errors: map[string]uint64{}}
				byKind[name] = kr
			}
			kr.Hist.Merge(&k.total)
			kr.Untimed += k.untimed
			if !k.event {
				all.Merge(&k.total)
			}
			for e, c := range k.errors {
				kr.Errors[e] += c
			}
		}
		s.mu.Unlock()
	}
	var out []*KindResult
	for _, k := range byKind {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Kind < out[j].Kind })
	return out, all
}

// ErrorCode names an error as a count of errors is keyed: its gRPC code
// and etcd's message ("Unavailable: etcdserver: leader changed").
func ErrorCode(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "DeadlineExceeded: " + err.Error()
	case errors.Is(err, context.Canceled):
		return "Canceled: " + err.Error()
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", s.Code(), rpctypes.ErrorDesc(err))
	}
	return "Unknown: " + err.Error()
}

// Run calls ops (one a client, each from a goroutine of its own) as cfg
// says, and measures them into rec (nil: a recorder of its own), which
// whatever else the workload runs (its watchers) may record into too. Run
// returns when every client has stopped, or ctx is done (with its error).
func Run(ctx context.Context, cfg RunConfig, ops []Op, rec *Recorder) (*Result, error) {
	if cfg.Total == 0 && cfg.Duration <= 0 {
		return nil, errors.New("kvbench: a run needs --total or --duration")
	}
	if len(ops) == 0 {
		return nil, errors.New("kvbench: a run needs at least one client")
	}
	clock := cfg.Clock
	if clock == nil {
		clock = realClock{}
	}
	interval := cfg.Interval
	if interval <= 0 {
		interval = time.Second
	}
	if rec == nil {
		rec = NewRecorder(min(len(ops), 64))
	}
	start := clock.Now()
	s := &schedule{start: start, rate: cfg.Rate, total: cfg.Total}
	if cfg.Duration > 0 {
		s.end = start.Add(cfg.Duration)
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	for c, op := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				_, due, ok := s.take(clock.Now())
				if !ok {
					return
				}
				clock.SleepUntil(ctx, due)
				if ctx.Err() != nil {
					return
				}
				issued := clock.Now()
				if cfg.Rate > 0 {
					issued = due
				}
				rctx, rcancel := ctx, context.CancelFunc(func() {})
				if cfg.Timeout > 0 {
					rctx, rcancel = context.WithTimeout(ctx, cfg.Timeout)
				}
				kind, err := op(rctx)
				rcancel()
				if ctx.Err() != nil && err != nil {
					return // the run was stopped: the request is not counted
				}
				rec.Record(c, kind, clock.Now().Sub(issued), err)
			}
		}()
	}
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()

	res := &Result{Rate: cfg.Rate}
	var h Histogram
	lastDone, lastAt := uint64(0), time.Duration(0)
	addSample := func(final bool) {
		at := clock.Now().Sub(start)
		if final && at <= lastAt {
			return
		}
		rec.sample(&h)
		done, failed := rec.done.Load(), rec.failed.Load()
		smp := Sample{At: at, Done: done - lastDone, Errors: failed, P50: h.Percentile(50), P99: h.Percentile(99), Max: h.Max()}
		if d := at - lastAt; d > 0 {
			smp.Rate = float64(smp.Done) / d.Seconds()
		}
		res.Timeline = append(res.Timeline, smp)
		lastDone, lastAt = done, at
		if cfg.Progress != nil {
			cfg.Progress(Progress{Elapsed: at, Done: done, Errors: failed, Rate: smp.Rate, Total: cfg.Total, Of: cfg.Duration})
		}
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	// A fake clock's run is sampled only at its end: the ticker's
	// intervals are not its time.
	_, realTime := clock.(realClock)
	for loop := true; loop; {
		select {
		case <-stopped:
			loop = false
		case <-ctx.Done():
			<-stopped
			loop = false
		case <-tick.C:
			if realTime {
				addSample(false)
			}
		}
	}
	addSample(true)
	res.Elapsed = clock.Now().Sub(start)
	res.Requests = rec.done.Load()
	res.Kinds, res.All = rec.result()
	return res, parent.Err()
}
