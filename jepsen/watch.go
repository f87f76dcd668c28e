package jepsen

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// watch: one watcher per member over the whole key space from revision
// 1, restarted from the revision after its last event whenever its
// stream ends, while writers put, delete and write several keys in one
// transaction. After the run every watcher must have reached the final
// revision, and what each saw must equal a reference watch read after
// the run: in revision order, none twice, none missing, a revision's
// events in one response, prev_kv the key's value before. The reference
// itself must hold a revision for every revision the store made, agree
// with the store's final state, and hold every write any workload had
// acknowledged (and none that failed).
type watch struct {
	mu       sync.Mutex
	watchers []*watcher
	stop     context.CancelFunc
	done     sync.WaitGroup
}

// watchEvent is an event as a watcher saw it.
type watchEvent struct {
	Rev     int64   `json:"rev"`
	Key     string  `json:"key"`
	Delete  bool    `json:"delete,omitempty"`
	Value   string  `json:"value,omitempty"`
	Prev    *string `json:"prev,omitempty"`
	Mod     int64   `json:"mod"`
	Create  int64   `json:"create"`
	Version int64   `json:"version"`
	Resp    int     `json:"resp"` // which response of its watcher carried it
}

// toWatchEvent is ev as a watcher records it, carried by response resp.
func toWatchEvent(ev *clientv3.Event, resp int) watchEvent {
	e := watchEvent{Rev: ev.Kv.ModRevision, Key: string(ev.Kv.Key), Delete: ev.Type == clientv3.EventTypeDelete,
		Value: string(ev.Kv.Value), Mod: ev.Kv.ModRevision, Create: ev.Kv.CreateRevision, Version: ev.Kv.Version, Resp: resp}
	if e.Delete {
		e.Value = ""
	}
	if ev.PrevKv != nil {
		p := string(ev.PrevKv.Value)
		e.Prev = &p
	}
	return e
}

type watcher struct {
	member int

	mu       sync.Mutex
	events   []watchEvent
	resps    int
	restarts int
	errs     []string
}

func (w *watcher) last() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) == 0 {
		return 0
	}
	return w.events[len(w.events)-1].Rev
}

func (*watch) Name() string { return "watch" }

func (*watch) Setup(context.Context, *Run) error { return nil }

const watchKeys = 8

func (wl *watch) Run(ctx context.Context, r *Run) {
	// The watchers outlive the workload: Check stops them once they have
	// caught up.
	wctx, stop := context.WithCancel(context.Background())
	wl.mu.Lock()
	wl.stop = stop
	for _, m := range r.Cluster.Members() {
		w := &watcher{member: m.Index}
		wl.watchers = append(wl.watchers, w)
		wl.done.Add(1)
		go func() { defer wl.done.Done(); w.run(wctx, r) }()
	}
	wl.mu.Unlock()
	var wg sync.WaitGroup
	for range r.Cluster.Members() {
		c := r.newClient(-1)
		wg.Add(1)
		go func() { defer wg.Done(); runWatchWriter(ctx, r, c) }()
	}
	wg.Wait()
}

// run watches from revision 1 until ctx ends, starting again after the
// last revision seen whenever the stream ends.
func (w *watcher) run(ctx context.Context, r *Run) {
	for ctx.Err() == nil {
		w.watchOnce(ctx, r)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (w *watcher) watchOnce(ctx context.Context, r *Run) {
	cl, err := r.Cluster.Client(w.member)
	if err != nil {
		return
	}
	defer cl.Close()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	from := w.last() + 1
	for resp := range cl.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV()) {
		w.mu.Lock()
		if err := resp.Err(); err != nil {
			w.errs = append(w.errs, err.Error())
			w.mu.Unlock()
			break
		}
		w.resps++
		for _, ev := range resp.Events {
			w.events = append(w.events, toWatchEvent(ev, w.resps))
		}
		w.mu.Unlock()
	}
	w.mu.Lock()
	w.restarts++
	w.mu.Unlock()
}

type watchWrite struct {
	Op    string   `json:"op"` // put, delete, txn
	Keys  []string `json:"keys"`
	Value string   `json:"value,omitempty"`
}

func runWatchWriter(ctx context.Context, r *Run, c *client) {
	cl, err := r.Cluster.Client(c.member)
	if err != nil {
		return
	}
	defer cl.Close()
	for seq := 1; ctx.Err() == nil; seq++ {
		value := fmt.Sprintf("%d-%d", c.process, seq)
		k1 := fmt.Sprintf("w/%d", c.rng.Intn(watchKeys))
		k2 := fmt.Sprintf("w/%d", c.rng.Intn(watchKeys))
		var in watchWrite
		switch p := c.rng.Intn(10); {
		case p < 6:
			in = watchWrite{Op: "put", Keys: []string{k1}, Value: value}
		case p < 8:
			in = watchWrite{Op: "delete", Keys: []string{k1}}
		default:
			if k1 == k2 {
				k2 += "b"
			}
			in = watchWrite{Op: "txn", Keys: []string{k1, k2}, Value: value}
		}
		op := r.History.Invoke(c.process, "watch-write", in, c.member)
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		var rev int64
		switch in.Op {
		case "put":
			var p *clientv3.PutResponse
			if p, err = cl.Put(octx, k1, value); err == nil {
				rev = p.Header.Revision
			}
		case "delete":
			var d *clientv3.DeleteResponse
			if d, err = cl.Delete(octx, k1); err == nil {
				rev = d.Header.Revision
			}
		case "txn":
			var t *clientv3.TxnResponse
			if t, err = cl.Txn(octx).Then(clientv3.OpPut(k1, value), clientv3.OpPut(k2, value)).Commit(); err == nil {
				rev = t.Header.Revision
			}
		}
		cancel()
		if err != nil {
			completeWrite(op, err)
			backoff(ctx)
			continue
		}
		op.OK(rev)
	}
}

func (wl *watch) Check(ctx context.Context, r *Run) Result {
	res := Result{Workload: "watch", Valid: true, Stats: map[string]any{}}
	res.count(r.History.Ops("watch-write"))
	defer func() {
		wl.stop()
		wl.done.Wait()
	}()
	cl, err := r.Cluster.Client(0)
	if err != nil {
		res.anomaly("client: %v", err)
		return res
	}
	defer cl.Close()
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	g, err := cl.Get(gctx, "", clientv3.WithPrefix())
	cancel()
	if err != nil {
		res.anomaly("reading the final state: %v", err)
		return res
	}
	final := g.Header.Revision
	res.Stats["final_revision"] = final

	// Every watcher must reach the final revision (liveness).
	deadline := time.Now().Add(30 * time.Second)
	for _, w := range wl.watchers {
		for w.last() < final && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}
	wl.stop()
	wl.done.Wait()

	ref, err := referenceWatch(ctx, cl, final)
	if err != nil {
		res.anomaly("the reference watch: %v", err)
		return res
	}
	res.Stats["events"] = len(ref)
	checkReference(&res, ref, g, final, r.History)
	for _, w := range wl.watchers {
		w.mu.Lock()
		name := r.Cluster.Member(w.member).Name
		res.Stats["restarts_"+name] = w.restarts
		checkWatcher(&res, name, w.events, ref, final)
		w.mu.Unlock()
	}
	return res
}

// referenceWatch reads every event from revision 1 to final in one watch.
func referenceWatch(ctx context.Context, cl *clientv3.Client, final int64) ([]watchEvent, error) {
	w := &watcher{}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for resp := range cl.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithPrevKV()) {
		if err := resp.Err(); err != nil {
			return nil, err
		}
		w.resps++
		for _, ev := range resp.Events {
			w.events = append(w.events, toWatchEvent(ev, w.resps))
		}
		if len(w.events) > 0 && w.events[len(w.events)-1].Rev >= final {
			return w.events, nil
		}
	}
	return nil, fmt.Errorf("ended before revision %d: %w", final, wctx.Err())
}

// checkReference checks the reference watch against itself, the store's
// final state and the acknowledged writes.
func checkReference(res *Result, ref []watchEvent, final *clientv3.GetResponse, rev int64, h *History) {
	// A revision for every revision the store made (2 on: 1 is the empty
	// store), in order, and prev_kv the value the key had.
	state := map[string]watchEvent{}
	next := int64(2)
	for i, e := range ref {
		if e.Rev > rev {
			break
		}
		if i > 0 && e.Rev == ref[i-1].Rev {
			if e.Key == ref[i-1].Key {
				res.anomaly("reference: key %s twice at revision %d", e.Key, e.Rev)
			}
		} else {
			if e.Rev != next {
				res.anomaly("reference: revision %d follows %d", e.Rev, next-1)
			}
			next = e.Rev + 1
		}
		prev, had := state[e.Key]
		switch {
		case had && e.Prev == nil:
			res.anomaly("reference: %s at %d has no prev_kv; it was %q", e.Key, e.Rev, prev.Value)
		case !had && e.Prev != nil:
			res.anomaly("reference: %s at %d has prev_kv %q; it had no value", e.Key, e.Rev, *e.Prev)
		case had && *e.Prev != prev.Value:
			res.anomaly("reference: %s at %d has prev_kv %q; it was %q", e.Key, e.Rev, *e.Prev, prev.Value)
		}
		if e.Delete {
			delete(state, e.Key)
		} else {
			state[e.Key] = e
		}
	}
	if next != rev+1 {
		res.anomaly("reference: ends at revision %d, the store at %d", next-1, rev)
	}
	// The final state the events make is the store's.
	if len(final.Kvs) != len(state) {
		res.anomaly("reference: the events leave %d keys, the store has %d", len(state), len(final.Kvs))
	}
	for _, kv := range final.Kvs {
		e, ok := state[string(kv.Key)]
		if !ok || e.Value != string(kv.Value) || e.Mod != kv.ModRevision || e.Create != kv.CreateRevision || e.Version != kv.Version {
			res.anomaly("reference: %s is %q (mod %d) in the store, %q (mod %d) by the events", kv.Key, kv.Value, kv.ModRevision, e.Value, e.Mod)
		}
	}
	// Acknowledged writes are there, at the revision they were
	// acknowledged with; failed ones are not there at all.
	at := map[string]bool{} // key=value@rev
	written := map[string]bool{}
	for _, e := range ref {
		if !e.Delete {
			at[fmt.Sprintf("%s=%s@%d", e.Key, e.Value, e.Rev)] = true
			written[e.Key+"="+e.Value] = true
		}
	}
	lost, phantom := 0, 0
	for _, op := range h.Ops("register", "watch-write") {
		key, value, rev, ok := ackedWrite(op)
		if !ok {
			continue
		}
		switch {
		case op.Status == StatusOK && !at[fmt.Sprintf("%s=%s@%d", key, value, rev)]:
			lost++
			res.anomaly("an acknowledged write is lost: %s=%s at revision %d (process %d)", key, value, rev, op.Process)
		case op.Status == StatusFail && written[key+"="+value]:
			phantom++
			res.anomaly("a write that failed happened: %s=%s (process %d, %s)", key, value, op.Process, op.Err)
		}
	}
	res.Stats["lost_writes"] = lost
	res.Stats["phantom_writes"] = phantom
}

// ackedWrite is the key and unique value a write op put, and the
// revision it was acknowledged with (ok is false for reads, deletes and
// CASes that did not apply).
func ackedWrite(op Op) (key, value string, rev int64, ok bool) {
	switch in := op.In.(type) {
	case regInput:
		out, _ := op.Out.(regOutput)
		if in.Op == "write" || in.Op == "cas" && (op.Status != StatusOK || out.OK) {
			return in.Key, strconv.FormatInt(in.Value, 10), out.Rev, true
		}
	case watchWrite:
		rev, _ := op.Out.(int64)
		if in.Op == "put" {
			return in.Keys[0], in.Value, rev, true
		}
	}
	return "", "", 0, false
}

// checkWatcher compares what a watcher saw with the reference.
func checkWatcher(res *Result, name string, evs, ref []watchEvent, final int64) {
	if len(evs) == 0 || evs[len(evs)-1].Rev < final {
		last := int64(0)
		if len(evs) > 0 {
			last = evs[len(evs)-1].Rev
		}
		res.anomaly("%s: the watcher reached revision %d of %d", name, last, final)
	}
	respOf := map[int64]int{}
	for i, e := range evs {
		if i > 0 {
			p := evs[i-1]
			if e.Rev < p.Rev || e.Rev == p.Rev && e.Key == p.Key {
				res.anomaly("%s: event %s@%d after %s@%d", name, e.Key, e.Rev, p.Key, p.Rev)
			}
		}
		if r, ok := respOf[e.Rev]; ok && r != e.Resp {
			res.anomaly("%s: revision %d split across responses %d and %d", name, e.Rev, r, e.Resp)
		}
		respOf[e.Rev] = e.Resp
	}
	// The same events as the reference, revision by revision (a
	// transaction's events in its order), from the watcher's first
	// revision to the final one.
	byRev := func(es []watchEvent) (map[int64][]watchEvent, []int64) {
		m := map[int64][]watchEvent{}
		var revs []int64
		for _, e := range es {
			if e.Rev > final {
				break
			}
			if _, ok := m[e.Rev]; !ok {
				revs = append(revs, e.Rev)
			}
			m[e.Rev] = append(m[e.Rev], e)
		}
		return m, revs
	}
	got, gotRevs := byRev(evs)
	want, wantRevs := byRev(ref)
	eq := func(a, b watchEvent) bool {
		return a.Rev == b.Rev && a.Key == b.Key && a.Delete == b.Delete && a.Value == b.Value &&
			a.Mod == b.Mod && a.Create == b.Create && a.Version == b.Version &&
			(a.Prev == nil) == (b.Prev == nil) && (a.Prev == nil || *a.Prev == *b.Prev)
	}
	for _, rev := range wantRevs {
		g, w := got[rev], want[rev]
		switch {
		case len(g) == 0:
			res.anomaly("%s: missed revision %d (%s)", name, rev, w[0].Key)
		case !slices.EqualFunc(g, w, eq):
			res.anomaly("%s: revision %d: saw %v, the reference has %v", name, rev, g, w)
		}
	}
	for _, rev := range gotRevs {
		if _, ok := want[rev]; !ok {
			res.anomaly("%s: saw revision %d, which the reference does not have", name, rev)
		}
	}
}
