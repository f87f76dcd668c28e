package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The loads of check perf: puts a second, clients, seconds.
var perfLoads = map[string]struct{ limit, clients, seconds int }{
	"s":  {150, 50, 60},
	"m":  {1000, 200, 60},
	"l":  {8000, 500, 60},
	"xl": {15000, 1000, 60},
}

// The loads of check datascale: keys, bytes a key-value, clients.
var datascaleLoads = map[string]struct{ limit, kvSize, clients int }{
	"s":  {10000, 1024, 50},
	"m":  {100000, 1024, 200},
	"l":  {1000000, 1024, 500},
	"xl": {3000000, 1024, 1000},
}

// loadName is the load's short name ("small" is "s").
func loadName(s string) (string, bool) {
	switch s {
	case "s", "small":
		return "s", true
	case "m", "medium":
		return "m", true
	case "l", "large":
		return "l", true
	case "xl", "xLarge":
		return "xl", true
	}
	return "", false
}

func (c *ctl) checkCommand() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "check <subcommand> | check --data-dir <dir>",
		Short: "commands for checking properties of the etcd cluster",
		Long: `check perf and check datascale load a cluster and report; check --data-dir verifies a
data directory no member is running on: the page file, the store in it and the WAL.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return cmd.Help()
			}
			return c.checkDataDir(dataDir)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "Verify this data directory (no member running on it)")
	var load, prefix string
	var compact, defrag bool
	var duration time.Duration
	perf := &cobra.Command{
		Use:   "perf [options]",
		Short: "Check the performance of the etcd cluster",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, ok := loadName(load)
			if !ok {
				return failf(exitBadFeature, "unknown load option %v", load)
			}
			l := perfLoads[name]
			if duration == 0 {
				duration = time.Duration(l.seconds) * time.Second
			}
			return c.checkPerf(prefix, l.limit, l.clients, duration, compact, defrag)
		},
	}
	perf.Flags().StringVar(&load, "load", "s", "The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)")
	perf.Flags().StringVar(&prefix, "prefix", "/etcdctl-check-perf/", "The prefix for writing the performance check's keys.")
	perf.Flags().BoolVar(&compact, "auto-compact", false, "Compact storage with last revision after test is finished.")
	perf.Flags().BoolVar(&defrag, "auto-defrag", false, "Defragment storage after test is finished.")
	perf.Flags().DurationVar(&duration, "duration", 0, "How long the check puts (the load's 60s if 0; cairnctl's own flag)")

	var dsLoad, dsPrefix string
	var dsCompact, dsDefrag bool
	datascale := &cobra.Command{
		Use:   "datascale [options]",
		Short: "Check the memory usage of holding data for different workloads on a given server endpoint.",
		Long:  "If no endpoint is provided, localhost will be used. If multiple endpoints are provided, first endpoint will be used.",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, ok := loadName(dsLoad)
			if !ok {
				return failf(exitBadFeature, "unknown load option %v", dsLoad)
			}
			l := datascaleLoads[name]
			return c.checkDatascale(dsPrefix, l.limit, l.kvSize, l.clients, dsCompact, dsDefrag)
		},
	}
	datascale.Flags().StringVar(&dsLoad, "load", "s", "The datascale check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)")
	datascale.Flags().StringVar(&dsPrefix, "prefix", "/etcdctl-check-datascale/", "The prefix for writing the datascale check's keys.")
	datascale.Flags().BoolVar(&dsCompact, "auto-compact", false, "Compact storage with last revision after test is finished.")
	datascale.Flags().BoolVar(&dsDefrag, "auto-defrag", false, "Defragment storage after test is finished.")
	cmd.AddCommand(perf, datascale)
	return cmd
}

// putStats are the outcomes of a check's puts.
type putStats struct {
	mu      sync.Mutex
	lat     []time.Duration
	errs    map[string]int
	elapsed time.Duration
}

func (s *putStats) add(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.errs[err.Error()]++
		return
	}
	s.lat = append(s.lat, d)
}

// rps, slowest and stddev are the puts a second, the slowest put and the
// standard deviation of the puts' latencies, in seconds.
func (s *putStats) rps() float64 { return float64(len(s.lat)) / s.elapsed.Seconds() }

func (s *putStats) slowest() float64 {
	var m time.Duration
	for _, d := range s.lat {
		m = max(m, d)
	}
	return m.Seconds()
}

func (s *putStats) stddev() float64 {
	if len(s.lat) == 0 {
		return 0
	}
	var sum float64
	for _, d := range s.lat {
		sum += d.Seconds()
	}
	mean := sum / float64(len(s.lat))
	var sq float64
	for _, d := range s.lat {
		sq += (d.Seconds() - mean) * (d.Seconds() - mean)
	}
	return math.Sqrt(sq / float64(len(s.lat)))
}

// checkClients are n clients of the global endpoints, and what checks no
// key is under prefix yet.
func (c *ctl) checkClients(n int, prefix, hint string) ([]*clientv3.Client, error) {
	clients := make([]*clientv3.Client, n)
	for i := range clients {
		cli, err := c.client()
		if err != nil {
			return nil, err
		}
		clients[i] = cli
	}
	ctx, cancel := c.commandCtx()
	resp, err := clients[0].Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithLimit(1))
	cancel()
	if err != nil {
		return nil, fail(exitError, err)
	}
	if len(resp.Kvs) > 0 {
		return nil, failf(exitInvalidInput, "prefix %q has keys. Delete with %s first", prefix, hint)
	}
	return clients, nil
}

// runPuts sends the puts next makes (until it says stop) over clients,
// each client one at a time.
func runPuts(clients []*clientv3.Client, next func() (clientv3.Op, bool)) *putStats {
	stats := &putStats{errs: map[string]int{}}
	ops := make(chan clientv3.Op, len(clients))
	var wg sync.WaitGroup
	start := time.Now()
	for _, cli := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for op := range ops {
				st := time.Now()
				_, err := cli.Do(context.Background(), op)
				stats.add(time.Since(st), err)
			}
		}()
	}
	for {
		op, ok := next()
		if !ok {
			break
		}
		ops <- op
	}
	close(ops)
	wg.Wait()
	stats.elapsed = time.Since(start)
	return stats
}

// randomKey is prefix and a key of size bytes starting with a random
// varint.
func randomKey(prefix string, size int) string {
	k := make([]byte, size)
	binary.PutVarint(k, rand.Int64N(math.MaxInt64))
	return prefix + string(k)
}

func (c *ctl) checkPerf(prefix string, limit, nclients int, duration time.Duration, compact, defrag bool) error {
	clients, err := c.checkClients(nclients, prefix, "'etcdctl del --prefix "+prefix+"'")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	value := string(make([]byte, 1024))
	tick := time.NewTicker(time.Second / time.Duration(limit))
	defer tick.Stop()
	stats := runPuts(clients, func() (clientv3.Op, bool) {
		select {
		case <-ctx.Done():
			return clientv3.Op{}, false
		case <-tick.C:
			return clientv3.OpPut(randomKey(prefix, 256), value), true
		}
	})
	c.cleanUp(clients[0], prefix, compact, defrag)
	ok := true
	if len(stats.errs) != 0 {
		fmt.Fprintln(c.out, "FAIL: too many errors")
		for k, v := range stats.errs {
			fmt.Fprintf(c.out, "FAIL: ERROR(%v) -> %d\n", k, v)
		}
		ok = false
	}
	if rps := stats.rps(); rps/float64(limit) <= 0.9 {
		fmt.Fprintf(c.out, "FAIL: Throughput too low: %d writes/s\n", int(rps)+1)
		ok = false
	} else {
		fmt.Fprintf(c.out, "PASS: Throughput is %d writes/s\n", int(rps)+1)
	}
	if s := stats.slowest(); s > 0.5 {
		fmt.Fprintf(c.out, "Slowest request took too long: %fs\n", s)
		ok = false
	} else {
		fmt.Fprintf(c.out, "PASS: Slowest request took %fs\n", s)
	}
	if s := stats.stddev(); s > 0.1 {
		fmt.Fprintf(c.out, "Stddev too high: %fs\n", s)
		ok = false
	} else {
		fmt.Fprintf(c.out, "PASS: Stddev is %fs\n", s)
	}
	if !ok {
		fmt.Fprintln(c.out, "FAIL")
		return silentExit(exitError)
	}
	fmt.Fprintln(c.out, "PASS")
	return nil
}

// cleanUp deletes the check's keys, then compacts and defragments if
// asked to.
func (c *ctl) cleanUp(cli *clientv3.Client, prefix string, compact, defrag bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cli.Delete(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		fmt.Fprintf(c.out, "FAIL: Cleanup failed during key deletion: ERROR(%v)\n", err)
		return
	}
	if compact {
		rev := resp.Header.Revision
		fmt.Fprintf(c.out, "Compacting with revision %d\n", rev)
		if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
			fmt.Fprintf(c.out, "FAIL: compaction: %v\n", err)
			return
		}
		fmt.Fprintf(c.out, "Compacted with revision %d\n", rev)
	}
	if defrag {
		for _, ep := range cli.Endpoints() {
			fmt.Fprintf(c.out, "Defragmenting %q\n", ep)
			if _, err := cli.Defragment(ctx, ep); err != nil {
				fmt.Fprintf(c.out, "FAIL: defragment: %v\n", err)
				return
			}
			fmt.Fprintf(c.out, "Defragmented %q\n", ep)
		}
	}
}

func (c *ctl) checkDatascale(prefix string, limit, kvSize, nclients int, compact, defrag bool) error {
	clients, err := c.checkClients(nclients, prefix, "etcdctl del --prefix "+prefix)
	if err != nil {
		return err
	}
	eps, err := c.endpoints()
	if err != nil {
		return fail(exitError, err)
	}
	before := c.residentMemory(eps[0])
	if before == 0 {
		fmt.Fprintln(c.out, "FAIL: Could not read process_resident_memory_bytes before the put operations.")
		return silentExit(exitError)
	}
	fmt.Fprintf(c.out, "Start data scale check for work load [%v key-value pairs, %v bytes per key-value, %v concurrent clients].\n", limit, kvSize, nclients)
	value := string(make([]byte, kvSize/2))
	n := 0
	stats := runPuts(clients, func() (clientv3.Op, bool) {
		if n == limit {
			return clientv3.Op{}, false
		}
		n++
		return clientv3.OpPut(randomKey(prefix, kvSize/2), value), true
	})
	after := c.residentMemory(eps[0])
	if after == 0 {
		fmt.Fprintln(c.out, "FAIL: Could not read process_resident_memory_bytes after the put operations.")
		return silentExit(exitError)
	}
	c.cleanUp(clients[0], prefix, compact, defrag)
	if len(stats.errs) != 0 {
		fmt.Fprintln(c.out, "FAIL: too many errors")
		for k, v := range stats.errs {
			fmt.Fprintf(c.out, "FAIL: ERROR(%v) -> %d\n", k, v)
		}
		return silentExit(exitError)
	}
	mb := (after - before) / (1024 * 1024)
	fmt.Fprintf(c.out, "PASS: Approximate system memory used : %v MB.\n", strconv.FormatFloat(mb, 'f', 2, 64))
	return nil
}

// residentMemory is the process_resident_memory_bytes the member at ep
// reports on /metrics, or 0 (said why) if it cannot be read.
func (c *ctl) residentMemory(ep string) float64 {
	const name = "process_resident_memory_bytes"
	if !strings.HasPrefix(ep, "http://") && !strings.HasPrefix(ep, "https://") {
		ep = "http://" + ep
	}
	tr := &http.Transport{}
	if strings.HasPrefix(ep, "https://") {
		cfg, err := c.config([]string{ep})
		if err != nil {
			fmt.Fprintf(c.out, "client certificate error: %v\n", err)
			return 0
		}
		tr.TLSClientConfig = cfg.TLS
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{}
		}
	}
	hc := &http.Client{Transport: tr, Timeout: c.g.commandTimeout}
	resp, err := hc.Get(ep + "/metrics")
	if err != nil {
		fmt.Fprintf(c.out, "fetch error: %v\n", err)
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				fmt.Fprintf(c.out, "parse error: %v\n", err)
				return 0
			}
			return f
		}
	}
	fmt.Fprintf(c.out, "could not find: %v\n", name)
	return 0
}
