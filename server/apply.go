package server

import (
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/raft"
	"github.com/cairn-kv/cairn/server/auth"
)

// applierTask is work that must run on the apply goroutine, between
// entries: it is the engine's only writer (a snapshot's commit, a
// defragmentation, a backend hash).
type applierTask struct {
	f    func() error
	done chan error
}

// applyLoop is the apply goroutine. It takes the apply role when kicked,
// for a task, on its ticks and at the end: then it applies everything
// queued, commits the engine's batch when due, goes on with a compaction's
// deletions and records a raft snapshot when one is due. At the end it
// keeps the role, so nothing is applied after the engine's last commit.
func (m *member) applyLoop() {
	defer m.done.Done()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		var task *applierTask
		select {
		case <-m.stopping:
			if m.takeApply() && m.applyAll() {
				if err := m.eng.Commit(); err != nil {
					m.fail(err)
				}
			}
			return
		case <-m.applyKick:
		case t := <-m.taskc:
			task = &t
		case <-ticker.C:
		}
		if !m.takeApply() {
			// Applying failed: the member only waits to stop.
			if task != nil {
				task.done <- rpctypes.ErrGRPCStopped
			}
			<-m.stopping
			return
		}
		if task != nil {
			task.done <- task.f()
		}
		for m.applyAll() && m.housekeeping() && !m.releaseApply() {
		}
	}
}

// applyQueued applies the entries queued for apply, on the caller's
// goroutine, if no one holds the apply role. It applies one batch: if more
// was queued meanwhile, or the engine has housekeeping due, it kicks the
// apply goroutine to go on rather than keep its caller from answering.
func (m *member) applyQueued() {
	m.applyMu.Lock()
	if m.applying || m.applyDead || len(m.applyq) == 0 {
		m.applyMu.Unlock()
		return
	}
	m.applying = true
	ents := m.applyq
	m.applyq = nil
	m.applyMu.Unlock()
	if !m.applyEntries(ents) {
		return
	}
	more := m.eng.HousekeepingDue() || m.snapshotDue()
	m.applyMu.Lock()
	more = more || len(m.applyq) > 0
	m.applying = false
	m.applyIdle.Broadcast()
	m.applyMu.Unlock()
	if more {
		select {
		case m.applyKick <- struct{}{}:
		default: // a kick is waiting already
		}
	}
}

// takeApply waits for the apply role and takes it (apply goroutine only).
// It returns false when applying has failed.
func (m *member) takeApply() bool {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	for m.applying {
		m.applyIdle.Wait()
	}
	m.applying = true
	return !m.applyDead
}

// releaseApply gives up the apply role, unless entries were queued since
// its holder last looked: then it keeps it and returns false.
func (m *member) releaseApply() bool {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	if len(m.applyq) > 0 {
		return false
	}
	m.applying = false
	m.applyIdle.Broadcast()
	return true
}

// applyAll applies everything queued, recording raft snapshots as they
// fall due (apply role held). It returns false when applying failed.
func (m *member) applyAll() bool {
	for {
		if m.snapshotDue() {
			if err := m.snapshotAt(m.appliedIndex()); err != nil {
				m.failApply(err)
				return false
			}
		}
		m.applyMu.Lock()
		ents := m.applyq
		m.applyq = nil
		m.applyMu.Unlock()
		if len(ents) == 0 {
			return true
		}
		if !m.applyEntries(ents) {
			return false
		}
	}
}

// applyEntries applies ents in order and hands their slice back for reuse
// (apply role held). It returns false when applying failed.
func (m *member) applyEntries(ents []raft.Entry) bool {
	for _, e := range ents {
		if err := m.applyEntry(e); err != nil {
			m.failApply(err)
			return false
		}
	}
	m.setApplied(ents[len(ents)-1].Index)
	clear(ents)
	m.applyMu.Lock()
	m.applySpare = ents[:0]
	m.applyMu.Unlock()
	return true
}

// failApply fails the member: nothing is applied after err. The role is
// released so that the apply goroutine is not left waiting for it.
func (m *member) failApply(err error) {
	m.fail(err)
	m.applyMu.Lock()
	m.applyDead = true
	m.applying = false
	m.applyIdle.Broadcast()
	m.applyMu.Unlock()
}

func (m *member) snapshotDue() bool {
	return m.cfg.SnapshotCount > 0 && m.appliedIndex()-m.snapIndex >= m.cfg.SnapshotCount
}

// housekeeping commits the engine's batch when due and goes on with a
// compaction's deletions (apply role held). It returns false when the
// store failed.
func (m *member) housekeeping() bool {
	start := time.Now()
	committed, err := m.eng.CommitIfDue(start)
	if err != nil {
		m.failApply(err)
		return false
	}
	if committed {
		m.metrics.backendCommit.Observe(time.Since(start).Seconds())
	}
	done, err := m.eng.CompactStep(1000)
	if err != nil {
		m.failApply(err)
		return false
	}
	if done {
		for _, ch := range m.compactWaiters {
			ch <- applyResult{resp: &pb.CompactionResponse{Header: m.header(m.eng.Rev())}}
		}
		m.compactWaiters = nil
	}
	return true
}

// snapshotAt makes the engine durable at index (its consistent index with
// it) and hands the index to the driver to record a raft snapshot there.
// Only the newest index waits: one the driver has not taken yet is
// replaced (the driver may itself be waiting to hand over entries).
func (m *member) snapshotAt(index uint64) error {
	start := time.Now()
	if err := m.eng.Commit(); err != nil {
		return err
	}
	m.metrics.backendCommit.Observe(time.Since(start).Seconds())
	m.snapIndex = index
	for {
		select {
		case m.snapc <- index:
			return nil
		default:
		}
		select {
		case <-m.snapc:
		default:
		}
	}
}

// onApplier runs f on the apply goroutine and returns its error.
func (m *member) onApplier(f func() error) error {
	t := applierTask{f: f, done: make(chan error, 1)}
	select {
	case m.taskc <- t:
	case <-m.stopping:
		return rpctypes.ErrGRPCStopped
	}
	select {
	case err := <-t.done:
		return err
	case <-m.stopping:
		return rpctypes.ErrGRPCStopped
	}
}

// errStoreFailed marks an apply error that is the store failing, not the
// request's own result.
type errStoreFailed struct{ err error }

func (e errStoreFailed) Error() string { return e.err.Error() }

// applied sorts what one of the engine's Apply methods returned for an
// entry not applied before: ok false is the store failing; otherwise err
// is the request's refusal, or nil.
func applied(ok bool, err error) error {
	if !ok {
		return errStoreFailed{err}
	}
	return err
}

// applyEntry applies one committed entry and answers whoever waits on it.
// It returns an error only when the store failed.
func (m *member) applyEntry(e raft.Entry) error {
	if e.Index <= m.eng.AppliedIndex() {
		return nil // applied before this restart; nobody waits
	}
	if len(e.Data) == 0 {
		_, err := m.eng.ApplyEmpty(e.Index)
		return err
	}
	// The waiter of a request proposed here holds the request: the entry
	// is its encoding.
	id, found := entryID(e.Data)
	var w waiter
	if found {
		w = m.take(id)
	}
	req := w.req
	if req == nil {
		req = new(pb.InternalRaftRequest)
		if err := proto.Unmarshal(e.Data, req); err != nil {
			return fmt.Errorf("entry %d: %w", e.Index, err)
		}
		if !found {
			w = m.take(req.GetHeader().GetID())
		}
	}
	hdr := req.GetHeader()
	resp, err := m.applyRequest(e.Index, auth.Caller{Name: hdr.GetUsername(), Rev: hdr.GetAuthRevision()}, req)
	var failed errStoreFailed
	storeFailed := errors.As(err, &failed)
	switch {
	case w.ch == nil:
	case storeFailed:
		w.ch <- applyResult{err: rpctypes.ErrGRPCStopped} // the member fails
	case resp == nil && err == nil:
		// A physical compaction: answered once the backend's deletions
		// are done (housekeeping).
		m.compactWaiters = append(m.compactWaiters, w.ch)
	default:
		w.ch <- applyResult{resp: resp, err: grpcError(err)}
	}
	if storeFailed {
		return failed.err
	}
	return nil
}

// applyRequest applies one request, at an index not applied before. A
// refusal is returned as err; a store failure is an errStoreFailed.
func (m *member) applyRequest(index uint64, c auth.Caller, req *pb.InternalRaftRequest) (proto.Message, error) {
	e := m.eng
	// refuse applies the entry as a no-op, so the index advances, with
	// err as the request's result.
	refuse := func(err error) (proto.Message, error) {
		if _, ferr := e.ApplyEmpty(index); ferr != nil {
			return nil, errStoreFailed{ferr}
		}
		return nil, err
	}
	switch {
	case req.Put != nil:
		if err := m.checkPutPermission(c, req.Put); err != nil {
			return refuse(err)
		}
		if e.Alarmed(engine.AlarmNoSpace) {
			return refuse(rpctypes.ErrGRPCNoSpace)
		}
		res, ok, err := e.Apply(index, &engine.TxnRequest{Success: []engine.Op{putOp(req.Put)}})
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		return putResponse(req.Put, res.Responses[0].PrevKV, m.header(res.Rev)), nil
	case req.DeleteRange != nil:
		dr := req.DeleteRange
		if err := m.checkDeletePermission(c, dr); err != nil {
			return refuse(err)
		}
		res, ok, err := e.Apply(index, &engine.TxnRequest{Success: []engine.Op{{Type: engine.OpDelete, Key: dr.Key, End: rangeEnd(dr.RangeEnd)}}})
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		return deleteResponse(dr, res.Responses[0].Deleted, m.header(res.Rev)), nil
	case req.Txn != nil:
		if err := m.checkTxnPermission(c, req.Txn); err != nil {
			return refuse(err)
		}
		if e.Alarmed(engine.AlarmNoSpace) && txnWrites(req.Txn) {
			return refuse(rpctypes.ErrGRPCNoSpace)
		}
		res, ok, err := e.Apply(index, txnRequest(req.Txn))
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		return txnResponse(req.Txn, res, m.header(res.Rev)), nil
	case req.Compaction != nil:
		if err := applied(e.ApplyCompact(index, req.Compaction.Revision)); err != nil {
			return nil, err
		}
		if req.Compaction.Physical {
			return nil, nil // answered once the deletions are done
		}
		return &pb.CompactionResponse{Header: m.header(e.Rev())}, nil
	case req.LeaseGrant != nil:
		if e.Alarmed(engine.AlarmNoSpace) {
			return refuse(rpctypes.ErrGRPCNoSpace)
		}
		ttl, ok, err := e.ApplyLeaseGrant(index, req.LeaseGrant.ID, req.LeaseGrant.TTL)
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		return &pb.LeaseGrantResponse{Header: m.header(e.Rev()), ID: req.LeaseGrant.ID, TTL: ttl}, nil
	case req.LeaseRevoke != nil:
		rev, ok, err := e.ApplyLeaseRevoke(index, req.LeaseRevoke.ID)
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		return &pb.LeaseRevokeResponse{Header: m.header(rev)}, nil
	case req.LeaseCheckpoint != nil:
		cps := make([]engine.LeaseCheckpoint, len(req.LeaseCheckpoint.Checkpoints))
		for i, cp := range req.LeaseCheckpoint.Checkpoints {
			cps[i] = engine.LeaseCheckpoint{ID: cp.ID, Remaining: cp.Remaining_TTL}
		}
		if err := applied(e.ApplyLeaseCheckpoint(index, cps)); err != nil {
			return nil, err
		}
		return &pb.LeaseCheckpointResponse{Header: m.header(e.Rev())}, nil
	case req.Alarm != nil:
		return m.applyAlarm(index, req.Alarm)
	case req.DowngradeInfoSet != nil:
		d := engine.Downgrade{Enabled: req.DowngradeInfoSet.Enabled, TargetVersion: req.DowngradeInfoSet.Ver}
		if err := applied(e.ApplyChange(index, func() error { return e.SetDowngrade(d) })); err != nil {
			return nil, err
		}
		if d.Enabled {
			m.log.Info("the cluster is ready to downgrade", "target-version", d.TargetVersion, "server-version", Version)
		} else {
			m.log.Info("downgrade cancelled")
		}
		return &pb.DowngradeResponse{Header: m.header(e.Rev()), Version: ClusterVersion}, nil
	case req.ClusterMemberAttrSet != nil:
		r := req.ClusterMemberAttrSet
		err := applied(e.ApplyChange(index, func() error {
			return e.SetMemberAttributes(r.Member_ID, r.MemberAttributes.GetName(), r.MemberAttributes.GetClientUrls())
		}))
		if err != nil {
			return nil, err
		}
		return &pb.MemberListResponse{Header: m.header(e.Rev())}, nil
	}
	if f, resp := m.authChange(index, c, req); f != nil {
		if err := applied(e.ApplyChange(index, f)); err != nil {
			return nil, err
		}
		m.authApplied(req)
		return resp(), nil
	}
	// Not a request this member knows: a no-op, refused to whoever waits.
	return refuse(rpctypes.ErrGRPCNotCapable)
}

func (m *member) applyAlarm(index uint64, r *pb.AlarmRequest) (proto.Message, error) {
	e := m.eng
	resp := &pb.AlarmResponse{}
	err := applied(e.ApplyChange(index, func() error {
		a := engine.Alarm{MemberID: r.MemberID, Type: engine.AlarmType(r.Alarm)}
		switch r.Action {
		case pb.AlarmRequest_GET:
			for _, a := range e.Alarms() {
				if (r.MemberID == 0 || a.MemberID == r.MemberID) && (r.Alarm == pb.AlarmType_NONE || a.Type == engine.AlarmType(r.Alarm)) {
					resp.Alarms = append(resp.Alarms, &pb.AlarmMember{MemberID: a.MemberID, Alarm: pb.AlarmType(a.Type)})
				}
			}
		case pb.AlarmRequest_ACTIVATE:
			if r.Alarm == pb.AlarmType_NONE {
				return nil
			}
			changed, err := e.SetAlarm(a, true)
			if err != nil {
				return err
			}
			if changed {
				m.log.Warn("alarm raised", "member-id", fmt.Sprintf("%x", a.MemberID), "alarm", r.Alarm.String())
			}
			resp.Alarms = append(resp.Alarms, &pb.AlarmMember{MemberID: r.MemberID, Alarm: r.Alarm})
		case pb.AlarmRequest_DEACTIVATE:
			changed, err := e.SetAlarm(a, false)
			if err != nil {
				return err
			}
			if changed {
				m.log.Info("alarm cleared", "member-id", fmt.Sprintf("%x", a.MemberID), "alarm", r.Alarm.String())
				resp.Alarms = append(resp.Alarms, &pb.AlarmMember{MemberID: r.MemberID, Alarm: r.Alarm})
			}
		}
		return nil
	}))
	if err != nil {
		return nil, err
	}
	resp.Header = m.header(e.Rev())
	return resp, nil
}

// txnWrites reports whether a transaction holds a put, on either branch,
// at any depth (etcd's capped applier refuses those).
func txnWrites(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch q := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				return true
			case *pb.RequestOp_RequestTxn:
				if txnWrites(q.RequestTxn) {
					return true
				}
			}
		}
	}
	return false
}

// entryID reads the request id from an entry, an encoded
// InternalRaftRequest, without decoding the rest: field 1 of the header,
// field 100 (the first of each, as propose encodes them once).
func entryID(data []byte) (uint64, bool) {
	hdr, ok := protoField(data, 100, protowire.BytesType)
	if !ok {
		return 0, false
	}
	id, ok := protoField(hdr, 1, protowire.VarintType)
	if !ok {
		return 0, false
	}
	v, n := protowire.ConsumeVarint(id)
	return v, n >= 0
}

// protoField returns what follows the first field num of type typ in the
// encoded message b (a BytesType field's contents; for other types the
// rest of b, from the value on).
func protoField(b []byte, num protowire.Number, typ protowire.Type) ([]byte, bool) {
	for len(b) > 0 {
		fn, ft, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if fn == num && ft == typ {
			if typ == protowire.BytesType {
				v, n := protowire.ConsumeBytes(b)
				return v, n >= 0
			}
			return b, true
		}
		if n = protowire.ConsumeFieldValue(fn, ft, b); n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return nil, false
}
