package v3rpc

import (
	"context"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// A call with clientv3.WithRequireLeader's metadata is refused with etcd's
// "no leader" (codes.Unavailable) when the member knows no leader, and
// served when it knows one; without the metadata it is not refused. (The
// server's TestRequireLeader makes such calls to a member with a leader.)
func TestRequireLeader(t *testing.T) {
	// On a member that knows no leader.
	required := metadata.NewIncomingContext(context.Background(), metadata.Pairs(rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader))
	if err := requireLeader(required, 0); err != rpctypes.ErrGRPCNoLeader {
		t.Fatalf("no leader, leader required: %v", err)
	}
	if s, _ := status.FromError(rpctypes.ErrGRPCNoLeader); s.Code() != codes.Unavailable || s.Message() != "etcdserver: no leader" {
		t.Fatalf("no leader is %v", s)
	}
	plain := metadata.NewIncomingContext(context.Background(), metadata.Pairs("token", "x"))
	for _, ctx := range []context.Context{context.Background(), plain} {
		if err := requireLeader(ctx, 0); err != nil {
			t.Fatalf("no leader, none required: %v", err)
		}
	}
	if err := requireLeader(required, 1); err != nil {
		t.Fatalf("a leader, leader required: %v", err)
	}
}
