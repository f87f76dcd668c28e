package v3rpc

import (
	"context"
	"errors"
	"io"
	"math"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cairn-kv/cairn/engine"
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
	if _, err := s.m.RequireUser(ctx); err != nil {
		return nil, err
	}
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
	if err := s.checkLeaseKeys(ctx, true, r.ID); err != nil {
		return nil, err
	}
	return proposeFor[*pb.LeaseRevokeResponse](ctx, s.m, &pb.InternalRaftRequest{LeaseRevoke: r})
}

// checkLeaseKeys checks, as etcd does, that the caller may read (or
// write) every key attached to the leases: with auth on, a caller must be
// a user, and one without the root role must have the permission on each
// key.
func (s *leaseServer) checkLeaseKeys(ctx context.Context, write bool, ids ...int64) error {
	c, err := s.m.RequireUser(ctx)
	if err != nil || c.Name == "" || s.m.Engine().IsAdminPermitted(c.Name) == nil {
		return err
	}
	for _, id := range ids {
		info, err := s.m.Engine().LeaseTimeToLive(id, true)
		if errors.Is(err, engine.ErrLeaseNotFound) {
			continue
		}
		if err != nil {
			return convert.Error(err)
		}
		for _, k := range info.Keys {
			if err := s.m.CheckPermission(c, k, nil, write); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	// The keys' names are checked only when asked for (as in etcd).
	var ids []int64
	if r.Keys {
		ids = append(ids, r.ID)
	}
	if err := s.checkLeaseKeys(ctx, false, ids...); err != nil {
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
	if err := s.m.LinearizableRead(ctx); err != nil {
		return nil, err
	}
	ids := s.m.Engine().Leases()
	// A caller lists the leases only if it may read every key attached
	// to them (as in etcd).
	if err := s.checkLeaseKeys(ctx, false, ids...); err != nil {
		return nil, err
	}
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
			// Keeping a lease alive keeps its keys: the caller must be
			// allowed to write them (as in etcd).
			if err := s.checkLeaseKeys(stream.Context(), true, r.ID); err != nil {
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
