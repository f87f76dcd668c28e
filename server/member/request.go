package member

import (
	"errors"
	"fmt"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/raft"
	"github.com/cairn-kv/cairn/server/auth"
	"github.com/cairn-kv/cairn/server/convert"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// errStoreFailed marks an apply error that is the store failing, not the
// request's own result.
type errStoreFailed struct{ err error }

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
func (m *Member) applyEntry(e raft.Entry) error {
	if e.Index <= m.eng.AppliedIndex() {
		return nil // applied before this restart; nobody waits
	}
	if len(e.Data) == 0 {
		_, err := m.eng.ApplyEmpty(e.Index)
		return err
	}
	if e.Type == raft.EntryConfChange {
		return m.applyConfChange(e)
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
	start := time.Now()
	resp, err := m.applyRequest(e.Index, auth.Caller{Name: hdr.GetUsername(), Rev: hdr.GetAuthRevision()}, req)
	took := time.Since(start)
	m.metrics.applyObserver(requestOp(req), err == nil).Observe(took.Seconds())
	if took > m.cfg.WarningApplyDuration {
		m.slowApply(took, req, resp, err)
	}
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
		w.ch <- applyResult{resp: resp, err: convert.Error(err)}
	}
	if storeFailed {
		return failed.err
	}
	return nil
}

// applyRequest applies one request, at an index not applied before. A
// refusal is returned as err; a store failure is an errStoreFailed.
func (m *Member) applyRequest(index uint64, c auth.Caller, req *pb.InternalRaftRequest) (proto.Message, error) {
	e := m.eng
	// refuse applies the entry as a no-op, so the index advances, with
	// err as the request's result.
	refuse := func(err error) (proto.Message, error) {
		if _, ferr := e.ApplyEmpty(index); ferr != nil {
			return nil, errStoreFailed{ferr}
		}
		return nil, err
	}
	if e.Alarmed(engine.AlarmCorrupt) && corruptRefuses(req) {
		// A member found corrupt stops the cluster's writes, as etcd's
		// corrupt applier does, until the alarm is disarmed.
		return refuse(rpctypes.ErrGRPCCorrupt)
	}
	switch {
	case req.Put != nil:
		if err := m.checkPutPermission(c, req.Put); err != nil {
			return refuse(err)
		}
		if e.Alarmed(engine.AlarmNoSpace) {
			return refuse(rpctypes.ErrGRPCNoSpace)
		}
		res, ok, err := e.Apply(index, &engine.TxnRequest{Success: []engine.Op{convert.PutOp(req.Put)}})
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		return convert.PutResponse(req.Put, res.Responses[0].PrevKV, m.Header(res.Rev)), nil
	case req.DeleteRange != nil:
		dr := req.DeleteRange
		if err := m.checkDeletePermission(c, dr); err != nil {
			return refuse(err)
		}
		res, ok, err := e.Apply(index, &engine.TxnRequest{Success: []engine.Op{{Type: engine.OpDelete, Key: dr.Key, End: convert.RangeEnd(dr.RangeEnd)}}})
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		return convert.DeleteResponse(dr, res.Responses[0].Deleted, m.Header(res.Rev)), nil
	case req.Txn != nil:
		if err := m.checkTxnPermission(c, req.Txn); err != nil {
			return refuse(err)
		}
		if e.Alarmed(engine.AlarmNoSpace) && txnWrites(req.Txn) {
			return refuse(rpctypes.ErrGRPCNoSpace)
		}
		res, ok, err := e.Apply(index, convert.TxnRequest(req.Txn))
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		return convert.TxnResponse(req.Txn, res, m.Header(res.Rev)), nil
	case req.Compaction != nil:
		// The index is compacted in the applier's housekeeping steps
		// (engine.Store.CompactStep), like the backend's deletions.
		if err := applied(e.ApplyCompact(index, req.Compaction.Revision)); err != nil {
			return nil, err
		}
		if req.Compaction.Physical {
			return nil, nil // answered once the deletions are done
		}
		return &pb.CompactionResponse{Header: m.Header(e.Rev())}, nil
	case req.LeaseGrant != nil:
		if e.Alarmed(engine.AlarmNoSpace) {
			return refuse(rpctypes.ErrGRPCNoSpace)
		}
		ttl, ok, err := e.ApplyLeaseGrant(index, req.LeaseGrant.ID, req.LeaseGrant.TTL)
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		m.metrics.leaseTTL.Observe(float64(ttl))
		return &pb.LeaseGrantResponse{Header: m.Header(e.Rev()), ID: req.LeaseGrant.ID, TTL: ttl}, nil
	case req.LeaseRevoke != nil:
		rev, ok, err := e.ApplyLeaseRevoke(index, req.LeaseRevoke.ID)
		if err := applied(ok, err); err != nil {
			return nil, err
		}
		return &pb.LeaseRevokeResponse{Header: m.Header(rev)}, nil
	case req.LeaseCheckpoint != nil:
		cps := make([]engine.LeaseCheckpoint, len(req.LeaseCheckpoint.Checkpoints))
		for i, cp := range req.LeaseCheckpoint.Checkpoints {
			cps[i] = engine.LeaseCheckpoint{ID: cp.ID, Remaining: cp.Remaining_TTL}
		}
		if err := applied(e.ApplyLeaseCheckpoint(index, cps)); err != nil {
			return nil, err
		}
		return &pb.LeaseCheckpointResponse{Header: m.Header(e.Rev())}, nil
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
		return &pb.DowngradeResponse{Header: m.Header(e.Rev()), Version: ClusterVersion}, nil
	case req.ClusterMemberAttrSet != nil:
		r := req.ClusterMemberAttrSet
		err := applied(e.ApplyChange(index, func() error {
			return e.SetMemberAttributes(r.Member_ID, r.MemberAttributes.GetName(), r.MemberAttributes.GetClientUrls())
		}))
		if err != nil {
			return nil, err
		}
		return &pb.MemberListResponse{Header: m.Header(e.Rev())}, nil
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

func (m *Member) applyAlarm(index uint64, r *pb.AlarmRequest) (proto.Message, error) {
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
	resp.Header = m.Header(e.Rev())
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

// slowApply says an entry's apply took longer than
// --experimental-warning-apply-duration, as etcd says it, and counts it.
func (m *Member) slowApply(took time.Duration, req *pb.InternalRaftRequest, resp proto.Message, err error) {
	m.metrics.slowApplies.Inc()
	response := ""
	if resp != nil {
		response = fmt.Sprintf("size:%d", proto.Size(resp))
	}
	m.log.Warn("apply request took too long", "took", took.String(), "expected-duration", m.cfg.WarningApplyDuration.String(),
		"prefix", "", "request", requestSummary(req), "response", response, "error", errString(err))
}

// requestSummary is an entry's request for a log line: its kind and key,
// not its value.
func requestSummary(req *pb.InternalRaftRequest) string {
	h := req.GetHeader()
	switch {
	case req.Put != nil:
		return fmt.Sprintf("header:<ID:%d > put:<key:%q value_size:%d lease:%d >", h.GetID(), req.Put.Key, len(req.Put.Value), req.Put.Lease)
	case req.DeleteRange != nil:
		return fmt.Sprintf("header:<ID:%d > delete_range:<key:%q range_end:%q >", h.GetID(), req.DeleteRange.Key, req.DeleteRange.RangeEnd)
	case req.Txn != nil:
		return fmt.Sprintf("header:<ID:%d > txn:<compare:%d success:%d failure:%d >", h.GetID(), len(req.Txn.Compare), len(req.Txn.Success), len(req.Txn.Failure))
	case req.Compaction != nil:
		return fmt.Sprintf("header:<ID:%d > compaction:<revision:%d physical:%v >", h.GetID(), req.Compaction.Revision, req.Compaction.Physical)
	}
	return fmt.Sprintf("header:<ID:%d > size:%d", h.GetID(), proto.Size(req))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// corruptRefuses reports whether the CORRUPT alarm refuses req (etcd's
// corrupt applier: the writes, compaction, lease grants and revocations).
func corruptRefuses(req *pb.InternalRaftRequest) bool {
	return req.Put != nil || req.DeleteRange != nil || req.Txn != nil || req.Compaction != nil ||
		req.LeaseGrant != nil || req.LeaseRevoke != nil
}

// requestOp is an entry's operation as etcd's apply metric names it.
func requestOp(req *pb.InternalRaftRequest) string {
	switch {
	case req.Put != nil:
		return "Put"
	case req.DeleteRange != nil:
		return "DeleteRange"
	case req.Txn != nil:
		return "Txn"
	case req.Compaction != nil:
		return "Compaction"
	case req.LeaseGrant != nil:
		return "LeaseGrant"
	case req.LeaseRevoke != nil:
		return "LeaseRevoke"
	case req.LeaseCheckpoint != nil:
		return "LeaseCheckpoint"
	case req.Alarm != nil:
		return "Alarm"
	case req.ClusterMemberAttrSet != nil:
		return "ClusterMemberAttrSet"
	case req.DowngradeInfoSet != nil:
		return "DowngradeInfoSet"
	case req.AuthEnable != nil:
		return "AuthEnable"
	case req.AuthDisable != nil:
		return "AuthDisable"
	}
	return "Auth"
}
