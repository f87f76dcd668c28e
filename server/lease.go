package server

import (
	"context"
	"errors"
	"io"
	"math"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cairn-kv/cairn/engine"
)

// leaseServer is etcd's Lease service. Grants and revokes go through the
// log; keep-alives and expiry are the leader's (its lessor is primary).
type leaseServer struct {
	pb.UnimplementedLeaseServer
	m *member
}

func (s *leaseServer) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	req := &pb.LeaseGrantRequest{ID: r.ID, TTL: r.TTL}
	for req.ID == 0 {
		req.ID = int64(s.m.nextID() & math.MaxInt64)
	}
	if err := s.m.checkQuota(ctx, 64); err != nil {
		return nil, err
	}
	return proposeFor[*pb.LeaseGrantResponse](ctx, s.m, &pb.InternalRaftRequest{LeaseGrant: req})
}

func (s *leaseServer) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	// Revoking deletes the lease's keys: the caller must be allowed to.
	c, err := s.m.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if enabled, _ := s.m.eng.AuthStatus(); enabled {
		info, err := s.m.eng.LeaseTimeToLive(r.ID, true)
		if err != nil {
			return nil, grpcError(err)
		}
		for _, k := range info.Keys {
			if err := s.m.checkPermission(c, k, nil, true); err != nil {
				return nil, err
			}
		}
	}
	return proposeFor[*pb.LeaseRevokeResponse](ctx, s.m, &pb.InternalRaftRequest{LeaseRevoke: r})
}

func (s *leaseServer) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if _, err := s.m.authenticate(ctx); err != nil {
		return nil, err
	}
	if err := s.m.linearizableRead(ctx); err != nil {
		return nil, err
	}
	info, err := s.m.eng.LeaseTimeToLive(r.ID, r.Keys)
	if errors.Is(err, engine.ErrLeaseNotFound) {
		// Not an error in etcd: TTL -1.
		return &pb.LeaseTimeToLiveResponse{Header: s.m.header(s.m.eng.Rev()), ID: r.ID, TTL: -1}, nil
	}
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.LeaseTimeToLiveResponse{Header: s.m.header(s.m.eng.Rev()), ID: info.ID, TTL: info.TTL,
		GrantedTTL: info.GrantedTTL, Keys: info.Keys}, nil
}

func (s *leaseServer) LeaseLeases(ctx context.Context, r *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	if _, err := s.m.authenticate(ctx); err != nil {
		return nil, err
	}
	if err := s.m.linearizableRead(ctx); err != nil {
		return nil, err
	}
	ids := s.m.eng.Leases()
	resp := &pb.LeaseLeasesResponse{Header: s.m.header(s.m.eng.Rev()), Leases: make([]*pb.LeaseStatus, len(ids))}
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
			ttl, err := m.renew(stream.Context(), r.ID)
			if err != nil {
				errc <- err
				return
			}
			if err := stream.Send(&pb.LeaseKeepAliveResponse{Header: m.header(m.eng.Rev()), ID: r.ID, TTL: ttl}); err != nil {
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
	case <-m.stopping:
		return rpctypes.ErrGRPCStopped
	}
}

// renew restarts a lease's TTL and returns it; 0 for a lease not found or
// expired (a keep-alive reply, not an error, as in etcd).
func (m *member) renew(ctx context.Context, id int64) (int64, error) {
	ttl, clear, err := m.eng.LeaseRenew(id)
	switch {
	case errors.Is(err, engine.ErrLeaseNotFound):
		return 0, nil
	case errors.Is(err, engine.ErrNotPrimary):
		return 0, rpctypes.ErrGRPCNotLeader
	case err != nil:
		return 0, grpcError(err)
	}
	if clear {
		// Later leaders should count from the full TTL again.
		go func() {
			_, _ = m.propose(context.WithoutCancel(ctx), &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{
				Checkpoints: []*pb.LeaseCheckpoint{{ID: id, Remaining_TTL: 0}}}})
		}()
	}
	return ttl, nil
}

// Lease upkeep on the leader, etcd's rates.
const (
	leaseExpiryInterval     = 500 * time.Millisecond
	leaseCheckpointInterval = 5 * time.Minute
	leaseRevokesPerRound    = 500 // etcd revokes at most 1,000 a second
)

// leaseLoop revokes, through the log, the leases whose TTL ran out on the
// leader, and records remaining TTLs every leaseCheckpointInterval so that
// a new leader does not restart them from the full TTL.
func (m *member) leaseLoop() {
	defer m.done.Done()
	expiry := time.NewTicker(leaseExpiryInterval)
	defer expiry.Stop()
	checkpoint := time.NewTicker(leaseCheckpointInterval)
	defer checkpoint.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-m.stopping
		cancel()
	}()
	for {
		select {
		case <-m.stopping:
			return
		case <-expiry.C:
			for _, id := range m.eng.ExpiredLeases(leaseRevokesPerRound) {
				go func() {
					if _, err := m.propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}); err != nil &&
						!errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) && ctx.Err() == nil {
						m.log.Warn("revoking an expired lease", "lease-id", id, "err", err)
					}
				}()
			}
		case <-checkpoint.C:
			cps := m.eng.LeaseCheckpoints()
			if len(cps) == 0 {
				continue
			}
			req := &pb.LeaseCheckpointRequest{}
			for _, cp := range cps {
				req.Checkpoints = append(req.Checkpoints, &pb.LeaseCheckpoint{ID: cp.ID, Remaining_TTL: cp.Remaining})
			}
			go func() { _, _ = m.propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: req}) }()
		}
	}
}
