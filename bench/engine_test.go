package bench

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/pagefile"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/etcdserver/cindex"
	"go.etcd.io/etcd/server/v3/etcdserver/txn"
	"go.etcd.io/etcd/server/v3/lease"
	etcdstorage "go.etcd.io/etcd/server/v3/storage"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"
)

// mvccStore is what BenchmarkEngine drives: the state machine as the
// server applies to it and reads from it.
type mvccStore interface {
	put(index uint64, key, val []byte) // an applied entry
	txn(index uint64, key, val []byte) // if version(key) > 0 then put
	get(key []byte) int                // keys read
	prefix(start, end []byte) int      // keys read
	commit()                           // make everything durable
	close()
	// watch adds a watcher on [key, end) from the next revision, on a
	// stream of its own whose reader calls done once want events came.
	watch(key, end []byte, want int, done func()) (stop func())
}

// BenchmarkEngine compares cairn's engine with etcd's mvcc store over its
// bbolt backend (the watchable store etcd's server uses), each driven the
// way its server drives it: writes are
// applied entries (etcd: its txn package with the consistent index hooked
// into backend commits and its default TxnModeWriteWithSharedBuffer; cairn: Apply then CommitIfDue), both committing by
// their default batch policy (100 ms or 10,000 writes) with fsync on.
// Values are 256 bytes. put writes new keys; txn compares a preloaded key's
// version and puts it; range-1 reads one key; range-100 reads a 100-key
// prefix, from a store of 10,000 preloaded keys committed to disk.
// watch-fanout puts keys under a prefix 1,000 watchers watch, each on a
// stream of its own with a reader, timed until every watcher has every
// event (slow ones caught up from history as each store does). memory
// puts 1,000,000 keys (-short: 10,000) of 8-byte names and 256-byte values
// and reports the Go heap and the process's resident memory it added, per
// key (run it with -benchtime=1x).
func BenchmarkEngine(b *testing.B) {
	val := make([]byte, 256)
	rand.New(rand.NewSource(1)).Read(val)
	impls := []struct {
		name string
		open func(b *testing.B) mvccStore
	}{
		{"cairn", openCairnEngine},
		{"etcd", openEtcdMVCC},
	}
	const preload = 10000
	key := func(i int) []byte { return []byte(fmt.Sprintf("key/%04d/%08d", i%100, i)) }
	load := func(s mvccStore) uint64 {
		for i := 0; i < preload; i++ {
			s.put(uint64(i+1), key(i), val)
		}
		s.commit()
		return preload
	}
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			b.Run("put", func(b *testing.B) {
				s := im.open(b)
				defer s.close()
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					s.put(uint64(i+1), []byte(fmt.Sprintf("new/%012d", i)), val)
				}
				s.commit()
			})
			b.Run("txn", func(b *testing.B) {
				s := im.open(b)
				defer s.close()
				idx := load(s)
				rng := rand.New(rand.NewSource(2))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					idx++
					s.txn(idx, key(rng.Intn(preload)), val)
				}
				s.commit()
			})
			b.Run("range-1", func(b *testing.B) {
				s := im.open(b)
				defer s.close()
				load(s)
				rng := rand.New(rand.NewSource(3))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if s.get(key(rng.Intn(preload))) != 1 {
						b.Fatal("a preloaded key is missing")
					}
				}
			})
			b.Run("watch-fanout", func(b *testing.B) {
				const watchers = 1000
				s := im.open(b)
				defer s.close()
				var all sync.WaitGroup
				all.Add(watchers)
				for i := 0; i < watchers; i++ {
					defer s.watch([]byte("w/"), []byte("w0"), b.N, all.Done)()
				}
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < b.N; i++ {
					s.put(uint64(i+1), []byte(fmt.Sprintf("w/%08d", i%1000)), val)
				}
				all.Wait()
				b.ReportMetric(float64(watchers*b.N)/time.Since(start).Seconds(), "events/s")
			})
			b.Run("memory", func(b *testing.B) {
				n := 1_000_000
				if testing.Short() {
					n = 10_000
				}
				for i := 0; i < b.N; i++ {
					heap0, rss0 := memNow()
					s := im.open(b)
					for k := 0; k < n; k++ {
						s.put(uint64(k+1), []byte(fmt.Sprintf("%08d", k)), val)
					}
					s.commit()
					heap1, rss1 := memNow()
					b.ReportMetric(float64(heap1-heap0)/float64(n), "heap-B/key")
					b.ReportMetric(float64(rss1-rss0)/float64(n), "rss-B/key")
					s.close()
				}
			})
			b.Run("range-100", func(b *testing.B) {
				s := im.open(b)
				defer s.close()
				load(s)
				rng := rand.New(rand.NewSource(4))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					p := fmt.Sprintf("key/%04d/", rng.Intn(100))
					end := []byte(p)
					end[len(end)-1]++
					if n := s.prefix([]byte(p), end); n != preload/100 {
						b.Fatalf("prefix %s read %d keys", p, n)
					}
				}
			})
		})
	}
}

// memNow returns the Go heap in use and the process's resident memory,
// after a collection that hands freed memory back to the system.
func memNow() (heap, rss int64) {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return int64(ms.HeapAlloc), 0
	}
	var size, resident int64
	fmt.Sscan(string(b), &size, &resident)
	return int64(ms.HeapAlloc), resident * int64(os.Getpagesize())
}

type cairnEngine struct {
	b  *testing.B
	db *pagefile.DB
	s  *engine.Store
}

func openCairnEngine(b *testing.B) mvccStore {
	db, err := pagefile.Open(filepath.Join(b.TempDir(), "db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	s, err := engine.Open(db)
	if err != nil {
		b.Fatal(err)
	}
	return &cairnEngine{b: b, db: db, s: s}
}

func (c *cairnEngine) apply(index uint64, req *engine.TxnRequest) {
	if _, ok, err := c.s.Apply(index, req); !ok || err != nil {
		c.b.Fatalf("apply %d: %v %v", index, ok, err)
	}
	if _, err := c.s.CommitIfDue(time.Now()); err != nil {
		c.b.Fatal(err)
	}
}

func (c *cairnEngine) put(index uint64, key, val []byte) {
	c.apply(index, &engine.TxnRequest{Success: []engine.Op{{Type: engine.OpPut, Key: key, Value: val}}})
}

func (c *cairnEngine) txn(index uint64, key, val []byte) {
	c.apply(index, &engine.TxnRequest{
		Compare: []engine.Compare{{Key: key, Target: engine.CompareVersion, Result: engine.CompareGreater}},
		Success: []engine.Op{{Type: engine.OpPut, Key: key, Value: val}},
	})
}

func (c *cairnEngine) get(key []byte) int {
	res, err := c.s.Range(key, nil, engine.RangeOptions{})
	if err != nil {
		c.b.Fatal(err)
	}
	return len(res.KVs)
}

func (c *cairnEngine) prefix(start, end []byte) int {
	res, err := c.s.Range(start, end, engine.RangeOptions{})
	if err != nil {
		c.b.Fatal(err)
	}
	return len(res.KVs)
}

func (c *cairnEngine) commit() {
	if err := c.s.Commit(); err != nil {
		c.b.Fatal(err)
	}
}

func (c *cairnEngine) watch(key, end []byte, want int, done func()) func() {
	ws := c.s.NewWatchStream()
	if _, err := ws.Watch(engine.WatchOptions{Key: key, End: end}); err != nil {
		c.b.Fatal(err)
	}
	go countEvents(ws.Chan(), func(r engine.WatchResponse) int { return len(r.Events) }, want, done)
	return ws.Close
}

// countEvents reads a watch stream until it closes, calling done once want
// events have come.
func countEvents[R any](ch <-chan R, events func(R) int, want int, done func()) {
	n := 0
	for r := range ch {
		if n += events(r); n == want {
			done()
		}
	}
}

func (c *cairnEngine) close() {
	_ = c.s.Close()
	_ = c.db.Close()
}

type etcdMVCC struct {
	b  *testing.B
	be backend.Backend
	ci cindex.ConsistentIndexer
	s  mvcc.WatchableKV
	lg *zap.Logger
}

func openEtcdMVCC(b *testing.B) mvccStore {
	lg := zap.NewNop()
	ci := cindex.NewConsistentIndex(nil)
	cfg := backend.DefaultBackendConfig(lg)
	cfg.Path = filepath.Join(b.TempDir(), "db")
	cfg.Hooks = etcdstorage.NewBackendHooks(lg, ci)
	be := backend.New(cfg)
	ci.SetBackend(be)
	s := mvcc.New(lg, be, &lease.FakeLessor{}, mvcc.StoreConfig{})
	return &etcdMVCC{b: b, be: be, ci: ci, s: s, lg: lg}
}

func (e *etcdMVCC) put(index uint64, key, val []byte) {
	e.ci.SetConsistentApplyingIndex(index, 1)
	if _, _, err := txn.Put(context.Background(), e.lg, &lease.FakeLessor{}, e.s, &pb.PutRequest{Key: key, Value: val}); err != nil {
		e.b.Fatal(err)
	}
	e.ci.SetConsistentIndex(index, 1)
}

func (e *etcdMVCC) txn(index uint64, key, val []byte) {
	e.ci.SetConsistentApplyingIndex(index, 1)
	rt := &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: key, Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: val}}}},
	}
	if _, _, err := txn.Txn(context.Background(), e.lg, rt, true, e.s, &lease.FakeLessor{}, false); err != nil {
		e.b.Fatal(err)
	}
	e.ci.SetConsistentIndex(index, 1)
}

func (e *etcdMVCC) get(key []byte) int {
	resp, _, err := txn.Range(context.Background(), e.lg, e.s, &pb.RangeRequest{Key: key}, true)
	if err != nil {
		e.b.Fatal(err)
	}
	return len(resp.Kvs)
}

func (e *etcdMVCC) prefix(start, end []byte) int {
	resp, _, err := txn.Range(context.Background(), e.lg, e.s, &pb.RangeRequest{Key: start, RangeEnd: end}, true)
	if err != nil {
		e.b.Fatal(err)
	}
	return len(resp.Kvs)
}

func (e *etcdMVCC) commit() { e.be.ForceCommit() }

func (e *etcdMVCC) watch(key, end []byte, want int, done func()) func() {
	ws := e.s.NewWatchStream()
	// Watch id 0: etcd picks one.
	if _, err := ws.Watch(context.Background(), 0, key, end, 0); err != nil {
		e.b.Fatal(err)
	}
	go countEvents(ws.Chan(), func(r mvcc.WatchResponse) int { return len(r.Events) }, want, done)
	return ws.Close
}

func (e *etcdMVCC) close() {
	_ = e.s.Close()
	_ = e.be.Close()
}
