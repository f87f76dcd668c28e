package v3rpc

import (
	"context"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/server/convert"
	"github.com/cairn-kv/cairn/server/member"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// kvServer is etcd's KV service.
type kvServer struct {
	pb.UnimplementedKVServer
	m *member.Member
}

func (s *kvServer) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	c, err := s.m.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if !r.Serializable {
		if err := s.m.LinearizableRead(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.m.CheckPermission(c, r.Key, convert.RangeEnd(r.RangeEnd), false); err != nil {
		return nil, err
	}
	res, err := s.m.Engine().Range(r.Key, convert.RangeEnd(r.RangeEnd), convert.RangeOptions(r))
	if err != nil {
		return nil, convert.Error(err)
	}
	resp := convert.RangeResponse(res, s.m.Header(res.Rev))
	if len(resp.Kvs) > 0 && failpoint.Hit("v3rpc/canaryWrongVersion") != nil {
		// The canary: one key's version is wrong, on purpose, once.
		failpoint.Disable("v3rpc/canaryWrongVersion")
		resp.Kvs[0].Version++
	}
	return resp, nil
}

func (s *kvServer) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(r); err != nil {
		return nil, err
	}
	if err := s.m.CheckQuota(ctx, putCost(r)); err != nil {
		return nil, err
	}
	return proposeFor[*pb.PutResponse](ctx, s.m, &pb.InternalRaftRequest{Put: r})
}

func (s *kvServer) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if len(r.Key) == 0 {
		return nil, rpctypes.ErrGRPCEmptyKey
	}
	return proposeFor[*pb.DeleteRangeResponse](ctx, s.m, &pb.InternalRaftRequest{DeleteRange: r})
}

func (s *kvServer) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkTxn(r, s.m.Config().MaxTxnOps); err != nil {
		return nil, err
	}
	if err := s.m.CheckQuota(ctx, txnCost(r)); err != nil {
		return nil, err
	}
	return proposeFor[*pb.TxnResponse](ctx, s.m, &pb.InternalRaftRequest{Txn: r})
}

func (s *kvServer) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	// With auth on, compacting takes the root role (as in etcd).
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	return proposeFor[*pb.CompactionResponse](ctx, s.m, &pb.InternalRaftRequest{Compaction: r})
}

// proposeFor proposes req and returns the response its apply gave, as the
// handler's response type.
func proposeFor[T any](ctx context.Context, m *member.Member, req *pb.InternalRaftRequest) (T, error) {
	resp, err := m.Propose(ctx, req)
	if err != nil {
		var zero T
		return zero, err
	}
	return resp.(T), nil
}

// The checks etcd makes before a request reaches raft.

func checkRange(r *pb.RangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

func checkPut(r *pb.PutRequest) error {
	switch {
	case len(r.Key) == 0:
		return rpctypes.ErrGRPCEmptyKey
	case r.IgnoreValue && len(r.Value) != 0:
		return rpctypes.ErrGRPCValueProvided
	case r.IgnoreLease && r.Lease != 0:
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

func checkTxn(r *pb.TxnRequest, maxOps int) error {
	if len(r.Compare) > maxOps || len(r.Success) > maxOps || len(r.Failure) > maxOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			var err error
			switch q := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				err = checkRange(q.RequestRange)
			case *pb.RequestOp_RequestPut:
				err = checkPut(q.RequestPut)
			case *pb.RequestOp_RequestDeleteRange:
				if len(q.RequestDeleteRange.Key) == 0 {
					err = rpctypes.ErrGRPCEmptyKey
				}
			case *pb.RequestOp_RequestTxn:
				err = checkTxn(q.RequestTxn, maxOps)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// Quota, as etcd charges it: a put costs its key and value and 256 bytes;
// a transaction its puts.
const kvOverhead = 256

func putCost(r *pb.PutRequest) int64 { return int64(kvOverhead + len(r.Key) + len(r.Value)) }

func txnCost(r *pb.TxnRequest) int64 {
	var n int64
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch q := op.Request.(type) {
			case *pb.RequestOp_RequestPut:
				n += putCost(q.RequestPut)
			case *pb.RequestOp_RequestTxn:
				n += txnCost(q.RequestTxn)
			}
		}
	}
	return n
}
