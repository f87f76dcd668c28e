// Package convert turns etcd's wire types into the engine's and back, and
// the engine's errors into etcd's gRPC errors. Both the member (applying
// entries) and the gRPC services (reads) use it.
package convert

import (
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cairn-kv/cairn/engine"
)

// RangeOptions are a range request's options as the engine takes them.
func RangeOptions(r *pb.RangeRequest) engine.RangeOptions {
	return engine.RangeOptions{
		Rev:          r.Revision,
		Limit:        int(r.Limit),
		CountOnly:    r.CountOnly,
		KeysOnly:     r.KeysOnly,
		SortOrder:    engine.SortOrder(r.SortOrder),
		SortTarget:   engine.SortTarget(r.SortTarget),
		MinModRev:    r.MinModRevision,
		MaxModRev:    r.MaxModRevision,
		MinCreateRev: r.MinCreateRevision,
		MaxCreateRev: r.MaxCreateRevision,
	}
}

// RangeEnd is etcd's range_end as the engine takes it: nil for the key
// alone (an empty range_end), the same bytes otherwise ("\x00": every key
// from the key).
func RangeEnd(end []byte) []byte {
	if len(end) == 0 {
		return nil
	}
	return end
}

// TxnRequest is a transaction as the engine takes it.
func TxnRequest(r *pb.TxnRequest) *engine.TxnRequest {
	t := &engine.TxnRequest{
		Compare: make([]engine.Compare, 0, len(r.Compare)),
		Success: ops(r.Success),
		Failure: ops(r.Failure),
	}
	for _, c := range r.Compare {
		ec := engine.Compare{
			Key:      c.Key,
			RangeEnd: RangeEnd(c.RangeEnd),
			Result:   compareResult(c.Result),
		}
		switch c.Target {
		case pb.Compare_VERSION:
			ec.Target, ec.Version = engine.CompareVersion, c.GetVersion()
		case pb.Compare_CREATE:
			ec.Target, ec.CreateRevision = engine.CompareCreate, c.GetCreateRevision()
		case pb.Compare_MOD:
			ec.Target, ec.ModRevision = engine.CompareMod, c.GetModRevision()
		case pb.Compare_VALUE:
			ec.Target, ec.Value = engine.CompareValue, c.GetValue()
		case pb.Compare_LEASE:
			ec.Target, ec.Lease = engine.CompareLease, c.GetLease()
		}
		t.Compare = append(t.Compare, ec)
	}
	return t
}

func compareResult(r pb.Compare_CompareResult) engine.CompareResult {
	switch r {
	case pb.Compare_GREATER:
		return engine.CompareGreater
	case pb.Compare_LESS:
		return engine.CompareLess
	case pb.Compare_NOT_EQUAL:
		return engine.CompareNotEqual
	}
	return engine.CompareEqual
}

func ops(reqs []*pb.RequestOp) []engine.Op {
	out := make([]engine.Op, 0, len(reqs))
	for _, ro := range reqs {
		switch r := ro.Request.(type) {
		case *pb.RequestOp_RequestRange:
			rr := r.RequestRange
			out = append(out, engine.Op{Type: engine.OpRange, Key: rr.Key, End: RangeEnd(rr.RangeEnd), Range: RangeOptions(rr)})
		case *pb.RequestOp_RequestPut:
			out = append(out, PutOp(r.RequestPut))
		case *pb.RequestOp_RequestDeleteRange:
			dr := r.RequestDeleteRange
			out = append(out, engine.Op{Type: engine.OpDelete, Key: dr.Key, End: RangeEnd(dr.RangeEnd)})
		case *pb.RequestOp_RequestTxn:
			out = append(out, engine.Op{Type: engine.OpTxn, Txn: TxnRequest(r.RequestTxn)})
		}
	}
	return out
}

// PutOp is a put as an engine operation.
func PutOp(p *pb.PutRequest) engine.Op {
	return engine.Op{Type: engine.OpPut, Key: p.Key, Value: p.Value, Lease: p.Lease,
		IgnoreValue: p.IgnoreValue, IgnoreLease: p.IgnoreLease}
}

// KeyValue and KeyValues are engine pairs on etcd's wire.
func KeyValue(kv *engine.KeyValue) *mvccpb.KeyValue {
	if kv == nil {
		return nil
	}
	return &mvccpb.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision,
		Version: kv.Version, Value: kv.Value, Lease: kv.Lease}
}

func KeyValues(kvs []engine.KeyValue) []*mvccpb.KeyValue {
	out := make([]*mvccpb.KeyValue, len(kvs))
	for i := range kvs {
		out[i] = KeyValue(&kvs[i])
	}
	return out
}

// RangeResponse, PutResponse and DeleteResponse are etcd's answers
// built from the engine's.
func RangeResponse(res *engine.RangeResult, h *pb.ResponseHeader) *pb.RangeResponse {
	return &pb.RangeResponse{Header: h, Kvs: KeyValues(res.KVs), More: res.More, Count: int64(res.Count)}
}

// TxnResponse builds etcd's answer from the engine's. Only the outer
// header is h; as in etcd, a response inside carries a header with the
// revision alone: a range the revision it read (the one before the
// transaction, or its own once something in it was written), a put the
// transaction's, a delete the transaction's once something was written
// (the one before otherwise), and a nested transaction an empty header.
// req is the request: it says which kind each response is and whether a
// put or delete asked for prev_kv.
func TxnResponse(req *pb.TxnRequest, res *engine.TxnResponse, h *pb.ResponseHeader) *pb.TxnResponse {
	begin := res.Rev
	if txnWrote(req, res) {
		begin--
	}
	out := txnResponse(req, res, &innerHeaders{begin: begin})
	out.Header = h
	return out
}

// innerHeaders are the headers of the responses inside a transaction: the
// revision before it until something in it is written, the transaction's
// after; each is made once and shared.
type innerHeaders struct {
	begin         int64
	changed       bool // something was written by an earlier operation
	before, after *pb.ResponseHeader
}

func (ih *innerHeaders) current() *pb.ResponseHeader {
	if ih.changed {
		if ih.after == nil {
			ih.after = &pb.ResponseHeader{Revision: ih.begin + 1}
		}
		return ih.after
	}
	if ih.before == nil {
		ih.before = &pb.ResponseHeader{Revision: ih.begin}
	}
	return ih.before
}

// txnWrote reports whether the path a transaction took wrote anything.
func txnWrote(req *pb.TxnRequest, res *engine.TxnResponse) bool {
	reqs := req.Success
	if !res.Succeeded {
		reqs = req.Failure
	}
	for i := range res.Responses {
		r := &res.Responses[i]
		switch q := reqs[i].Request.(type) {
		case *pb.RequestOp_RequestPut:
			return true
		case *pb.RequestOp_RequestDeleteRange:
			if len(r.Deleted) > 0 {
				return true
			}
		case *pb.RequestOp_RequestTxn:
			if txnWrote(q.RequestTxn, r.Txn) {
				return true
			}
		}
	}
	return false
}

// txnResponse builds a transaction's responses in the order they ran.
func txnResponse(req *pb.TxnRequest, res *engine.TxnResponse, ih *innerHeaders) *pb.TxnResponse {
	out := &pb.TxnResponse{Header: &pb.ResponseHeader{}, Succeeded: res.Succeeded, Responses: make([]*pb.ResponseOp, 0, len(res.Responses))}
	reqs := req.Success
	if !res.Succeeded {
		reqs = req.Failure
	}
	for i := range res.Responses {
		out.Responses = append(out.Responses, responseOp(reqs[i], &res.Responses[i], ih))
	}
	return out
}

func responseOp(req *pb.RequestOp, r *engine.OpResponse, ih *innerHeaders) *pb.ResponseOp {
	switch q := req.Request.(type) {
	case *pb.RequestOp_RequestRange:
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: RangeResponse(r.Range, ih.current())}}
	case *pb.RequestOp_RequestPut:
		ih.changed = true
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: PutResponse(q.RequestPut, r.PrevKV, ih.current())}}
	case *pb.RequestOp_RequestDeleteRange:
		if len(r.Deleted) > 0 {
			ih.changed = true
		}
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: DeleteResponse(q.RequestDeleteRange, r.Deleted, ih.current())}}
	case *pb.RequestOp_RequestTxn:
		return &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: txnResponse(q.RequestTxn, r.Txn, ih)}}
	}
	return &pb.ResponseOp{}
}

func PutResponse(req *pb.PutRequest, prev *engine.KeyValue, h *pb.ResponseHeader) *pb.PutResponse {
	resp := &pb.PutResponse{Header: h}
	if req.PrevKv {
		resp.PrevKv = KeyValue(prev)
	}
	return resp
}

func DeleteResponse(req *pb.DeleteRangeRequest, deleted []engine.KeyValue, h *pb.ResponseHeader) *pb.DeleteRangeResponse {
	resp := &pb.DeleteRangeResponse{Header: h, Deleted: int64(len(deleted))}
	if req.PrevKv {
		resp.PrevKvs = KeyValues(deleted)
	}
	return resp
}

// Error is the gRPC error etcd returns for an engine error; errors it
// does not know go out as they are.
func Error(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range []struct {
		engine error
		grpc   error
	}{
		{engine.ErrEmptyKey, rpctypes.ErrGRPCEmptyKey},
		{engine.ErrKeyNotFound, rpctypes.ErrGRPCKeyNotFound},
		{engine.ErrDuplicateKey, rpctypes.ErrGRPCDuplicateKey},
		{engine.ErrCompacted, rpctypes.ErrGRPCCompacted},
		{engine.ErrFutureRev, rpctypes.ErrGRPCFutureRev},
		{engine.ErrLeaseNotFound, rpctypes.ErrGRPCLeaseNotFound},
		{engine.ErrLeaseExists, rpctypes.ErrGRPCLeaseExist},
		{engine.ErrLeaseTTLTooLarge, rpctypes.ErrGRPCLeaseTTLTooLarge},
		{engine.ErrMemberExist, rpctypes.ErrGRPCMemberExist},
		{engine.ErrPeerURLExist, rpctypes.ErrGRPCPeerURLExist},
		{engine.ErrMemberNotFound, rpctypes.ErrGRPCMemberNotFound},
		{engine.ErrMemberNotLearner, rpctypes.ErrGRPCMemberNotLearner},
		{engine.ErrTooManyLearners, rpctypes.ErrGRPCTooManyLearners},
		{engine.ErrRootUserNotExist, rpctypes.ErrGRPCRootUserNotExist},
		{engine.ErrRootRoleNotExist, rpctypes.ErrGRPCRootRoleNotExist},
		{engine.ErrUserAlreadyExist, rpctypes.ErrGRPCUserAlreadyExist},
		{engine.ErrUserEmpty, rpctypes.ErrGRPCUserEmpty},
		{engine.ErrUserNotFound, rpctypes.ErrGRPCUserNotFound},
		{engine.ErrRoleAlreadyExist, rpctypes.ErrGRPCRoleAlreadyExist},
		{engine.ErrRoleNotFound, rpctypes.ErrGRPCRoleNotFound},
		{engine.ErrRoleEmpty, rpctypes.ErrGRPCRoleEmpty},
		{engine.ErrPermissionNotGiven, rpctypes.ErrGRPCPermissionNotGiven},
		{engine.ErrAuthFailed, rpctypes.ErrGRPCAuthFailed},
		{engine.ErrNoPasswordUser, rpctypes.ErrGRPCAuthFailed},
		{engine.ErrPermissionDenied, rpctypes.ErrGRPCPermissionDenied},
		{engine.ErrRoleNotGranted, rpctypes.ErrGRPCRoleNotGranted},
		{engine.ErrPermissionNotGranted, rpctypes.ErrGRPCPermissionNotGranted},
		{engine.ErrAuthNotEnabled, rpctypes.ErrGRPCAuthNotEnabled},
		{engine.ErrAuthOldRevision, rpctypes.ErrGRPCAuthOldRevision},
		{engine.ErrInvalidAuthMgmt, rpctypes.ErrGRPCInvalidAuthMgmt},
	} {
		if errors.Is(err, e.engine) {
			return e.grpc
		}
	}
	return err
}
