// Command storage measures a member's storage under churn, for
// bench/storage.sh: it loads the member (--load puts of --value random
// bytes over --keys keys, --clients at a time), then writes at a fixed
// rate (open loop: a put is due on every tick, and its latency counts from
// then, so a stall shows in full) while it compacts physically at the
// current revision (unless --compact=false) and then defragments
// --defrags times. Each put's latency is put in the window it was due in:
//
//	base     before the compaction
//	compact  while the compaction call runs
//	post     after it, until the defragmentation (or the end)
//	defrag   while a defragmentation call runs
//	end      after it
//
// (one defrag and one end window a defragmentation).
//
// Output, one line a window: "window NAME puts p50 p99 max at" (ms; at:
// when the slowest put was due, in seconds from the window's start), then
// "size NAME bytes" for the file at the load's end, after the churn and
// after the defragmentation, and "call NAME ms" for the compaction and
// defragmentation calls.
//
// With --mode load it loads and stops; with --mode get it reads random keys
// of the key space (for bench/large.sh).
//
//	storage --endpoint http://127.0.0.1:2379 --keys 100000 --load 300000 --rate 2000
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

type config struct {
	endpoint       string
	keys, load     int
	value, clients int
	rate           int
	settle, after  time.Duration
	compact        bool
	defrags        int
	limit          time.Duration
	mode, prefix   string
	gets           int
	samples        string
}

func main() {
	var c config
	flag.StringVar(&c.endpoint, "endpoint", "", "the member's client URL")
	flag.IntVar(&c.keys, "keys", 100000, "key space")
	flag.IntVar(&c.load, "load", 300000, "puts before the churn")
	flag.IntVar(&c.value, "value", 1024, "value size, bytes")
	flag.IntVar(&c.clients, "clients", 100, "concurrent puts at most (load and churn)")
	flag.IntVar(&c.rate, "rate", 2000, "puts a second during the churn")
	flag.DurationVar(&c.settle, "settle", 10*time.Second, "churn before the compaction")
	flag.DurationVar(&c.after, "after", 20*time.Second, "churn after the compaction (and after the defragmentation)")
	flag.BoolVar(&c.compact, "compact", true, "compact physically after the settling churn (false: the defragmentations follow the base window)")
	flag.IntVar(&c.defrags, "defrags", 1, "defragmentations after the compaction's churn, each followed by --after of churn (a defrag and an end window each)")
	flag.StringVar(&c.mode, "mode", "churn", "churn: load, then the churn; load: the load alone; get: --gets gets of random keys of the key space")
	flag.StringVar(&c.prefix, "prefix", "key-", "keys are the prefix and a number")
	flag.IntVar(&c.gets, "gets", 2000, "gets a kind (--mode get)")
	flag.StringVar(&c.samples, "samples", "", "write every put of the churn to this file: when it was due (Unix ms) and its latency (ms)")
	flag.DurationVar(&c.limit, "limit", 30*time.Minute, "give up after this long")
	flag.Parse()
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "storage:", err)
		os.Exit(1)
	}
}

// sample is one put of the churn: when it was due and how long it took
// from then.
type sample struct {
	due time.Time
	lat time.Duration
	err bool
}

func run(c config) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.limit)
	defer cancel()
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{c.endpoint}, DialTimeout: 5 * time.Second,
		MaxCallSendMsgSize: 4 << 20})
	if err != nil {
		return err
	}
	defer cl.Close()
	val := make([]byte, c.value)
	key := func(i int) string { return fmt.Sprintf("%s%08d", c.prefix, i%c.keys) }
	if c.mode == "get" {
		return gets(ctx, cl, c, key)
	}
	put := func(ctx context.Context, i int) error {
		// Each value differs in its first 16 bytes; the rest is the
		// same random bytes (incompressible within a value).
		v := fmt.Sprintf("%016x", mrand.Uint64()) + string(val[min(len(val), 16):])
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		defer pcancel()
		_, err := cl.Put(pctx, key(i), v)
		return err
	}
	_, _ = rand.Read(val)

	// Load, closed loop.
	var next atomic.Int64
	var wg sync.WaitGroup
	var loadErr firstError
	for range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= c.load || ctx.Err() != nil {
					return
				}
				if err := put(ctx, i); err != nil {
					loadErr.set(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := loadErr.get(); err != nil {
		return fmt.Errorf("loading: %w", err)
	}
	size := func(name string) error {
		st, err := cl.Status(ctx, c.endpoint)
		if err != nil {
			return err
		}
		fmt.Printf("size %s %d\n", name, st.DbSize)
		return nil
	}
	if err := size("loaded"); err != nil {
		return err
	}
	if c.mode == "load" {
		return nil
	}

	// Churn, open loop: a ticker makes puts due; clients workers take them.
	due := make(chan time.Time, c.rate*60)
	var mu sync.Mutex
	var samples []sample
	stop := make(chan struct{})
	var ticks sync.WaitGroup
	ticks.Add(1)
	go func() {
		defer ticks.Done()
		defer close(due)
		start := time.Now()
		interval := time.Second / time.Duration(c.rate)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		sent := 0
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				for ; start.Add(time.Duration(sent) * interval).Before(now); sent++ {
					select {
					case due <- start.Add(time.Duration(sent) * interval):
					default: // more than a minute behind: the run is lost anyway
					}
				}
			}
		}
	}()
	var seq atomic.Int64
	for range c.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range due {
				err := put(ctx, c.load+int(seq.Add(1)))
				s := sample{due: d, lat: time.Since(d), err: err != nil}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
			}
		}()
	}

	type window struct {
		name     string
		from, to time.Time
	}
	var windows []window
	mark := time.Now()
	call := func(name string, f func() error) error {
		t := time.Now()
		err := f()
		fmt.Printf("call %s %d\n", name, time.Since(t).Milliseconds())
		return err
	}
	sleep := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// phase makes the call name (doing, in its error), then churns for
	// --after: a window for each, during and after.
	phase := func(name, doing, during, after string, f func() error) error {
		mark = time.Now()
		if err := call(name, f); err != nil {
			return fmt.Errorf("%s: %w", doing, err)
		}
		windows = append(windows, window{during, mark, time.Now()})
		mark = time.Now()
		if err := sleep(c.after); err != nil {
			return err
		}
		windows = append(windows, window{after, mark, time.Now()})
		return nil
	}
	if err := sleep(c.settle); err != nil {
		return err
	}
	windows = append(windows, window{"base", mark, time.Now()})
	if c.compact {
		err := phase("compact", "compacting", "compact", "post", func() error {
			st, err := cl.Get(ctx, "compaction-mark")
			if err != nil {
				return err
			}
			_, err = cl.Compact(ctx, st.Header.Revision, clientv3.WithCompactPhysical())
			return err
		})
		if err != nil {
			return err
		}
	}
	if err := size("churned"); err != nil {
		return err
	}
	for range c.defrags {
		err := phase("defrag", "defragmenting", "defrag", "end", func() error {
			dctx, dcancel := context.WithTimeout(ctx, 10*time.Minute)
			defer dcancel()
			_, err := cl.Defragment(dctx, c.endpoint)
			return err
		})
		if err != nil {
			return err
		}
		if err := size("defragmented"); err != nil {
			return err
		}
	}
	close(stop)
	ticks.Wait()
	wg.Wait()

	if c.samples != "" {
		if err := writeSamples(c.samples, samples); err != nil {
			return err
		}
	}
	errs := 0
	for _, w := range windows {
		var lat []time.Duration
		var worst sample
		for _, s := range samples {
			if s.due.Before(w.from) || !s.due.Before(w.to) {
				continue
			}
			if s.err {
				errs++
				continue
			}
			lat = append(lat, s.lat)
			if s.lat > worst.lat {
				worst = s
			}
		}
		at := 0.0
		if worst.lat > 0 {
			at = worst.due.Sub(w.from).Seconds()
		}
		fmt.Printf("window %s %s %.3f\n", w.name, summary(lat), at)
	}
	if errs > 0 {
		return fmt.Errorf("%d puts failed", errs)
	}
	return nil
}

// gets reads c.gets random keys of the key space, serializable and then
// linearizable, clients at a time, and prints "get KIND gets p50 p99 max"
// (ms) for each kind.
func gets(ctx context.Context, cl *clientv3.Client, c config, key func(int) string) error {
	for _, kind := range []string{"serializable", "linearizable"} {
		var opts []clientv3.OpOption
		if kind == "serializable" {
			opts = append(opts, clientv3.WithSerializable())
		}
		var mu sync.Mutex
		var lat []time.Duration
		var next atomic.Int64
		var failed firstError
		var wg sync.WaitGroup
		for range min(c.clients, c.gets) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(c.gets) {
					t := time.Now()
					r, err := cl.Get(ctx, key(mrand.IntN(c.keys)), opts...)
					d := time.Since(t)
					if err == nil && len(r.Kvs) != 1 {
						err = fmt.Errorf("a get found %d keys", len(r.Kvs))
					}
					if err != nil {
						failed.set(err)
						return
					}
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err := failed.get(); err != nil {
			return err
		}
		fmt.Printf("get %s %s\n", kind, summary(lat))
	}
	return nil
}

// writeSamples writes one line a put: when it was due (Unix ms), its
// latency (ms) and whether it failed (0 or 1), in the order they were due.
func writeSamples(path string, samples []sample) error {
	slices.SortFunc(samples, func(a, b sample) int { return a.due.Compare(b.due) })
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, s := range samples {
		failed := 0
		if s.err {
			failed = 1
		}
		fmt.Fprintf(w, "%d %.3f %d\n", s.due.UnixMilli(), float64(s.lat.Microseconds())/1000, failed)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// summary sorts lat and formats "count p50 p99 max" (ms).
func summary(lat []time.Duration) string {
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	return fmt.Sprintf("%d %.2f %.2f %.2f", len(lat), pct(0.5), pct(0.99), pct(1))
}

// firstError keeps the first error of several goroutines.
type firstError struct {
	mu  sync.Mutex
	err error
}

func (f *firstError) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

func (f *firstError) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
