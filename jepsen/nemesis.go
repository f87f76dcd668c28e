package jepsen

import (
	"context"
	"fmt"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Nemeses are the faults a run can inject, by name. Each starts, holds
// for the schedule's duration, and ends (heals); the timeline records
// both with what was done to whom.
var Nemeses = []string{
	"kill", "kill-leader", "pause", "pause-leader",
	"partition-halves", "partition-leader", "partition-ring", "partition-oneway",
	"delay", "loss", "transfer", "member", "disk",
}

// Fault is one nemesis window in the timeline.
type Fault struct {
	Nemesis string `json:"nemesis"`
	Start   int64  `json:"start"` // ns since the run started
	End     int64  `json:"end"`
	What    string `json:"what"`
	Err     string `json:"error,omitempty"`
}

// Timeline is the record of the faults a run injected.
type Timeline struct {
	mu     sync.Mutex
	faults []Fault
}

func (t *Timeline) add(f Fault) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.faults = append(t.faults, f)
}

// Faults returns the faults in the order they started.
func (t *Timeline) Faults() []Fault {
	t.mu.Lock()
	defer t.mu.Unlock()
	fs := slices.Clone(t.faults)
	sort.Slice(fs, func(i, j int) bool { return fs[i].Start < fs[j].Start })
	return fs
}

// Schedule says when faults happen: one every Interval (after the one
// before has ended), each lasting Duration, the nemeses taken in turn.
type Schedule struct {
	Nemeses  []string
	Interval time.Duration
	Duration time.Duration
}

// nemesis injects faults into a cluster.
type nemesis struct {
	c   *Cluster
	h   *History
	tl  *Timeline
	rng *rand.Rand
	log func(string, ...any)
}

// run injects faults by s until ctx ends, then heals everything.
func (n *nemesis) run(ctx context.Context, s Schedule) {
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.Interval):
		}
		name := s.Nemeses[k%len(s.Nemeses)]
		f := Fault{Nemesis: name, Start: n.h.Now()}
		end, what, err := n.start(ctx, name, s.Duration)
		f.What = what
		if err != nil {
			f.Err = err.Error()
		}
		n.log("nemesis %s: %s %v", name, what, errString(err))
		select {
		case <-ctx.Done():
		case <-time.After(s.Duration):
		}
		if end != nil {
			if err := end(); err != nil && f.Err == "" {
				f.Err = err.Error()
			}
		}
		f.End = n.h.Now()
		n.tl.add(f)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return "(" + err.Error() + ")"
}

// start begins one fault and returns what ends it.
func (n *nemesis) start(ctx context.Context, name string, d time.Duration) (end func() error, what string, err error) {
	c := n.c
	members := len(c.Members())
	random := func() int { return n.rng.Intn(members) }
	leader := func() (int, error) {
		// Just after a fault heals an election may be on: wait for it.
		deadline := time.Now().Add(10 * time.Second)
		for {
			l, err := c.Leader(ctx)
			if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
				return l, err
			}
			sleep(ctx, 100*time.Millisecond)
		}
	}
	switch name {
	case "kill", "kill-leader":
		i := random()
		if name == "kill-leader" {
			if i, err = leader(); err != nil {
				return nil, "no leader to kill", err
			}
		}
		c.Kill(i)
		return func() error { return c.Restart(i) }, "killed " + c.Member(i).Name, nil
	case "pause", "pause-leader":
		i := random()
		if name == "pause-leader" {
			if i, err = leader(); err != nil {
				return nil, "no leader to pause", err
			}
		}
		c.Pause(i)
		return func() error { c.Resume(i); return nil }, "paused " + c.Member(i).Name, nil
	case "partition-halves":
		perm := n.rng.Perm(members)
		a, b := perm[:members/2], perm[members/2:]
		c.Net.Partition(a, b)
		return n.heal, fmt.Sprintf("cut %s | %s", names(c, a), names(c, b)), nil
	case "partition-leader":
		l, err := leader()
		if err != nil {
			return nil, "no leader to isolate", err
		}
		var rest []int
		for i := range members {
			if i != l {
				rest = append(rest, i)
			}
		}
		c.Net.Partition([]int{l}, rest)
		return n.heal, fmt.Sprintf("isolated the leader %s", c.Member(l).Name), nil
	case "partition-ring":
		// Each member reaches only its neighbours on a random ring: every
		// one sees a majority of five, no two majorities agree. With
		// three, a bridge: two cut from each other, both reach the third.
		perm := n.rng.Perm(members)
		var cut []string
		for x := range members {
			for y := range members {
				dx := (x - y + members) % members
				if x == y || dx == 1 || dx == members-1 {
					continue
				}
				c.Net.Set(perm[x], perm[y], Link{Cut: true})
				if x < y {
					cut = append(cut, c.Member(perm[x]).Name+"-"+c.Member(perm[y]).Name)
				}
			}
		}
		if members == 3 {
			c.Net.Set(perm[0], perm[1], Link{Cut: true})
			c.Net.Set(perm[1], perm[0], Link{Cut: true})
			cut = append(cut, c.Member(perm[0]).Name+"-"+c.Member(perm[1]).Name)
		}
		return n.heal, "ring, cut " + strings.Join(cut, " "), nil
	case "partition-oneway":
		i := random()
		in := n.rng.Intn(2) == 0
		for j := range members {
			if j != i {
				if in {
					c.Net.Set(j, i, Link{Cut: true})
				} else {
					c.Net.Set(i, j, Link{Cut: true})
				}
			}
		}
		if in {
			return n.heal, c.Member(i).Name + " sends, receives nothing", nil
		}
		return n.heal, c.Member(i).Name + " receives, sends nothing", nil
	case "delay", "loss":
		l := Link{Delay: 50 * time.Millisecond, Jitter: 100 * time.Millisecond}
		what := "every link delayed 50-150 ms"
		if name == "loss" {
			l = Link{Slow: 0.3}
			what = "every link loses 30% (a chunk waits a 200 ms retransmission)"
		}
		for a := range members {
			for b := range members {
				if a != b {
					c.Net.Set(a, b, l)
				}
			}
		}
		return n.heal, what, nil
	case "transfer":
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		var moves, fails int
		go func() {
			defer close(done)
			for tctx.Err() == nil {
				if err := n.moveLeader(tctx); err != nil {
					fails++
				} else {
					moves++
				}
				select {
				case <-tctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}()
		return func() error {
			cancel()
			<-done
			n.log("nemesis transfer: %d moves, %d refused", moves, fails)
			return nil
		}, "leadership moved every 500 ms", nil
	case "member":
		i := random()
		via := (i + 1) % members
		err := c.Replace(ctx, i, via)
		return nil, "replaced " + c.Member(i).Name + " by a new member on a fresh data dir", err
	case "disk":
		if c.cfg.Target.Name != "cairn" {
			return nil, "no failpoints in " + c.cfg.Target.Name, nil
		}
		i := random()
		spec := diskFaults[n.rng.Intn(len(diskFaults))]
		c.Kill(i)
		m := c.Member(i)
		m.Env = []string{"CAIRN_FAILPOINTS=" + spec}
		err := c.Restart(i)
		m.Env = nil
		return func() error {
			// Disarmed by a restart without them.
			c.Kill(i)
			return c.Restart(i)
		}, fmt.Sprintf("restarted %s with CAIRN_FAILPOINTS=%s", m.Name, spec), err
	}
	return nil, "", fmt.Errorf("jepsen: no nemesis %q (have %s)", name, strings.Join(Nemeses, ", "))
}

// diskFaults are the failpoints the disk nemesis arms, one at random: a
// WAL write or sync that fails, a process that dies between the WAL
// write and its sync, a page-file data sync that fails. Each lets some
// hits pass first, so the member fails while serving.
var diskFaults = []string{
	"wal/beforeWrite=40*off->error",
	"wal/beforeSync=40*off->error",
	"wal/beforeSync=40*off->panic",
	"pagefile/beforeDataSync=10*off->error",
}

func (n *nemesis) heal() error {
	n.c.Net.Heal()
	return nil
}

// moveLeader asks the leader to hand leadership to a random other
// member.
func (n *nemesis) moveLeader(ctx context.Context) error {
	l, err := n.c.Leader(ctx) // no wait: a storm moves on
	if err != nil {
		return err
	}
	ms := n.c.Members()
	to := ms[(l+1+n.rng.Intn(len(ms)-1))%len(ms)]
	cl, err := n.c.Client(l)
	if err != nil {
		return err
	}
	defer cl.Close()
	mctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = cl.MoveLeader(mctx, to.ID)
	return err
}

// recover ends every fault: heals the network, resumes paused members
// and starts the ones not running, without failpoints.
func (n *nemesis) recover() {
	c := n.c
	c.Net.Heal()
	for _, m := range c.Members() {
		if m.paused {
			c.Resume(m.Index)
		}
		switch {
		case m.removed:
			// Churn removed it and could not add it back in its window.
			if err := c.addBack(m.Index); err != nil {
				n.log("adding %s back: %v", m.Name, err)
			}
		case !c.Running(m.Index):
			m.Env = nil
			if err := c.Restart(m.Index); err != nil {
				n.log("restarting %s: %v", m.Name, err)
			}
		}
	}
}

func names(c *Cluster, is []int) string {
	var s []string
	for _, i := range is {
		s = append(s, c.Member(i).Name)
	}
	return strings.Join(s, " ")
}
