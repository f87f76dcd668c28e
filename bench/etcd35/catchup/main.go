// Command catchup measures a learner catching up, for bench/catchup.sh:
// it reads the leader's raft index, then writes to the leader at a fixed
// rate (open loop: a put starts on every tick whether or not the one
// before has answered) until the learner's applied index reaches that
// index, and prints the time that took and the latency of the puts
// meanwhile.
//
//	catchup --leader http://127.0.0.1:2379 --learner http://127.0.0.1:2479 --rate 200
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	leader := flag.String("leader", "", "the leader's client URL")
	learner := flag.String("learner", "", "the learner's client URL")
	rate := flag.Int("rate", 200, "puts a second on the leader meanwhile")
	limit := flag.Duration("limit", 10*time.Minute, "give up after this long")
	flag.Parse()
	if err := run(*leader, *learner, *rate, *limit); err != nil {
		fmt.Fprintln(os.Stderr, "catchup:", err)
		os.Exit(1)
	}
}

func run(leader, learner string, rate int, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cl, err := clientv3.New(clientv3.Config{Endpoints: []string{leader}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer cl.Close()
	lc, err := clientv3.New(clientv3.Config{Endpoints: []string{learner}, DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer lc.Close()
	st, err := cl.Status(ctx, leader)
	if err != nil {
		return err
	}
	target := st.RaftIndex
	start := time.Now()

	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := time.Now()
				pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := cl.Put(pctx, fmt.Sprintf("catchup-%08d", n), "v")
				pcancel()
				mu.Lock()
				if err != nil {
					errs++
				} else {
					lat = append(lat, time.Since(t))
				}
				mu.Unlock()
			}()
		}
	}()

	var caught time.Duration
	for {
		st, err := lc.Status(ctx, learner)
		if err == nil && st.RaftAppliedIndex >= target {
			caught = time.Since(start)
			break
		}
		if ctx.Err() != nil {
			close(stop)
			wg.Wait()
			return fmt.Errorf("the learner did not reach index %d within %v", target, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	// One line: catch-up ms, target index, puts, errors, p50, p99, max (ms).
	fmt.Printf("%d %d %d %d %.2f %.2f %.2f\n", caught.Milliseconds(), target, len(lat), errs, pct(0.5), pct(0.99), pct(1))
	return nil
}
