package server

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/cairn-kv/cairn/server/v3electionpb"
	"github.com/cairn-kv/cairn/server/v3lockpb"
	"github.com/cairn-kv/cairn/server/v3rpc"
)

// TestLockService: a second locker waits until the first unlocks; a
// lock whose lease is revoked passes on; the lock keys are the name, a
// slash and the lease in hex, as etcd's.
func TestLockService(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	lk := v3lockpb.NewLockClient(rawConn(t, s.ClientURLs()[0]))
	l1, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	first, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("job"), Lease: int64(l1.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("job/%x", int64(l1.ID)); string(first.Key) != want {
		t.Fatalf("lock key %q, want %q", first.Key, want)
	}
	got := make(chan *v3lockpb.LockResponse, 1)
	go func() {
		r, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("job"), Lease: int64(l2.ID)})
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	select {
	case <-got:
		t.Fatal("the second locker got the lock while the first held it")
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := lk.Unlock(ctx, &v3lockpb.UnlockRequest{Key: first.Key}); err != nil {
		t.Fatal(err)
	}
	second := <-got
	if second == nil || second.Header.Revision <= first.Header.Revision {
		t.Fatalf("second lock: %+v after %+v", second, first)
	}
	// The holder's lease goes: the next one gets the lock.
	got2 := make(chan error, 1)
	go func() {
		_, err := lk.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("job"), Lease: int64(l1.ID)})
		got2 <- err
	}()
	if _, err := c.Revoke(ctx, l2.ID); err != nil {
		t.Fatal(err)
	}
	if err := <-got2; err != nil {
		t.Fatal(err)
	}
}

// TestElectionService: campaign, leader, proclaim, observe, resign, and
// the next candidate taking over; etcd's errors for no leader and for a
// proclaim by one who no longer leads.
func TestElectionService(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	el := v3electionpb.NewElectionClient(rawConn(t, s.ClientURLs()[0]))
	if _, err := el.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")}); status.Convert(err).Message() != v3rpc.ErrElectionNoLeader.Error() {
		t.Fatalf("leader of an empty election: %v", err)
	}
	obs, err := el.Observe(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")})
	if err != nil {
		t.Fatal(err)
	}
	la, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	a, err := el.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: int64(la.ID), Value: []byte("a1")})
	if err != nil {
		t.Fatal(err)
	}
	observed := func(want string) {
		t.Helper()
		r, err := obs.Recv()
		if err != nil || string(r.Kv.Value) != want {
			t.Fatalf("observed %v %v, want %s", r, err, want)
		}
	}
	observed("a1")
	bDone := make(chan *v3electionpb.CampaignResponse, 1)
	go func() {
		r, err := el.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("e"), Lease: int64(lb.ID), Value: []byte("b1")})
		if err != nil {
			t.Error(err)
		}
		bDone <- r
	}()
	if _, err := el.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: a.Leader, Value: []byte("a2")}); err != nil {
		t.Fatal(err)
	}
	observed("a2")
	if l, err := el.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("e")}); err != nil || string(l.Kv.Value) != "a2" {
		t.Fatalf("leader: %+v %v", l, err)
	}
	if _, err := el.Resign(ctx, &v3electionpb.ResignRequest{Leader: a.Leader}); err != nil {
		t.Fatal(err)
	}
	b := <-bDone
	if b == nil || string(b.Leader.Key) == string(a.Leader.Key) {
		t.Fatalf("b's campaign: %+v", b)
	}
	observed("b1")
	_, err = el.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: a.Leader, Value: []byte("a3")})
	if status.Convert(err).Message() != v3rpc.ErrElectionNotLeader.Error() {
		t.Fatalf("proclaim after resigning: %v", err)
	}
	if _, err := el.Proclaim(ctx, &v3electionpb.ProclaimRequest{}); status.Convert(err).Message() != v3rpc.ErrMissingLeaderKey.Error() {
		t.Fatalf("proclaim with no leader key: %v", err)
	}
}
