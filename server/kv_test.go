package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
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
// leader, and refused with etcd's "no leader" (codes.Unavailable) when it
// knows none; without the metadata it is not refused.
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

	// The check itself, on a member that knows no leader.
	m := &member{}
	required := metadata.NewIncomingContext(context.Background(), metadata.Pairs(rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader))
	if err := m.requireLeader(required); err != rpctypes.ErrGRPCNoLeader {
		t.Fatalf("no leader, leader required: %v", err)
	}
	if s, _ := status.FromError(rpctypes.ErrGRPCNoLeader); s.Code() != codes.Unavailable || s.Message() != "etcdserver: no leader" {
		t.Fatalf("no leader is %v", s)
	}
	plain := metadata.NewIncomingContext(context.Background(), metadata.Pairs("token", "x"))
	for _, ctx := range []context.Context{context.Background(), plain} {
		if err := m.requireLeader(ctx); err != nil {
			t.Fatalf("no leader, none required: %v", err)
		}
	}
	m.lead.Store(1)
	if err := m.requireLeader(required); err != nil {
		t.Fatalf("a leader, leader required: %v", err)
	}
}

// Proposals and ReadIndex reads still waiting at their deadline are answered
// with etcd's "request timed out" (codes.Unavailable, which clientv3 does not
// resend for a put), counted as failed proposals; a timed-out proposal's
// entry may still apply.
func TestRequestTimeout(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	if _, err := c.Put(ctx, "warm", "v"); err != nil {
		t.Fatal(err)
	}
	m := s.m
	failed := counterValue(m.metrics.proposalsFailed)

	// With the raft lock held, the first put waits for it and the second
	// waits for the first.
	m.raftMu.Lock()
	errs := make(chan error, 2)
	for i, k := range []string{"a", "b"} {
		go func() {
			_, err := c.Put(ctx, k, "v")
			errs <- err
		}()
		if !eventually(func() bool { return m.pending() == i+1 }) {
			m.raftMu.Unlock()
			t.Fatalf("%d proposals waiting, want %d", m.pending(), i+1)
		}
	}
	m.expireProposals(time.Now()) // before the deadline: nothing happens
	if n := m.pending(); n != 2 {
		m.raftMu.Unlock()
		t.Fatalf("%d proposals waiting after an early expiry, want 2", n)
	}
	m.expireProposals(time.Now().Add(requestTimeout + time.Second))

	// A read waiting for its ReadIndex past its deadline.
	read := &readRound{done: make(chan struct{}), deadline: time.Now().Add(-time.Second)}
	m.reads[[8]byte{0xff}] = read
	m.expireReads(time.Now())
	m.raftMu.Unlock()
	if <-read.done; read.err != rpctypes.ErrGRPCTimeout {
		t.Fatalf("expired read: %v", read.err)
	}

	for range 2 {
		if err := <-errs; err == nil || err.Error() != rpctypes.ErrTimeout.Error() {
			t.Fatalf("expired put: %v, want %v", err, rpctypes.ErrTimeout)
		}
	}
	if st, _ := status.FromError(rpctypes.ErrGRPCTimeout); st.Code() != codes.Unavailable {
		t.Fatalf("timeout is %v", st.Code())
	}
	if got := counterValue(m.metrics.proposalsFailed) - failed; got != 2 {
		t.Fatalf("%v proposals counted failed, want 2", got)
	}
	// The entries were proposed all the same, and applied.
	for _, k := range []string{"a", "b"} {
		if resp, err := c.Get(ctx, k); err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s after its put timed out: %v %v", k, resp, err)
		}
	}
	if _, err := c.Put(ctx, "after", "v"); err != nil {
		t.Fatalf("put after the timeouts: %v", err)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}

// Linearizable reads that arrive while a ReadIndex is under way share the
// next one, as etcd's do: ten reads held behind the raft lock take at most
// two rounds (the first read's, if the driver took it alone, and the
// rest's), and each sees the latest write.
func TestReadsShareReadIndex(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	m := s.m
	joins0 := readJoins(m)
	m.raftMu.Lock()
	seq0 := m.readSeq
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() {
			resp, err := c.Get(ctx, "k")
			if err == nil && (len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v") {
				err = fmt.Errorf("read %v", resp.Kvs)
			}
			errs <- err
		}()
	}
	waitReadsJoined(t, m, joins0+n)
	m.raftMu.Unlock()
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	m.raftMu.Lock()
	rounds := m.readSeq - seq0
	m.raftMu.Unlock()
	if rounds < 1 || rounds > 2 {
		t.Fatalf("%d reads took %d ReadIndex rounds, want 1 or 2", n, rounds)
	}
}

// TestReadsEndAtStop: linearizable reads waiting for their round when the
// member stops are answered (served, or "server stopped"), and a read
// after the stop is refused at once.
func TestReadsEndAtStop(t *testing.T) {
	s, _, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	m := s.m
	ctx := ctxT(t)
	joins0 := readJoins(m)
	m.raftMu.Lock()
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() { errs <- m.linearizableRead(ctx) }()
	}
	waitReadsJoined(t, m, joins0+n)
	stopped := make(chan struct{})
	go func() { s.Stop(); close(stopped) }()
	<-m.stopping
	m.raftMu.Unlock()
	for range n {
		if err := <-errs; err != nil && !errors.Is(err, rpctypes.ErrGRPCStopped) {
			t.Fatalf("read in flight at stop: %v, want success or %v", err, rpctypes.ErrGRPCStopped)
		}
	}
	<-stopped
	if err := m.linearizableRead(ctx); !errors.Is(err, rpctypes.ErrGRPCStopped) {
		t.Fatalf("read after stop: %v, want %v", err, rpctypes.ErrGRPCStopped)
	}
}

func readJoins(m *member) uint64 {
	m.readMu.Lock()
	defer m.readMu.Unlock()
	return m.readJoins
}

// waitReadsJoined waits, with raftMu held, until the member's reads have
// joined a round want times in all; it releases raftMu before failing.
func waitReadsJoined(t *testing.T, m *member, want uint64) {
	t.Helper()
	if !eventually(func() bool { return readJoins(m) == want }) {
		m.raftMu.Unlock()
		t.Fatalf("reads joined a round %d times, want %d", readJoins(m), want)
	}
}
