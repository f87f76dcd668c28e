package server

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestKVThroughClient drives every KV RPC through etcd's client: puts,
// gets with options, prev_kv, deletes, transactions with every compare
// target, compaction, and the header each response carries.
func TestKVThroughClient(t *testing.T) {
	_, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	kv := c.KV
	var last int64
	for i := 0; i < 10; i++ {
		resp, err := kv.Put(ctx, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
		if err != nil {
			t.Fatal(err)
		}
		if resp.Header.Revision <= last || resp.Header.MemberId == 0 || resp.Header.ClusterId == 0 || resp.Header.RaftTerm == 0 {
			t.Fatalf("put %d: header %+v after revision %d", i, resp.Header, last)
		}
		last = resp.Header.Revision
	}
	get, err := kv.Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithLimit(3), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		t.Fatal(err)
	}
	if get.Count != 10 || !get.More || len(get.Kvs) != 3 || string(get.Kvs[0].Key) != "k9" || get.Header.Revision != last {
		t.Fatalf("get: count %d more %v kvs %v rev %d (want %d)", get.Count, get.More, get.Kvs, get.Header.Revision, last)
	}
	ser, err := kv.Get(ctx, "k3", clientv3.WithSerializable())
	if err != nil || len(ser.Kvs) != 1 || string(ser.Kvs[0].Value) != "v3" {
		t.Fatalf("serializable get: %v %v", ser, err)
	}
	put, err := kv.Put(ctx, "k3", "v3b", clientv3.WithPrevKV())
	if err != nil || put.PrevKv == nil || string(put.PrevKv.Value) != "v3" {
		t.Fatalf("put with prev_kv: %+v %v", put, err)
	}
	again, err := kv.Get(ctx, "k3")
	if err != nil || again.Kvs[0].Version != 2 || string(again.Kvs[0].Value) != "v3b" {
		t.Fatalf("after overwrite: %+v %v", again, err)
	}
	del, err := kv.Delete(ctx, "k8", clientv3.WithFromKey(), clientv3.WithPrevKV())
	if err != nil || del.Deleted != 2 || len(del.PrevKvs) != 2 {
		t.Fatalf("delete from k8: %+v %v", del, err)
	}
	txn, err := kv.Txn(ctx).
		If(clientv3.Compare(clientv3.Version("k3"), "=", 2), clientv3.Compare(clientv3.Value("k1"), "=", "v1"),
			clientv3.Compare(clientv3.CreateRevision("k0"), "<", last), clientv3.Compare(clientv3.ModRevision("k2"), ">", 0),
			clientv3.Compare(clientv3.LeaseValue("k2"), "=", 0)).
		Then(clientv3.OpPut("t1", "yes"), clientv3.OpGet("k", clientv3.WithPrefix(), clientv3.WithCountOnly()),
			clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpDelete("k0")}, nil)).
		Else(clientv3.OpPut("t1", "no")).Commit()
	if err != nil || !txn.Succeeded || len(txn.Responses) != 3 {
		t.Fatalf("txn: %+v %v", txn, err)
	}
	if n := txn.Responses[1].GetResponseRange().Count; n != 8 {
		t.Fatalf("txn range counted %d keys, want 8", n)
	}
	if d := txn.Responses[2].GetResponseTxn().Responses[0].GetResponseDeleteRange().Deleted; d != 1 {
		t.Fatalf("nested txn deleted %d", d)
	}
	failed, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.Value("t1"), "=", "no")).Then(clientv3.OpPut("t2", "x")).Else(clientv3.OpGet("t1")).Commit()
	if err != nil || failed.Succeeded || string(failed.Responses[0].GetResponseRange().Kvs[0].Value) != "yes" {
		t.Fatalf("failing txn: %+v %v", failed, err)
	}
	cur, err := kv.Get(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Compact(ctx, cur.Header.Revision-2, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "k1", clientv3.WithRev(cur.Header.Revision-3)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Fatalf("read below the compaction: %v", err)
	}
	if _, err := kv.Get(ctx, "k1", clientv3.WithRev(cur.Header.Revision-2)); err != nil {
		t.Fatalf("read at the compaction: %v", err)
	}
}

// TestKVErrors: every refusal comes back with etcd's gRPC code and
// message (checked on a raw gRPC client: etcd's client maps errors by
// message alone), and the member goes on serving.
func TestKVErrors(t *testing.T) {
	_, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	raw := pb.NewKVClient(c.ActiveConnection())
	if _, err := c.Put(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}
	put := func(r *pb.PutRequest) func() error {
		return func() error { _, err := raw.Put(ctx, r); return err }
	}
	txn := func(r *pb.TxnRequest) func() error {
		return func() error { _, err := raw.Txn(ctx, r); return err }
	}
	opPut := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
	}
	many := &pb.TxnRequest{}
	for i := 0; i < 129; i++ {
		many.Success = append(many.Success, opPut(fmt.Sprint(i)))
	}
	for _, tc := range []struct {
		name string
		do   func() error
		want error
	}{
		{"put of an empty key", put(&pb.PutRequest{Value: []byte("v")}), rpctypes.ErrGRPCEmptyKey},
		{"get of an empty key", func() error { _, err := raw.Range(ctx, &pb.RangeRequest{}); return err }, rpctypes.ErrGRPCEmptyKey},
		{"delete of an empty key", func() error { _, err := raw.DeleteRange(ctx, &pb.DeleteRangeRequest{}); return err }, rpctypes.ErrGRPCEmptyKey},
		{"bad sort order", func() error {
			_, err := raw.Range(ctx, &pb.RangeRequest{Key: []byte("a"), SortOrder: 9})
			return err
		}, rpctypes.ErrGRPCInvalidSortOption},
		{"future revision", func() error { _, err := raw.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 1000}); return err }, rpctypes.ErrGRPCFutureRev},
		{"compact to a future revision", func() error { _, err := raw.Compact(ctx, &pb.CompactionRequest{Revision: 1000}); return err }, rpctypes.ErrGRPCFutureRev},
		{"duplicate key in a txn", txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("d"), opPut("d")}}), rpctypes.ErrGRPCDuplicateKey},
		{"empty key in a txn", txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut("")}}), rpctypes.ErrGRPCEmptyKey},
		{"too many txn ops", txn(many), rpctypes.ErrGRPCTooManyOps},
		{"put naming no lease", put(&pb.PutRequest{Key: []byte("b"), Lease: 77}), rpctypes.ErrGRPCLeaseNotFound},
		{"ignore_value with a value", put(&pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true}), rpctypes.ErrGRPCValueProvided},
		{"ignore_lease with a lease", put(&pb.PutRequest{Key: []byte("a"), Lease: 5, IgnoreLease: true}), rpctypes.ErrGRPCLeaseProvided},
		{"ignore_value on a missing key", put(&pb.PutRequest{Key: []byte("nope"), IgnoreValue: true}), rpctypes.ErrGRPCKeyNotFound},
		{"request too large", put(&pb.PutRequest{Key: []byte("big"), Value: make([]byte, 1600*1024)}), rpctypes.ErrGRPCRequestTooLarge},
	} {
		err := tc.do()
		want := status.Convert(tc.want)
		got, ok := status.FromError(err)
		if !ok || got.Code() != want.Code() || got.Message() != want.Message() {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Past the gRPC limit the transport refuses it, as etcd's does.
	if _, err := raw.Put(ctx, &pb.PutRequest{Key: []byte("big"), Value: make([]byte, 2*1024*1024)}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 2 MiB put: %v", err)
	}
	// Still serving, nothing lost, no revision spent on the refusals.
	resp, err := c.Get(ctx, "a")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "1" || resp.Header.Revision != 2 {
		t.Fatalf("after the refusals: %+v %v", resp, err)
	}
}

// TestRestartKeepsData: what was acknowledged is there after a restart,
// and revisions go on from where they were.
func TestRestartKeepsData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, c, stop := startMember(t, dir)
	ctx := ctxT(t)
	var rev int64
	for i := 0; i < 50; i++ {
		resp, err := c.Put(ctx, fmt.Sprintf("r%02d", i), fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	stop()
	_, c, _ = startMember(t, dir)
	resp, err := c.Get(ctx, "r", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 50 || resp.Header.Revision != rev {
		t.Fatalf("after restart: %d keys at revision %d, want 50 at %d", len(resp.Kvs), resp.Header.Revision, rev)
	}
	put, err := c.Put(ctx, "after", "x")
	if err != nil || put.Header.Revision != rev+1 {
		t.Fatalf("put after restart: %+v %v", put, err)
	}
}

// A call with clientv3.WithRequireLeader is served while the member has a
// leader: a put and a watch (v3rpc's TestRequireLeader checks the refusal).
func TestRequireLeader(t *testing.T) {
	_, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := clientv3.WithRequireLeader(ctxT(t))
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put requiring a leader, with one: %v", err)
	}
	wch := c.Watch(ctx, "k")
	if _, err := c.Put(ctxT(t), "k", "v2"); err != nil {
		t.Fatal(err)
	}
	if resp := <-wch; resp.Err() != nil || len(resp.Events) != 1 {
		t.Fatalf("watch requiring a leader: %v, %d events", resp.Err(), len(resp.Events))
	}
}
