package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// nextWatch returns the next response on ch, failing the test if none
// comes in 10 s.
func nextWatch(t *testing.T, ch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no watch response in 10 s")
	}
	return clientv3.WatchResponse{}
}

// TestWatchThroughClient: events as they happen and from history, with
// prev_kv and filters; a watch from a compacted revision is cancelled with
// the compacted revision; cancel and progress.
func TestWatchThroughClient(t *testing.T) {
	_, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	first, err := c.Put(ctx, "w/a", "1")
	if err != nil {
		t.Fatal(err)
	}
	live := c.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	if r := nextWatch(t, live); !r.Created {
		t.Fatalf("first response not created: %+v", r)
	}
	noDel := c.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithFilterDelete())
	if _, err := c.Put(ctx, "w/a", "2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Txn(ctx).Then(clientv3.OpPut("w/b", "1"), clientv3.OpPut("other", "x"), clientv3.OpDelete("w/a")).Commit(); err != nil {
		t.Fatal(err)
	}
	r := nextWatch(t, live)
	if len(r.Events) != 1 || r.Events[0].Type != mvccpb.PUT || string(r.Events[0].Kv.Value) != "2" ||
		r.Events[0].PrevKv == nil || string(r.Events[0].PrevKv.Value) != "1" {
		t.Fatalf("first event: %+v", r.Events)
	}
	r = nextWatch(t, live)
	// One revision, one response: the put of w/b and the delete of w/a.
	if len(r.Events) != 2 || string(r.Events[0].Kv.Key) != "w/b" || r.Events[1].Type != mvccpb.DELETE ||
		r.Events[0].Kv.ModRevision != r.Events[1].Kv.ModRevision || r.Events[1].PrevKv == nil {
		t.Fatalf("txn events: %+v", r.Events)
	}
	for _, want := range []string{"2", "1"} {
		r := nextWatch(t, noDel)
		for _, ev := range r.Events {
			if ev.Type == mvccpb.DELETE {
				t.Fatalf("NODELETE watcher got a delete: %+v", ev)
			}
		}
		if len(r.Events) != 1 || string(r.Events[0].Kv.Value) != want {
			t.Fatalf("filtered watcher: %+v, want value %s", r.Events, want)
		}
	}

	// From history: every revision since the first put.
	hist := c.Watch(ctx, "w/a", clientv3.WithRev(first.Header.Revision))
	var got []string
	for len(got) < 3 {
		for _, ev := range nextWatch(t, hist).Events {
			got = append(got, fmt.Sprintf("%s:%s", ev.Type, ev.Kv.Value))
		}
	}
	if fmt.Sprint(got) != "[PUT:1 PUT:2 DELETE:]" {
		t.Fatalf("history: %v", got)
	}

	// Compacted: cancelled, with the compacted revision.
	cur, err := c.Put(ctx, "w/c", "1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, cur.Header.Revision); err != nil {
		t.Fatal(err)
	}
	old := nextWatch(t, c.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(first.Header.Revision)))
	if !old.Canceled || old.CompactRevision != cur.Header.Revision || !errors.Is(old.Err(), rpctypes.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %+v (%v)", old, old.Err())
	}

	// Progress: the client asks, the stream answers with the revision.
	if err := c.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		r := nextWatch(t, live)
		if r.IsProgressNotify() {
			if r.Header.Revision != cur.Header.Revision {
				t.Fatalf("progress at %d, want %d", r.Header.Revision, cur.Header.Revision)
			}
			break
		}
	}
}

// TestWatchRawStream drives the stream with etcd's messages: ids chosen by
// the server count from 0, a duplicate id and an empty range are refused
// with etcd's reasons, a cancel is answered (an unknown one is not), and a
// created reply precedes the watcher's events.
func TestWatchRawStream(t *testing.T) {
	_, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	stream, err := pb.NewWatchClient(c.ActiveConnection()).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	create := func(r *pb.WatchCreateRequest) *pb.WatchResponse {
		t.Helper()
		if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: r}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for want := int64(0); want < 3; want++ {
		r := create(&pb.WatchCreateRequest{Key: []byte(fmt.Sprint("k", want))})
		if !r.Created || r.Canceled || r.WatchId != want {
			t.Fatalf("create %d: %+v", want, r)
		}
	}
	if r := create(&pb.WatchCreateRequest{Key: []byte("x"), WatchId: 1}); !r.Created || !r.Canceled || r.WatchId != -1 ||
		r.CancelReason != "mvcc: duplicate watch ID provided on the WatchStream" {
		t.Fatalf("duplicate id: %+v", r)
	}
	if r := create(&pb.WatchCreateRequest{Key: []byte("b"), RangeEnd: []byte("a")}); !r.Canceled || r.CancelReason != "mvcc: watcher range is empty" {
		t.Fatalf("empty range: %+v", r)
	}
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 99}}}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 2}}}); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || !r.Canceled || r.WatchId != 2 {
		t.Fatalf("cancel of 2: %+v %v", r, err)
	}
	if _, err := c.Put(ctx, "k1", "v"); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.WatchId != 1 || len(r.Events) != 1 || string(r.Events[0].Kv.Key) != "k1" {
		t.Fatalf("event for watcher 1: %+v %v", r, err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
}
