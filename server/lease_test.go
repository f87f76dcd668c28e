package server

import (
	"errors"
	"path/filepath"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLeasesThroughClient: grant (raised to the least TTL), attach keys,
// time-to-live with keys, keep-alive, list, revoke deleting the keys in
// one revision; unknown leases as etcd answers them; expiry revoking a
// lease and its keys through the log.
func TestLeasesThroughClient(t *testing.T) {
	_, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	// The test member's election timeout is 100 ms: the least TTL is 1 s.
	g, err := c.Grant(ctx, 0)
	if err != nil || g.ID <= 0 || g.TTL != 1 {
		t.Fatalf("grant of TTL 0: %+v %v", g, err)
	}
	long, err := c.Grant(ctx, 600)
	if err != nil || long.TTL != 600 || long.ID == g.ID {
		t.Fatalf("grant of 600 s: %+v %v", long, err)
	}
	if _, err := c.Lease.Grant(ctx, 9_000_000_001); !errors.Is(err, rpctypes.ErrLeaseTTLTooLarge) {
		t.Fatalf("too large a TTL: %v", err)
	}
	for _, k := range []string{"l/b", "l/a"} {
		if _, err := c.Put(ctx, k, "v", clientv3.WithLease(long.ID)); err != nil {
			t.Fatal(err)
		}
	}
	ttl, err := c.TimeToLive(ctx, long.ID, clientv3.WithAttachedKeys())
	if err != nil || ttl.GrantedTTL != 600 || ttl.TTL <= 0 || ttl.TTL > 600 || len(ttl.Keys) != 2 || string(ttl.Keys[0]) != "l/a" {
		t.Fatalf("time to live: %+v %v", ttl, err)
	}
	ka, err := c.KeepAliveOnce(ctx, long.ID)
	if err != nil || ka.TTL != 600 {
		t.Fatalf("keep-alive: %+v %v", ka, err)
	}
	leases, err := c.Leases(ctx)
	if err != nil || len(leases.Leases) != 2 {
		t.Fatalf("leases: %+v %v", leases, err)
	}
	rev, err := c.Revoke(ctx, long.ID)
	if err != nil {
		t.Fatal(err)
	}
	get, err := c.Get(ctx, "l/", clientv3.WithPrefix())
	if err != nil || len(get.Kvs) != 0 || get.Header.Revision != rev.Header.Revision {
		t.Fatalf("after revoke: %+v %v", get, err)
	}
	if _, err := c.Revoke(ctx, long.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("revoke of a revoked lease: %v", err)
	}
	if gone, err := c.TimeToLive(ctx, long.ID); err != nil || gone.TTL != -1 {
		t.Fatalf("time to live of a revoked lease: %+v %v", gone, err)
	}
	if _, err := c.KeepAliveOnce(ctx, long.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("keep-alive of a revoked lease: %v", err)
	}

	// Expiry: the short lease's key goes, by a delete event, unasked.
	if g, err = c.Grant(ctx, 1); err != nil {
		t.Fatal(err)
	}
	put, err := c.Put(ctx, "short", "v", clientv3.WithLease(g.ID))
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Skip("the lease expired before the put: the machine is too slow for a 1 s lease")
	}
	if err != nil {
		t.Fatal(err)
	}
	w := c.Watch(ctx, "short", clientv3.WithRev(put.Header.Revision+1))
	r := nextWatch(t, w)
	if len(r.Events) != 1 || r.Events[0].Type != mvccpb.DELETE {
		t.Fatalf("expiry: %+v", r.Events)
	}
	if gone, err := c.TimeToLive(ctx, g.ID); err != nil || gone.TTL != -1 {
		t.Fatalf("time to live of an expired lease: %+v %v", gone, err)
	}
}
