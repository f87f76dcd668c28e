package jepsen

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// lock: clients take etcd's concurrency.Mutex (a session lease of
// lockTTL) and, holding it, write a shared key through a Txn guarded by
// their lock key's create revision: the fencing token. A holder paused
// or cut off past its session's TTL may still think it holds the lock;
// its guarded write must then fail. Checked: in the order the store
// committed them, the successful guarded writes carry tokens that never
// go down (once a later holder has written, no earlier one writes
// again), and each was made by a holder whose token it is.
type lock struct{}

const lockTTL = 3 // seconds

type lockInput struct {
	Op    string `json:"op"` // acquire, write, release
	Token int64  `json:"token,omitempty"`
}

type lockOutput struct {
	Token int64 `json:"token,omitempty"` // acquire
	OK    bool  `json:"ok,omitempty"`    // write: the guard held
	Rev   int64 `json:"rev,omitempty"`   // write: its revision
}

const lockName, fencedKey = "lock/mutex", "lock/fenced"

func (lock) Name() string { return "lock" }

func (lock) Setup(context.Context, *Run) error { return nil }

func (lock) Run(ctx context.Context, r *Run) {
	var wg sync.WaitGroup
	for range len(r.Cluster.Members()) + 2 {
		c := r.newClient(-1)
		wg.Add(1)
		go func() { defer wg.Done(); runLock(ctx, r, c) }()
	}
	wg.Wait()
}

func runLock(ctx context.Context, r *Run, c *client) {
	cl, err := r.Cluster.Client(c.member)
	if err != nil {
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		s, err := concurrency.NewSession(cl, concurrency.WithTTL(lockTTL), concurrency.WithContext(ctx))
		if err != nil {
			backoff(ctx)
			continue
		}
		holdLocks(ctx, r, c, cl, s)
		s.Close()
	}
}

// holdLocks takes and releases the lock on session s until the session
// ends or ctx does.
func holdLocks(ctx context.Context, r *Run, c *client, cl *clientv3.Client, s *concurrency.Session) {
	for ctx.Err() == nil {
		select {
		case <-s.Done():
			return
		default:
		}
		m := concurrency.NewMutex(s, lockName)
		op := r.History.Invoke(c.process, "lock", lockInput{Op: "acquire"}, c.member)
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := m.Lock(lctx)
		var token int64
		if err == nil {
			// The token: the create revision of this holder's key.
			var g *clientv3.GetResponse
			if g, err = cl.Get(lctx, m.Key()); err == nil {
				if len(g.Kvs) == 0 {
					err = fmt.Errorf("jepsen: the lock key %s is gone", m.Key())
				} else {
					token = g.Kvs[0].CreateRevision
				}
			}
		}
		cancel()
		if err != nil {
			op.Fail(err) // no write is made without a token
			backoff(ctx)
			return
		}
		op.OK(lockOutput{Token: token})
		for range 1 + c.rng.Intn(3) {
			w := r.History.Invoke(c.process, "lock", lockInput{Op: "write", Token: token}, c.member)
			wctx, cancel := context.WithTimeout(ctx, opTimeout)
			t, err := cl.Txn(wctx).If(clientv3.Compare(clientv3.CreateRevision(m.Key()), "=", token)).
				Then(clientv3.OpPut(fencedKey, fmt.Sprint(token))).Commit()
			cancel()
			if err != nil {
				completeWrite(w, err)
				break
			}
			w.OK(lockOutput{OK: t.Succeeded, Rev: t.Header.Revision})
			sleep(ctx, time.Duration(c.rng.Intn(100))*time.Millisecond)
		}
		rel := r.History.Invoke(c.process, "lock", lockInput{Op: "release", Token: token}, c.member)
		uctx, cancel := context.WithTimeout(ctx, opTimeout)
		err = m.Unlock(uctx)
		cancel()
		if err != nil {
			completeWrite(rel, err)
			return
		}
		rel.OK(lockOutput{})
	}
}

func (lock) Check(ctx context.Context, r *Run) Result {
	res := Result{Workload: "lock", Valid: true, Stats: map[string]any{}}
	ops := r.History.Ops("lock")
	res.count(ops)
	holders := map[int64]int{} // token → the process that acquired it
	type write struct {
		token, rev int64
		process    int
	}
	var writes []write
	refused := 0
	for _, op := range ops {
		if op.Status != StatusOK {
			continue
		}
		in, out := op.In.(lockInput), op.Out.(lockOutput)
		switch in.Op {
		case "acquire":
			if p, ok := holders[out.Token]; ok {
				res.anomaly("token %d acquired by processes %d and %d", out.Token, p, op.Process)
			}
			holders[out.Token] = op.Process
		case "write":
			if !out.OK {
				refused++
				continue
			}
			if p := holders[in.Token]; p != op.Process {
				res.anomaly("process %d wrote with token %d, acquired by process %d", op.Process, in.Token, p)
			}
			writes = append(writes, write{token: in.Token, rev: out.Rev, process: op.Process})
		}
	}
	sort.Slice(writes, func(i, j int) bool { return writes[i].rev < writes[j].rev })
	for i := 1; i < len(writes); i++ {
		if a, b := writes[i-1], writes[i]; b.token < a.token {
			res.anomaly("a write with token %d (process %d) committed at revision %d, after token %d had written at %d",
				b.token, b.process, b.rev, a.token, a.rev)
		}
	}
	res.Stats["holds"] = len(holders)
	res.Stats["fenced_writes"] = len(writes)
	res.Stats["refused_writes"] = refused
	if len(writes) == 0 {
		res.anomaly("no guarded write succeeded")
	}
	return res
}
