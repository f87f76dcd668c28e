package jepsen

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// lease: each client grants a lease, binds a key to it, keeps it alive
// for a while (reading the key as it goes), then stops and reads the key
// until it is gone. Safety: a key is never gone before its lease's TTL
// has run from the last keep-alive known to have happened before the
// read (a lease expired early), and never comes back. Liveness, judged
// only where no fault was on: once keep-alives stop, the key is gone
// within the TTL plus leaseSlack.
type lease struct{}

const (
	leaseTTL   = 3 // seconds
	leaseSlack = 3 * time.Second
)

type leaseInput struct {
	Op    string `json:"op"` // grant, put, keepalive, read
	Lease int64  `json:"lease,omitempty"`
	Key   string `json:"key,omitempty"`
	// Abandoned: the read comes after the client stopped keeping the
	// lease alive.
	Abandoned bool `json:"abandoned,omitempty"`
}

type leaseOutput struct {
	Lease   int64 `json:"lease,omitempty"` // grant
	TTL     int64 `json:"ttl,omitempty"`   // grant, keepalive
	Present bool  `json:"present,omitempty"`
}

func (lease) Name() string { return "lease" }

func (lease) Setup(context.Context, *Run) error { return nil }

func (lease) Run(ctx context.Context, r *Run) {
	var wg sync.WaitGroup
	for range 2 * len(r.Cluster.Members()) {
		c := r.newClient(-1)
		wg.Add(1)
		go func() { defer wg.Done(); runLease(ctx, r, c) }()
	}
	wg.Wait()
}

func runLease(ctx context.Context, r *Run, c *client) {
	cl, err := r.Cluster.Client(c.member)
	if err != nil {
		return
	}
	defer cl.Close()
	do := func(in leaseInput, f func(context.Context) (leaseOutput, error)) (leaseOutput, bool) {
		op := r.History.Invoke(c.process, "lease", in, c.member)
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		out, err := f(octx)
		cancel()
		switch {
		case err == nil:
			op.OK(out)
			return out, true
		case in.Op == "read" || in.Op == "keepalive":
			op.Fail(err) // a keep-alive that failed renewed nothing we count on
		default:
			completeWrite(op, err)
		}
		backoff(ctx)
		return out, false
	}
	for seq := 1; ctx.Err() == nil; seq++ {
		g, ok := do(leaseInput{Op: "grant"}, func(ctx context.Context) (leaseOutput, error) {
			g, err := cl.Grant(ctx, leaseTTL)
			if err != nil {
				return leaseOutput{}, err
			}
			return leaseOutput{Lease: int64(g.ID), TTL: g.TTL}, nil
		})
		if !ok {
			continue
		}
		id := clientv3.LeaseID(g.Lease)
		key := fmt.Sprintf("l/%d-%d", c.process, seq)
		if _, ok := do(leaseInput{Op: "put", Lease: g.Lease, Key: key}, func(ctx context.Context) (leaseOutput, error) {
			_, err := cl.Put(ctx, key, "v", clientv3.WithLease(id))
			return leaseOutput{}, err
		}); !ok {
			continue
		}
		read := func(abandoned bool) (bool, bool) {
			out, ok := do(leaseInput{Op: "read", Lease: g.Lease, Key: key, Abandoned: abandoned}, func(ctx context.Context) (leaseOutput, error) {
				resp, err := cl.Get(ctx, key)
				if err != nil {
					return leaseOutput{}, err
				}
				return leaseOutput{Present: len(resp.Kvs) > 0}, nil
			})
			return out.Present, ok
		}
		// Kept alive for up to 2 TTLs, read as it goes.
		keep := time.Now().Add(time.Duration(c.rng.Intn(2*leaseTTL*1000)) * time.Millisecond)
		for time.Now().Before(keep) && ctx.Err() == nil {
			if _, ok := do(leaseInput{Op: "keepalive", Lease: g.Lease}, func(ctx context.Context) (leaseOutput, error) {
				k, err := cl.KeepAliveOnce(ctx, id)
				if err != nil {
					return leaseOutput{}, err
				}
				return leaseOutput{TTL: k.TTL}, nil
			}); !ok {
				break
			}
			read(false)
			sleep(ctx, 300*time.Millisecond)
		}
		// Abandoned: read until it is gone (or long past its TTL).
		until := time.Now().Add(leaseTTL*time.Second + 4*leaseSlack)
		for time.Now().Before(until) {
			if present, ok := read(true); ok && !present {
				break
			}
			sleep(ctx, 250*time.Millisecond)
			if ctx.Err() != nil {
				break
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// leaseRecord is what the history says of one lease.
type leaseRecord struct {
	grant      Op
	ttl        time.Duration
	put        *Op
	keepalives []Op // successful
	reads      []Op // successful
}

func (lease) Check(ctx context.Context, r *Run) Result {
	res := Result{Workload: "lease", Valid: true, Stats: map[string]any{}}
	ops := r.History.Ops("lease")
	res.count(ops)
	leases := map[int64]*leaseRecord{}
	var order []int64
	for _, op := range ops {
		in := op.In.(leaseInput)
		if op.Status != StatusOK {
			continue
		}
		out := op.Out.(leaseOutput)
		if in.Op == "grant" {
			leases[out.Lease] = &leaseRecord{grant: op, ttl: time.Duration(out.TTL) * time.Second}
			order = append(order, out.Lease)
			continue
		}
		l := leases[in.Lease]
		if l == nil {
			continue
		}
		switch in.Op {
		case "put":
			l.put = &op
		case "keepalive":
			l.keepalives = append(l.keepalives, op)
		case "read":
			l.reads = append(l.reads, op)
		}
	}
	faults := r.Timeline.Faults()
	quiet := func(from, to int64) bool {
		for _, f := range faults {
			if f.Start <= to && f.End >= from {
				return false
			}
		}
		return true
	}
	expired, late, unjudged := 0, 0, 0
	for _, id := range order {
		l := leases[id]
		if l.put == nil {
			continue // the key may never have existed
		}
		gone := false
		for _, rd := range l.reads {
			if rd.Call < l.put.Return {
				continue
			}
			present := rd.Out.(leaseOutput).Present
			if gone && present {
				res.anomaly("lease %x: its key came back at %s after it was gone", id, secs(rd.Return))
			}
			if present {
				continue
			}
			gone = true
			// The lease lived at least a TTL from the grant and from every
			// keep-alive that ended before this read began.
			alive := l.grant.Call
			for _, k := range l.keepalives {
				if k.Return < rd.Call {
					alive = max(alive, k.Call)
				}
				if k.Call > rd.Return {
					res.anomaly("lease %x: kept alive at %s after its key was read gone at %s", id, secs(k.Call), secs(rd.Return))
				}
			}
			if rd.Return < alive+int64(l.ttl) {
				res.anomaly("lease %x: its key was gone at %s, %v before its TTL ran out (alive at %s, TTL %v)",
					id, secs(rd.Return), time.Duration(alive+int64(l.ttl)-rd.Return), secs(alive), l.ttl)
			}
			expired++
		}
		// Liveness: once abandoned, gone within TTL + slack, where no
		// fault was on.
		last := l.grant.Return
		for _, k := range l.keepalives {
			last = max(last, k.Return)
		}
		deadline := last + int64(l.ttl+leaseSlack)
		for _, rd := range l.reads {
			if !rd.In.(leaseInput).Abandoned || rd.Call <= deadline || !rd.Out.(leaseOutput).Present {
				continue
			}
			if quiet(last, rd.Return) {
				late++
				res.anomaly("lease %x: its key still there at %s, %v after its last keep-alive (TTL %v)", id, secs(rd.Call), time.Duration(rd.Call-last), l.ttl)
			} else {
				unjudged++
			}
			break
		}
	}
	res.Stats["leases"] = len(order)
	res.Stats["expired_seen"] = expired
	res.Stats["late"] = late
	res.Stats["late_with_faults"] = unjudged
	if expired == 0 {
		res.anomaly("no lease was seen to expire")
	}
	return res
}

func secs(ns int64) string { return fmt.Sprintf("%.3fs", float64(ns)/1e9) }
