package v3rpc

import (
	"context"
	"errors"
	"io"
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cairn-kv/cairn/server/convert"
	"github.com/cairn-kv/cairn/server/member"
)

// leaseServer is etcd's Lease service. Grants and revokes go through the
// log; keep-alives and expiry are the leader's (its lessor is primary).
type leaseServer struct {
	pb.UnimplementedLeaseServer
	m *member.Member
}

func (s *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	req := &pb.LeaseGrantRequest{ID: r.ID, TTL: r.TTL}
	for req.ID == 0 {
		req.ID = int64(s.m.NextID() & math.MaxInt64)
	}
	if err := s.m.CheckQuota(ctx, 64); err != nil {
		return nil, err
	}
	return proposeFor[*pb.LeaseGrantResponse](ctx, s.m, &pb.InternalRaftRequest{LeaseGrant: req})
}

func (s *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	// Revoking deletes the lease's keys: the caller must be allowed to.
	c, err := s.m.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if enabled, _ := s.m.Engine().AuthStatus(); enabled {
		info, err := s.m.Engine().LeaseTimeToLive(r.ID, true)
		if err != nil {
			return nil, convert.Error(err)
		}
		for _, k := range info.Keys {
			if err := s.m.CheckPermission(c, k, nil, true); err != nil {
				return nil, err
			}
		}
	}
	return proposeFor[*pb.LeaseRevokeResponse](ctx, s.m, &pb.InternalRaftRequest{LeaseRevoke: r})
}

func (s *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if _, err := s.m.Authenticate(ctx); err != nil {
		return nil, err
	}
	resp, err := s.m.LeaseTimeToLive(ctx, r)
	if err != nil {
		return nil, err
	}
	resp.Header = s.m.Header(s.m.Engine().Rev())
	return resp, nil
}

func (s *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if _, err := s.m.Authenticate(ctx); err != nil {
		return nil, err
	}
	if err := s.m.LinearizableRead(ctx); err != nil {
		return nil, err
	}
	ids := s.m.Engine().Leases()
	resp := &pb.LeaseLeasesResponse{Header: s.m.Header(s.m.Engine().Rev()), Leases: make([]*pb.LeaseStatus, len(ids))}
	for i, id := range ids {
		resp.Leases[i] = &pb.LeaseStatus{ID: id}
	}
	return resp, nil
}

func (s *leaseServer) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	m := s.m
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			ttl, err := m.Renew(stream.Context(), r.ID)
			if err != nil {
				errc <- err
				return
			}
			if err := stream.Send(&pb.LeaseKeepAliveResponse{Header: m.Header(m.Engine().Rev()), ID: r.ID, TTL: ttl}); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case <-stream.Context().Done():
		return stream.Context().Err()
	case <-m.Stopping():
		return rpctypes.ErrGRPCStopped
	}
}
