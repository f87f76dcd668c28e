package member

import (
	"context"
	"time"

	"github.com/cairn-kv/cairn/internal/failpoint"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"
)

type proposal struct {
	id   uint64
	data []byte
}

type waiter struct {
	ch       chan applyResult
	deadline time.Time
	// req is the request as proposed: apply on this member takes it
	// with the waiter rather than decoding the entry again.
	req *pb.InternalRaftRequest
}

type applyResult struct {
	resp proto.Message
	err  error
}

// requestTimeout bounds how long a request waits for its entry to apply.
// It goes out as etcd's "request timed out" (codes.Unavailable), never as
// DeadlineExceeded, which a client would take as its own deadline.
const requestTimeout = 7 * time.Second

// expireEvery is how often the driver looks for requests past their
// deadline: a request times out between requestTimeout and that plus
// expireEvery and a tick.
const expireEvery = 100 * time.Millisecond

// maxApplyLag is how far apply may fall behind commit before proposals
// are refused with "too many requests", etcd's 5,000 entries.
const maxApplyLag = 5000

// nextID returns a fresh id for a request or a lease.
func (m *Member) NextID() uint64 {
	return m.idPrefix | m.idSuffix.Add(1)&(1<<48-1)
}

func (m *Member) register(id uint64, req *pb.InternalRaftRequest) chan applyResult {
	ch, _ := m.resultChans.Get().(chan applyResult)
	if ch == nil {
		ch = make(chan applyResult, 1)
	}
	w := waiter{ch: ch, deadline: time.Now().Add(requestTimeout), req: req}
	m.waitMu.Lock()
	m.waiters[id] = w
	m.waitMu.Unlock()
	return ch
}

// take removes and returns the waiter of request id (zero if none).
func (m *Member) take(id uint64) waiter {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	w := m.waiters[id]
	delete(m.waiters, id)
	return w
}

// expireProposals answers the proposals waiting past their deadline with
// etcd's "request timed out"; their entries may still apply.
func (m *Member) expireProposals(now time.Time) {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	for id, w := range m.waiters {
		if now.After(w.deadline) {
			delete(m.waiters, id)
			w.ch <- applyResult{err: rpctypes.ErrGRPCTimeout}
			m.metrics.proposalsFailed.Inc()
		}
	}
}

func (m *Member) trigger(id uint64, res applyResult) {
	if ch := m.take(id).ch; ch != nil {
		ch <- res
	}
}

// propose sends a request through raft and waits for its result.
func (m *Member) Propose(ctx context.Context, req *pb.InternalRaftRequest) (proto.Message, error) {
	if m.failed.Load() != nil {
		return nil, rpctypes.ErrGRPCStopped
	}
	if m.commit.Load() > m.AppliedIndex()+maxApplyLag {
		return nil, rpctypes.ErrGRPCRequestTooManyRequests
	}
	c, err := m.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	id := m.NextID()
	req.Header = &pb.RequestHeader{ID: id, Username: c.Name, AuthRevision: c.Rev}
	data, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	if len(data) > m.cfg.MaxRequestBytes {
		return nil, rpctypes.ErrGRPCRequestTooLarge
	}
	ch := m.register(id, req)
	m.propMu.Lock()
	m.props = append(m.props, proposal{id: id, data: data})
	first := !m.proposing
	m.proposing = true
	m.propMu.Unlock()
	if req.Put != nil && failpoint.Hit("member/canaryAckBeforeSync") != nil {
		// The canary: the put is answered before it is written, synced,
		// committed or applied, on purpose.
		if first {
			go m.proposeQueued()
		}
		m.take(id)
		return &pb.PutResponse{Header: m.Header(m.eng.Rev() + 1)}, nil
	}
	if first {
		m.proposeQueued()
	}
	var res applyResult
	select {
	case res = <-ch: // answered at apply (above, if this proposer applied), or at the deadline
	case <-ctx.Done():
		m.take(id) // the channel may yet be answered: not reused
		return nil, ctx.Err()
	case <-m.stopping:
		m.take(id)
		return nil, rpctypes.ErrGRPCStopped
	}
	// Whoever answered took the waiter out first: no one else has ch.
	m.resultChans.Put(ch)
	return res.resp, res.err
}

// proposeQueued takes every queued proposal to raft, makes them durable
// with one WAL write and applies what commits, on the caller's goroutine.
// It waits for raftMu, held meanwhile by whoever is persisting the batch
// before: proposals queued until it has the lock go with this batch, the
// ones after with the next caller's.
func (m *Member) proposeQueued() {
	m.raftMu.Lock()
	m.propMu.Lock()
	props := m.props
	m.props, m.propSpare = m.propSpare, nil
	m.proposing = false
	m.propMu.Unlock()
	for _, p := range props {
		switch {
		case m.raftDone:
			m.trigger(p.id, applyResult{err: rpctypes.ErrGRPCStopped})
		case m.r.Propose(p.data) != nil:
			m.trigger(p.id, applyResult{err: rpctypes.ErrGRPCNoLeader})
		}
	}
	m.advance()
	clear(props)
	m.propSpare = props[:0]
	m.raftMu.Unlock()
	m.applyQueued()
}

// pending is how many proposals wait for their entries to apply.
func (m *Member) pending() int {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	return len(m.waiters)
}
