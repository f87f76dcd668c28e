package bench

import (
	"fmt"
	"io"
	"log"
	"math/rand"
	"runtime"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/raft"
	etcdraft "go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// BenchmarkRaft compares cairn's raft with etcd's, both as pure state
// machines: a 3-node cluster in memory, "persisting" is keeping entries in
// memory, messages are handed straight to their recipient. Proposals of
// 256-byte entries in batches of 1 and 64 (ns/op and allocs/op per entry,
// committed and applied on every node); ReadIndex rounds with 1 and 100
// reads at once on the leader (per read).
func BenchmarkRaft(b *testing.B) {
	data := make([]byte, 256)
	type cluster interface {
		propose(n int)
		read(n int)
		pump() (applied, reads int)
	}
	impls := []struct {
		name string
		make func(b *testing.B) cluster
	}{
		{"cairn", func(b *testing.B) cluster { return newCairnRaft(b, data) }},
		{"etcdraft", func(b *testing.B) cluster { return newEtcdRaft(b, data) }},
	}
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			for _, batch := range []int{1, 64} {
				b.Run(fmt.Sprintf("propose-batch-%d", batch), func(b *testing.B) {
					c := im.make(b)
					b.ReportAllocs()
					m0 := mallocs()
					start := time.Now()
					b.ResetTimer()
					for done := 0; done < b.N; {
						n := min(batch, b.N-done)
						c.propose(n)
						applied, _ := c.pump()
						if applied < n {
							b.Fatalf("proposed %d, applied %d", n, applied)
						}
						done += n
					}
					b.StopTimer()
					b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
					b.ReportMetric(float64(mallocs()-m0)/float64(b.N), "allocs/entry")
				})
			}
			for _, reads := range []int{1, 100} {
				b.Run(fmt.Sprintf("readindex-%d", reads), func(b *testing.B) {
					c := im.make(b)
					b.ReportAllocs()
					b.ResetTimer()
					for done := 0; done < b.N; {
						n := min(reads, b.N-done)
						c.read(n)
						if _, got := c.pump(); got != n {
							b.Fatalf("asked %d reads, %d released", n, got)
						}
						done += n
					}
				})
			}
		})
	}
}

// mallocs returns the heap allocations made so far (allocs/op rounds to a
// whole number; per entry in a batch of 64 it is a fraction).
func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// --- cairn ----------------------------------------------------------------

type cairnRaft struct {
	nodes  map[uint64]*raft.Raft
	leader uint64
	data   []byte
	ctx    [][]byte
}

func newCairnRaft(b *testing.B, data []byte) *cairnRaft {
	c := &cairnRaft{nodes: map[uint64]*raft.Raft{}, data: data}
	for id := uint64(1); id <= 3; id++ {
		r, err := raft.New(raft.Config{ID: id, Peers: []uint64{1, 2, 3}, ElectionTick: 10, HeartbeatTick: 1,
			Rand: rand.New(rand.NewSource(int64(id))), PreVote: true, CheckQuorum: true})
		if err != nil {
			b.Fatal(err)
		}
		c.nodes[id] = r
	}
	c.leader = 1
	if err := c.nodes[1].Campaign(); err != nil {
		b.Fatal(err)
	}
	c.pump()
	if c.nodes[1].Status().State != raft.StateLeader {
		b.Fatal("no leader")
	}
	for i := 0; i < 100; i++ {
		c.ctx = append(c.ctx, []byte(fmt.Sprint(i)))
	}
	return c
}

func (c *cairnRaft) propose(n int) {
	ents := make([]raft.Entry, n)
	for i := range ents {
		ents[i].Data = c.data
	}
	_ = c.nodes[c.leader].Step(raft.Message{Type: raft.MsgProp, From: c.leader, Entries: ents})
}

func (c *cairnRaft) read(n int) {
	for i := 0; i < n; i++ {
		_ = c.nodes[c.leader].ReadIndex(c.ctx[i])
	}
}

func (c *cairnRaft) pump() (applied, reads int) {
	for more := true; more; {
		more = false
		for id := uint64(1); id <= 3; id++ {
			r := c.nodes[id]
			if !r.HasReady() {
				continue
			}
			more = true
			rd := r.Ready()
			for _, m := range rd.Messages {
				_ = c.nodes[m.To].Step(m)
			}
			for _, m := range rd.MessagesAfterPersist {
				_ = c.nodes[m.To].Step(m)
			}
			if id == c.leader {
				for _, e := range rd.CommittedEntries {
					if len(e.Data) > 0 {
						applied++
					}
				}
				reads += len(rd.ReadStates)
			}
			r.Advance(rd)
		}
	}
	return applied, reads
}

// --- etcd raft ------------------------------------------------------------

type etcdRaft struct {
	nodes map[uint64]*etcdraft.RawNode
	st    map[uint64]*etcdraft.MemoryStorage
	data  []byte
	ctx   [][]byte
}

func newEtcdRaft(b *testing.B, data []byte) *etcdRaft {
	c := &etcdRaft{nodes: map[uint64]*etcdraft.RawNode{}, st: map[uint64]*etcdraft.MemoryStorage{}, data: data}
	quiet := &etcdraft.DefaultLogger{Logger: log.New(io.Discard, "", 0)}
	for id := uint64(1); id <= 3; id++ {
		st := etcdraft.NewMemoryStorage()
		rn, err := etcdraft.NewRawNode(&etcdraft.Config{ID: id, ElectionTick: 10, HeartbeatTick: 1, Storage: st,
			MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, PreVote: true, CheckQuorum: true, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		if err := rn.Bootstrap([]etcdraft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}); err != nil {
			b.Fatal(err)
		}
		c.nodes[id], c.st[id] = rn, st
	}
	c.pump()
	if err := c.nodes[1].Campaign(); err != nil {
		b.Fatal(err)
	}
	c.pump()
	if c.nodes[1].Status().RaftState != etcdraft.StateLeader {
		b.Fatal("no leader")
	}
	for i := 0; i < 100; i++ {
		c.ctx = append(c.ctx, []byte(fmt.Sprint(i)))
	}
	return c
}

func (c *etcdRaft) propose(n int) {
	ents := make([]*pb.Entry, n)
	for i := range ents {
		ents[i] = &pb.Entry{Data: c.data}
	}
	_ = c.nodes[1].Step(&pb.Message{Type: pb.MsgProp.Enum(), Entries: ents})
}

func (c *etcdRaft) read(n int) {
	for i := 0; i < n; i++ {
		c.nodes[1].ReadIndex(c.ctx[i])
	}
}

func (c *etcdRaft) pump() (applied, reads int) {
	for more := true; more; {
		more = false
		for id := uint64(1); id <= 3; id++ {
			rn := c.nodes[id]
			if !rn.HasReady() {
				continue
			}
			more = true
			rd := rn.Ready()
			if rd.HardState != nil {
				_ = c.st[id].SetHardState(rd.HardState)
			}
			_ = c.st[id].Append(rd.Entries)
			for _, m := range rd.Messages {
				_ = c.nodes[m.GetTo()].Step(m)
			}
			if id == 1 {
				for _, e := range rd.CommittedEntries {
					if len(e.GetData()) > 0 && e.GetType() == pb.EntryNormal {
						applied++
					}
				}
				reads += len(rd.ReadStates)
			}
			rn.Advance(rd)
		}
	}
	return applied, reads
}
