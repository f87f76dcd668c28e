package bench

import (
	"context"
	"fmt"
	"math/rand"
	"path/filepath"
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
}

// BenchmarkEngine compares cairn's engine with etcd's mvcc store over its
// bbolt backend, each driven the way its server drives it: writes are
// applied entries (etcd: its txn package with the consistent index hooked
// into backend commits and its default TxnModeWriteWithSharedBuffer; cairn: Apply then CommitIfDue), both committing by
// their default batch policy (100 ms or 10,000 writes) with fsync on.
// Values are 256 bytes. put writes new keys; txn compares a preloaded key's
// version and puts it; range-1 reads one key; range-100 reads a 100-key
// prefix, from a store of 10,000 preloaded keys committed to disk.
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

func (c *cairnEngine) close() {
	_ = c.s.Close()
	_ = c.db.Close()
}

type etcdMVCC struct {
	b  *testing.B
	be backend.Backend
	ci cindex.ConsistentIndexer
	s  mvcc.KV
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
	s := mvcc.NewStore(lg, be, &lease.FakeLessor{}, mvcc.StoreConfig{})
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

func (e *etcdMVCC) close() {
	_ = e.s.Close()
	_ = e.be.Close()
}
