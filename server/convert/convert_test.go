package convert

import (
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-kv/cairn/engine"
)

// TestTxnResponseHeaders: the outer header is the member's; each response
// inside carries the revision alone, as etcd 3.5's do: a range before any
// write the revision before the transaction, one after a write the
// transaction's; a put the transaction's; a delete that deleted nothing
// before any write the one before; a nested transaction an empty header.
func TestTxnResponseHeaders(t *testing.T) {
	rng := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(k)}}}
	}
	put := &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k")}}}
	del := &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("none")}}}
	nested := &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: []*pb.RequestOp{rng("n")}}}}
	req := &pb.TxnRequest{Success: []*pb.RequestOp{rng("a"), del, put, rng("b"), nested}}
	res := &engine.TxnResponse{Succeeded: true, Rev: 8, Responses: []engine.OpResponse{
		{Range: &engine.RangeResult{}}, {}, {}, {Range: &engine.RangeResult{}},
		{Txn: &engine.TxnResponse{Succeeded: true, Rev: 8, Responses: []engine.OpResponse{{Range: &engine.RangeResult{}}}}},
	}}
	h := &pb.ResponseHeader{ClusterId: 1, MemberId: 2, RaftTerm: 3, Revision: 8}
	out := TxnResponse(req, res, h)
	require.Same(t, h, out.Header)
	require.Equal(t, &pb.ResponseHeader{Revision: 7}, out.Responses[0].GetResponseRange().Header)
	require.Equal(t, &pb.ResponseHeader{Revision: 7}, out.Responses[1].GetResponseDeleteRange().Header)
	require.Equal(t, &pb.ResponseHeader{Revision: 8}, out.Responses[2].GetResponsePut().Header)
	require.Equal(t, &pb.ResponseHeader{Revision: 8}, out.Responses[3].GetResponseRange().Header)
	inner := out.Responses[4].GetResponseTxn()
	require.Equal(t, &pb.ResponseHeader{}, inner.Header)
	require.Equal(t, &pb.ResponseHeader{Revision: 8}, inner.Responses[0].GetResponseRange().Header)

	// A transaction that writes nothing: every revision is the current one.
	ro := &pb.TxnRequest{Success: []*pb.RequestOp{rng("a"), del}}
	out = TxnResponse(ro, &engine.TxnResponse{Succeeded: true, Rev: 5, Responses: []engine.OpResponse{{Range: &engine.RangeResult{}}, {}}}, h)
	require.Equal(t, int64(5), out.Responses[0].GetResponseRange().Header.Revision)
	require.Equal(t, int64(5), out.Responses[1].GetResponseDeleteRange().Header.Revision)
}
