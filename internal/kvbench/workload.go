package kvbench

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
)

// Env is what a workload runs on and with.
type Env struct {
	Conns   []grpc.ClientConnInterface // client i uses Conns[i % len(Conns)]
	Keys    *Keys
	ValSize int
	Seed    uint64
	Rec     *Recorder

	Serializable bool    // get, range and the Kubernetes pattern's gets and lists
	Limit        int64   // range: keys a request (0: all to the end of the space)
	ReadRatio    float64 // mixed: the share of gets
	Watchers     int     // watch, k8s: watchers over the key space
	LeaseTTL     int64   // lease: the granted TTL, seconds
	PageSize     int64   // k8s: keys a list page
	Preload      bool    // put every key of the space before the run

	// lastRev is the highest revision a put of the run answered with
	// (watch, k8s: the watchers have caught up once they have seen it).
	lastRev *atomic.Int64
}

func (e *Env) conn(i int) grpc.ClientConnInterface { return e.Conns[i%len(e.Conns)] }

func (e *Env) kv(i int) pb.KVClient {
	return pb.NewKVClient(e.conn(i))
}

func (e *Env) noteRev(h *pb.ResponseHeader) {
	for {
		old := e.lastRev.Load()
		if h == nil || h.Revision <= old || e.lastRev.CompareAndSwap(old, h.Revision) {
			return
		}
	}
}

// value returns client i's value: ValSize random bytes.
func (e *Env) value(i int) []byte {
	v := make([]byte, e.ValSize)
	r := rand.New(rand.NewPCG(e.Seed, uint64(i)))
	for j := range v {
		v[j] = byte(r.Uint32())
	}
	return v
}

// A Workload is a kind of load: what it prepares, each client's
// operation, and what it waits for at the end.
type Workload struct {
	Name, Help string
	// Preload is whether the workload reads keys, which --preload
	// (default on for it) puts first.
	Preload bool
	// Start, when not nil, runs before the timed run (after the preload);
	// the finish it returns runs after it, whatever the run's end.
	Start  func(ctx context.Context, e *Env) (finish func(context.Context) error, err error)
	Client func(i int, e *Env) Op
}

// Workloads lists every workload by name.
var Workloads = []*Workload{
	{Name: "put", Help: "puts of --val-size bytes to keys drawn from the key space", Client: putClient},
	{Name: "get", Help: "gets of one key (linearizable; --consistency s for serializable)", Preload: true, Client: getClient},
	{Name: "range", Help: "ranges from a key to the end of the space, --limit keys", Preload: true, Client: rangeClient},
	{Name: "delete", Help: "deletes of one key", Preload: true, Client: deleteClient},
	{Name: "txn", Help: "compare-and-put: put if the key's mod revision is the one this client last saw, else get it (kind txn-conflict)", Preload: true, Client: txnClient},
	{Name: "mixed", Help: "gets (--read-ratio of them) and puts", Preload: true, Client: mixedClient},
	{Name: "watch", Help: "--watchers watchers over the key space while puts are made; the delivery latency of each event (kind watch-event)", Start: watchersFrom(true), Client: stampedPutClient},
	{Name: "lease", Help: "lease churn: each client grants a lease of --lease-ttl, keeps it alive once, revokes it", Client: leaseClient},
	{Name: "k8s", Help: "Kubernetes' pattern: updates conditional on the mod revision (80%), gets (10%), list pages of --page-size at one revision (10%), while --watchers watch from the run's first revision", Preload: true, Start: watchersFrom(false), Client: k8sClient},
}

// Lookup returns the workload named name.
func Lookup(name string) (*Workload, error) {
	for _, w := range Workloads {
		if w.Name == name {
			return w, nil
		}
	}
	return nil, fmt.Errorf("unknown workload %q", name)
}

func putClient(i int, e *Env) Op {
	kv, p := e.kv(i), e.Keys.Picker(e.Seed+uint64(i))
	req := &pb.PutRequest{Value: e.value(i)}
	return func(ctx context.Context) (string, error) {
		req.Key = e.Keys.AppendKey(req.Key[:0], p.Next())
		_, err := kv.Put(ctx, req)
		return "put", err
	}
}

func getClient(i int, e *Env) Op {
	kv, p := e.kv(i), e.Keys.Picker(e.Seed+uint64(i))
	req := &pb.RangeRequest{Serializable: e.Serializable}
	return func(ctx context.Context) (string, error) {
		req.Key = e.Keys.AppendKey(req.Key[:0], p.Next())
		_, err := kv.Range(ctx, req)
		return "get", err
	}
}

func rangeClient(i int, e *Env) Op {
	kv, p := e.kv(i), e.Keys.Picker(e.Seed+uint64(i))
	req := &pb.RangeRequest{RangeEnd: []byte(e.Keys.End()), Limit: e.Limit, Serializable: e.Serializable}
	return func(ctx context.Context) (string, error) {
		req.Key = e.Keys.AppendKey(req.Key[:0], p.Next())
		_, err := kv.Range(ctx, req)
		return "range", err
	}
}

func deleteClient(i int, e *Env) Op {
	kv, p := e.kv(i), e.Keys.Picker(e.Seed+uint64(i))
	req := &pb.DeleteRangeRequest{}
	return func(ctx context.Context) (string, error) {
		req.Key = e.Keys.AppendKey(req.Key[:0], p.Next())
		_, err := kv.DeleteRange(ctx, req)
		return "delete", err
	}
}

func mixedClient(i int, e *Env) Op {
	get, put := getClient(i, e), putClient(i, e)
	p := e.Keys.Picker(e.Seed + uint64(i) + 1<<32)
	return func(ctx context.Context) (string, error) {
		if p.Float() < e.ReadRatio {
			return get(ctx)
		}
		return put(ctx)
	}
}

// casClient returns an update conditional on the key's mod revision, as
// this client last saw it: put if it is unchanged, else get it (and know
// it for the next time). Kinds: kind, kind+"-conflict".
func casClient(i int, e *Env, kind string, p *Picker) Op {
	kv := e.kv(i)
	seen := map[uint64]int64{} // key index → mod revision last seen
	// One request, reused: its key and the revision compared change.
	key := make([]byte, 0, e.Keys.Size)
	rev := &pb.Compare_ModRevision{}
	cmp := &pb.Compare{Target: pb.Compare_MOD, Result: pb.Compare_EQUAL, TargetUnion: rev}
	put := &pb.PutRequest{Value: e.value(i)}
	get := &pb.RangeRequest{}
	req := &pb.TxnRequest{
		Compare: []*pb.Compare{cmp},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: put}}},
		Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: get}}},
	}
	return func(ctx context.Context) (string, error) {
		k := p.Next()
		key = e.Keys.AppendKey(key[:0], k)
		cmp.Key, put.Key, get.Key = key, key, key
		rev.ModRevision = seen[k]
		resp, err := kv.Txn(ctx, req)
		if err != nil {
			return kind, err
		}
		if resp.Succeeded {
			seen[k] = resp.Header.Revision
			e.noteRev(resp.Header)
			return kind, nil
		}
		seen[k] = 0
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			seen[k] = kvs[0].ModRevision
		}
		return kind + "-conflict", nil
	}
}

func txnClient(i int, e *Env) Op { return casClient(i, e, "txn", e.Keys.Picker(e.Seed+uint64(i))) }

func leaseClient(i int, e *Env) Op {
	lc := pb.NewLeaseClient(e.conn(i))
	var (
		id     int64
		stream pb.Lease_LeaseKeepAliveClient
		step   int
	)
	return func(ctx context.Context) (string, error) {
		switch step {
		case 0:
			resp, err := lc.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: e.LeaseTTL})
			if err != nil {
				return "lease-grant", err
			}
			id, step = resp.ID, 1
			return "lease-grant", nil
		case 1:
			step = 2
			if stream == nil {
				// One keep-alive stream a client for the whole run (a
				// request's context would end it).
				s, err := lc.LeaseKeepAlive(context.WithoutCancel(ctx))
				if err != nil {
					return "lease-keepalive", err
				}
				stream = s
			}
			if err := stream.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
				stream = nil
				return "lease-keepalive", err
			}
			if _, err := stream.Recv(); err != nil {
				stream = nil
				return "lease-keepalive", err
			}
			return "lease-keepalive", nil
		default:
			step = 0
			_, err := lc.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
			return "lease-revoke", err
		}
	}
}

// stampedPutClient puts values whose first 8 bytes are the put's time
// (Unix ns), from which a watcher measures the event's delivery.
func stampedPutClient(i int, e *Env) Op {
	kv, p := e.kv(i), e.Keys.Picker(e.Seed+uint64(i))
	req := &pb.PutRequest{Value: e.value(i)}
	if len(req.Value) < 8 {
		req.Value = make([]byte, 8)
	}
	return func(ctx context.Context) (string, error) {
		req.Key = e.Keys.AppendKey(req.Key[:0], p.Next())
		binary.BigEndian.PutUint64(req.Value, uint64(time.Now().UnixNano()))
		resp, err := kv.Put(ctx, req)
		if err == nil {
			e.noteRev(resp.Header)
		}
		return "put", err
	}
}

func k8sClient(i int, e *Env) Op {
	p := e.Keys.Picker(e.Seed + uint64(i))
	update := casClient(i, e, "update", p)
	get := getClient(i, e)
	kv := e.kv(i)
	list := &pb.RangeRequest{RangeEnd: []byte(e.Keys.End()), Limit: e.PageSize, Serializable: e.Serializable}
	var next []byte // the next page's first key; nil: a new list
	return func(ctx context.Context) (string, error) {
		switch f := p.Float(); {
		case f < 0.8:
			return update(ctx)
		case f < 0.9:
			return get(ctx)
		}
		if next == nil {
			list.Key, list.Revision = e.Keys.AppendKey(list.Key[:0], 0), 0
		} else {
			list.Key = next
		}
		resp, err := kv.Range(ctx, list)
		if err != nil {
			next = nil
			return "list-page", err
		}
		if list.Revision == 0 {
			list.Revision = resp.Header.Revision // later pages read the first one's revision
		}
		next = nil
		if resp.More && len(resp.Kvs) > 0 {
			next = append(resp.Kvs[len(resp.Kvs)-1].Key, 0)
		}
		return "list-page", nil
	}
}

// watchers are a run's watchers, for their drain.
type watchers struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	seen   []atomic.Int64 // each watcher's highest revision
	err    error
	mu     sync.Mutex
}

// watchersFrom returns a start that opens e.Watchers watchers over the key
// space from the revision after the current one. Each counts the put
// events it receives (kind watch-event); when stamped (the values begin
// with their put's time), with each event's delivery latency. Its finish
// drains them.
func watchersFrom(stamped bool) func(ctx context.Context, e *Env) (func(context.Context) error, error) {
	return func(ctx context.Context, e *Env) (func(context.Context) error, error) {
		w, err := startWatchers(ctx, e, stamped)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error { return w.drain(ctx, e.lastRev.Load()) }, nil
	}
}

func startWatchers(ctx context.Context, e *Env, stamped bool) (*watchers, error) {
	kv := e.kv(0)
	resp, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte(e.Keys.Key(0)), Limit: 1, CountOnly: true})
	if err != nil {
		return nil, fmt.Errorf("reading the revision to watch from: %w", err)
	}
	from := resp.Header.Revision + 1
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &watchers{cancel: cancel, seen: make([]atomic.Int64, e.Watchers)}
	opened := make(chan error, e.Watchers)
	for j := range e.Watchers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			wc := pb.NewWatchClient(e.conn(j))
			stream, err := wc.Watch(wctx)
			if err == nil {
				err = stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
					Key: []byte(e.Keys.Key(0)), RangeEnd: []byte(e.Keys.End()), StartRevision: from}}})
			}
			if err == nil {
				var r *pb.WatchResponse
				if r, err = stream.Recv(); err == nil && !r.Created {
					err = fmt.Errorf("watch not created: %s", r.CancelReason)
				}
			}
			opened <- err
			if err != nil {
				return
			}
			for {
				r, err := stream.Recv()
				if err != nil {
					if wctx.Err() == nil {
						w.mu.Lock()
						w.err = err
						w.mu.Unlock()
					}
					return
				}
				now := time.Now()
				for _, ev := range r.Events {
					if ev.Type != mvccpb.PUT {
						continue
					}
					if stamped && len(ev.Kv.Value) >= 8 {
						e.Rec.Event(j, "watch-event", now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(ev.Kv.Value)))))
					} else {
						e.Rec.Count(j, "watch-event")
					}
				}
				w.seen[j].Store(r.Header.Revision)
			}
		}()
	}
	for range e.Watchers {
		if err := <-opened; err != nil {
			cancel()
			w.wg.Wait()
			return nil, fmt.Errorf("opening a watcher: %w", err)
		}
	}
	return w, nil
}

// drain waits (up to a minute) until every watcher has seen revision
// last, then closes them.
func (w *watchers) drain(ctx context.Context, last int64) error {
	defer func() { w.cancel(); w.wg.Wait() }()
	deadline := time.Now().Add(time.Minute)
	for j := range w.seen {
		for w.seen[j].Load() < last {
			w.mu.Lock()
			err := w.err
			w.mu.Unlock()
			if err != nil {
				return fmt.Errorf("a watcher failed: %w", err)
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("watcher %d saw revision %d of %d", j, w.seen[j].Load(), last)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// preload puts every key of the space once, with clients at a time.
func preload(ctx context.Context, e *Env, clients int) error {
	var (
		next  atomic.Uint64
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i := range max(clients, 1) {
		kv, val := e.kv(i), e.value(i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				if k >= e.Keys.Space {
					return
				}
				if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(e.Keys.Key(k)), Value: val}); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("preloading key %d: %w", k, err)
					}
					mu.Unlock()
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	return first
}
