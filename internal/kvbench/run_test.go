package kvbench

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeClock is virtual time: sleeping moves it forward at once, and an
// operation moves it by its service time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(_ context.Context, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.After(c.now) {
		c.now = t
	}
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// stallingOp serves each request in 1 ms, and request stallAt in stall.
func stallingOp(c *fakeClock, stallAt int, stall time.Duration, n *int) Op {
	return func(context.Context) (string, error) {
		d := time.Millisecond
		if *n == stallAt {
			d = stall
		}
		*n++
		c.advance(d)
		return "op", nil
	}
}

// TestOpenLoopCountsStallsWhole: in the open loop (100 a second, one
// client, 1 ms a request), a 200 ms stall of request 50 (due at 500 ms)
// delays the next 22, and each one's latency counts from its due time:
// request 50+k ends at 700+k ms, 200-9k ms after it was due. The closed
// loop sees one slow request and 1 ms for the rest.
func TestOpenLoopCountsStallsWhole(t *testing.T) {
	open := func(rate float64) *Result {
		c := &fakeClock{now: time.Unix(1000, 0)}
		var n int
		res, err := Run(context.Background(), RunConfig{Total: 100, Rate: rate, Clock: c}, []Op{stallingOp(c, 50, 200*time.Millisecond, &n)}, nil)
		require.NoError(t, err)
		require.Equal(t, 100, n)
		require.Equal(t, uint64(100), res.Requests)
		return res
	}
	res := open(100)
	h := res.Kinds[0].Hist
	require.Equal(t, uint64(100), h.Count())
	require.Equal(t, 200*time.Millisecond, h.Max(), "the stalled request")
	var want Histogram
	for range 77 {
		want.Record(time.Millisecond)
	}
	want.Record(200 * time.Millisecond)
	for k := 1; k <= 22; k++ {
		want.Record(time.Duration(200-9*k) * time.Millisecond)
	}
	require.Equal(t, want, *h)
	require.Equal(t, 991*time.Millisecond, res.Elapsed, "the last request is due at 990 ms and takes 1")

	closed := open(0)
	var wantClosed Histogram
	for range 99 {
		wantClosed.Record(time.Millisecond)
	}
	wantClosed.Record(200 * time.Millisecond)
	require.Equal(t, wantClosed, *closed.Kinds[0].Hist)
	require.Equal(t, 299*time.Millisecond, closed.Elapsed)
}

// TestOpenLoopSchedule: request i is due at start + i/rate, each number
// is handed out once however many clients take them, and a duration ends
// the schedule at the first request due at or after its end.
func TestOpenLoopSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	s := &schedule{start: start, rate: 3, end: start.Add(2 * time.Second)}
	for i := range uint64(6) {
		n, due, ok := s.take(start)
		require.True(t, ok)
		require.Equal(t, i, n)
		require.Equal(t, start.Add(time.Duration(i)*time.Second/3), due)
	}
	_, _, ok := s.take(start)
	require.False(t, ok, "request 6 is due at the end")

	s = &schedule{start: start, rate: 1000, total: 10000}
	var taken [10000]atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n, _, ok := s.take(start)
				if !ok {
					return
				}
				taken[n].Add(1)
			}
		}()
	}
	wg.Wait()
	for i := range taken {
		require.Equal(t, int32(1), taken[i].Load(), "request %d", i)
	}
}

// TestRunCountsErrorsByCode: failed requests are counted by code and
// message, not timed; a cancelled run stops its clients and does not
// count the requests it cut short.
func TestRunCountsErrorsByCode(t *testing.T) {
	var n atomic.Int64
	op := func(context.Context) (string, error) {
		switch n.Add(1) % 4 {
		case 0:
			return "put", status.Error(codes.Unavailable, "etcdserver: leader changed")
		case 1:
			return "put", status.Error(codes.InvalidArgument, "etcdserver: request is too large")
		}
		return "put", nil
	}
	res, err := Run(context.Background(), RunConfig{Total: 1000}, []Op{op, op, op}, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(1000), res.Requests)
	require.Len(t, res.Kinds, 1)
	require.Equal(t, uint64(500), res.Kinds[0].Hist.Count())
	require.Equal(t, map[string]uint64{
		"Unavailable: etcdserver: leader changed":           250,
		"InvalidArgument: etcdserver: request is too large": 250,
	}, res.Errors())

	ctx, cancel := context.WithCancel(context.Background())
	var done atomic.Int64
	blocking := func(ctx context.Context) (string, error) {
		if done.Add(1) == 2 { // both clients are waiting
			cancel()
		}
		<-ctx.Done()
		return "get", ctx.Err()
	}
	res, err = Run(ctx, RunConfig{Duration: time.Hour}, []Op{blocking, blocking}, nil)
	require.True(t, errors.Is(err, context.Canceled))
	require.Zero(t, res.Requests, "the requests the cancel cut short are not counted")
}
