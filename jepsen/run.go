package jepsen

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one run: a cluster, the workloads that run together on it,
// the faults and for how long.
type Config struct {
	Cluster   ClusterConfig
	Workloads []string
	Schedule  Schedule
	Time      time.Duration // how long the workloads run, faults meanwhile
	Seed      int64
	// CheckTimeout bounds each linearizability check; a check that runs
	// out is inconclusive, which fails the run.
	CheckTimeout time.Duration
	Log          func(format string, args ...any)
}

// Run is a run in progress: what workloads and checkers share.
type Run struct {
	cfg      Config
	Cluster  *Cluster
	History  *History
	Timeline *Timeline
	Dir      string

	processes atomic.Int64
}

// Outcome is what a run found.
type Outcome struct {
	Seed     int64    `json:"seed"`
	Target   string   `json:"target"`
	Members  int      `json:"members"`
	Nemeses  []string `json:"nemeses"`
	Time     string   `json:"time"`
	Valid    bool     `json:"valid"`
	Results  []Result `json:"results"`
	Faults   []Fault  `json:"faults"`
	Dir      string   `json:"dir"`
	Summary  Summary  `json:"summary"`
	Problems []string `json:"problems,omitempty"` // the run itself went wrong
}

// newClient makes a process of a workload on member (round robin when
// member is -1).
func (r *Run) newClient(member int) *client {
	p := int(r.processes.Add(1)) - 1
	if member < 0 {
		member = p % len(r.Cluster.Members())
	}
	return &client{process: p, member: member, rng: rand.New(rand.NewSource(r.cfg.Seed + int64(p)*7919))}
}

// Execute runs cfg: starts the cluster, the workloads and the nemesis,
// heals, checks, and writes the run's folder (history.jsonl,
// timeline.json, results.json, report.html, the members' data dirs and
// logs). The Outcome is valid if every checker found nothing and the
// cluster recovered.
func Execute(ctx context.Context, cfg Config) (*Outcome, error) {
	logf := cfg.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = time.Minute
	}
	dir := cfg.Cluster.Dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var workloads []Workload
	for _, name := range cfg.Workloads {
		w, err := NewWorkload(name)
		if err != nil {
			return nil, err
		}
		workloads = append(workloads, w)
	}
	hf, err := os.Create(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return nil, err
	}
	defer hf.Close()

	cfg.Cluster.Seed = cfg.Seed
	logf("seed %d: starting %d %s members in %s", cfg.Seed, cfg.Cluster.Members, cfg.Cluster.Target.Name, dir)
	c, err := StartCluster(ctx, cfg.Cluster)
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	hw := bufio.NewWriterSize(hf, 1<<20)
	defer hw.Flush() // (after Flush below, a no-op; on an early return, what there is)
	r := &Run{cfg: cfg, Cluster: c, History: NewHistory(hw), Timeline: &Timeline{}, Dir: dir}
	out := &Outcome{Seed: cfg.Seed, Target: cfg.Cluster.Target.Name, Members: cfg.Cluster.Members,
		Nemeses: cfg.Schedule.Nemeses, Time: cfg.Time.String(), Dir: dir}
	for _, w := range workloads {
		if err := w.Setup(ctx, r); err != nil {
			return nil, fmt.Errorf("jepsen: %s setup: %w", w.Name(), err)
		}
	}

	wctx, cancel := context.WithTimeout(ctx, cfg.Time)
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range workloads {
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(wctx, r) }()
	}
	n := &nemesis{c: c, h: r.History, tl: r.Timeline, rng: rand.New(rand.NewSource(cfg.Seed)), log: logf}
	if len(cfg.Schedule.Nemeses) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); n.run(wctx, cfg.Schedule) }()
	}
	wg.Wait()
	logf("workloads done after %v; healing", cfg.Time)
	n.recover()
	if err := c.WaitHealthy(ctx, 60*time.Second); err != nil {
		out.Problems = append(out.Problems, "the cluster did not recover: "+err.Error())
	}
	for _, w := range workloads {
		res := w.Check(ctx, r)
		logf("%s: valid=%v ops=%d ok=%d fail=%d unknown=%d %v", res.Workload, res.Valid, res.Ops, res.OK, res.Fail, res.Unknown, res.Anomalies)
		out.Results = append(out.Results, res)
	}
	hash := checkHashKV(ctx, c)
	logf("hashkv: valid=%v %v", hash.Valid, hash.Anomalies)
	out.Results = append(out.Results, hash)
	out.Faults = r.Timeline.Faults()
	out.Summary = summarize(r.History.Ops(), out.Faults, out.Results)
	out.Valid = len(out.Problems) == 0
	for _, res := range out.Results {
		out.Valid = out.Valid && res.Valid
	}
	if err := r.History.Flush(hw); err != nil {
		out.Problems = append(out.Problems, "writing the history: "+err.Error())
		out.Valid = false
	}
	if err := writeJSON(filepath.Join(dir, "timeline.json"), out.Faults); err != nil {
		return out, err
	}
	if err := writeJSON(filepath.Join(dir, "results.json"), out); err != nil {
		return out, err
	}
	if err := writeReport(filepath.Join(dir, "report.html"), out, r.History); err != nil {
		return out, err
	}
	return out, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// checkHashKV compares every member's HashKV at one revision, once each
// has applied it (a linearizable read through each first). A member that
// cannot answer fails the check: a hash not compared is not a pass.
func checkHashKV(ctx context.Context, c *Cluster) Result {
	res := Result{Workload: "hashkv", Valid: true, Stats: map[string]any{}}
	cl, err := c.Client(0)
	if err != nil {
		res.anomaly("client: %v", err)
		return res
	}
	defer cl.Close()
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	g, err := cl.Get(gctx, "hashkv-probe")
	if err != nil {
		res.anomaly("reading the revision: %v", err)
		return res
	}
	rev := g.Header.Revision
	res.Stats["revision"] = rev
	hashes := map[string]uint32{}
	for _, m := range c.Members() {
		mc, err := c.Client(m.Index)
		if err != nil {
			res.anomaly("%s: %v", m.Name, err)
			continue
		}
		if _, err := mc.Get(gctx, "hashkv-probe"); err != nil {
			res.anomaly("%s: a linearizable read: %v", m.Name, err)
		} else if h, err := mc.HashKV(gctx, m.ClientURL, rev); err != nil {
			res.anomaly("%s: HashKV(%d): %v", m.Name, rev, err)
		} else {
			hashes[m.Name] = h.Hash
		}
		mc.Close()
	}
	res.Stats["hashes"] = hashes
	var first uint32
	seen := false
	for _, h := range hashes {
		if seen && h != first {
			res.anomaly("members' HashKV at revision %d differ: %v", rev, hashes)
			break
		}
		first, seen = h, true
	}
	res.Ops = len(hashes)
	res.OK = len(hashes)
	return res
}
