package member

import (
	"context"
	"time"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// readRound is one ReadIndex shared by the linearizable reads that joined
// it before the driver took it: done is closed once index (the commit
// index the reads must see applied) or err is set.
type readRound struct {
	done     chan struct{}
	deadline time.Time // the first read's: past it the round times out
	index    uint64
	err      error
}

func (r *readRound) finish(index uint64, err error) {
	r.index, r.err = index, err
	close(r.done)
}

func (m *Member) AppliedIndex() uint64 {
	m.appliedMu.Lock()
	defer m.appliedMu.Unlock()
	return m.applied
}

func (m *Member) setApplied(index uint64) {
	m.appliedMu.Lock()
	m.applied = index
	close(m.appliedCh)
	m.appliedCh = make(chan struct{})
	m.appliedMu.Unlock()
}

// waitApplied returns once index is applied.
func (m *Member) waitApplied(ctx context.Context, index uint64) error {
	for {
		m.appliedMu.Lock()
		applied, ch := m.applied, m.appliedCh
		m.appliedMu.Unlock()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-m.stopping:
			return rpctypes.ErrGRPCStopped
		}
	}
}

// expireReads answers the reads waiting for their ReadIndex past their
// deadline with "request timed out" (raftMu held).
func (m *Member) expireReads(now time.Time) {
	for ctx, rd := range m.reads {
		if now.After(rd.deadline) {
			delete(m.reads, ctx)
			m.metrics.readIndexFailed.Inc()
			m.metrics.slowReadIndex.Inc()
			rd.finish(0, rpctypes.ErrGRPCTimeout)
		}
	}
}

// linearizableRead returns once a read of the engine is linearizable:
// the leader has confirmed its leadership at some commit index, and this
// member has applied it.
func (m *Member) LinearizableRead(ctx context.Context) error {
	if failpoint.Hit("member/canaryReadWithoutReadIndex") != nil {
		return nil // the canary: a stale read, on purpose
	}
	m.readMu.Lock()
	if m.readsDone {
		m.readMu.Unlock()
		return rpctypes.ErrGRPCStopped
	}
	rd := m.nextRead
	if rd == nil {
		rd = &readRound{done: make(chan struct{}), deadline: time.Now().Add(requestTimeout)}
		m.nextRead = rd
	}
	m.readJoins++
	m.readMu.Unlock()
	select {
	case m.readKick <- struct{}{}:
	default: // a kick is pending: the driver takes the round after it
	}
	// The driver finishes the round: answered, at its deadline at the
	// latest, or as the member stops.
	select {
	case <-rd.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if rd.err != nil {
		return rd.err
	}
	return m.waitApplied(ctx, rd.index)
}

// CountHealth counts a health check's outcome (etcd_server_health_success
// and _failures).
func (m *Member) CountHealth(ok bool) {
	if ok {
		m.metrics.healthSuccess.Inc()
	} else {
		m.metrics.healthFail.Inc()
	}
}
