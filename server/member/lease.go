package member

import (
	"context"
	"errors"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/server/convert"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Renew restarts a lease's TTL and returns it; 0 for a lease not found or
// expired (a keep-alive reply, not an error, as in etcd). A follower
// forwards it to the leader, whose lessor counts leases.
func (m *Member) Renew(ctx context.Context, id int64) (int64, error) {
	ttl, err := m.renewLocal(ctx, id)
	if err != rpctypes.ErrGRPCNotLeader {
		return ttl, err
	}
	// A follower: the leader's lessor counts the lease (etcd forwards
	// keep-alives to the leader too).
	var resp pb.LeaseKeepAliveResponse
	asked, err := m.askLeader(ctx, requestLeaseRenew, &pb.LeaseKeepAliveRequest{ID: id}, &resp)
	switch {
	case !asked:
		return 0, rpctypes.ErrGRPCNotLeader // leadership is changing hands
	case err != nil:
		return 0, err
	}
	return resp.TTL, nil
}

// LeaseTimeToLive answers etcd's LeaseTimeToLive (TTL -1 for a lease not
// found) as of a linearizable read. A follower asks the leader, whose
// lessor counts the TTL down (etcd forwards it too); the header is the
// caller's to set.
func (m *Member) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	lead := m.Lead()
	if lead == m.id || lead == 0 {
		return m.leaseTimeToLiveLocal(ctx, r)
	}
	var resp pb.LeaseTimeToLiveResponse
	asked, err := m.askLeader(ctx, requestLeaseTimeToLive, r, &resp)
	switch {
	case !asked:
		return m.leaseTimeToLiveLocal(ctx, r)
	case err != nil:
		return nil, err
	}
	return &resp, nil
}

// leaseTimeToLiveLocal answers from this member's lessor.
func (m *Member) leaseTimeToLiveLocal(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := m.LinearizableRead(ctx); err != nil {
		return nil, err
	}
	info, err := m.eng.LeaseTimeToLive(r.ID, r.Keys)
	if errors.Is(err, engine.ErrLeaseNotFound) {
		// Not an error in etcd: TTL -1.
		return &pb.LeaseTimeToLiveResponse{ID: r.ID, TTL: -1}, nil
	}
	if err != nil {
		return nil, convert.Error(err)
	}
	return &pb.LeaseTimeToLiveResponse{ID: info.ID, TTL: info.TTL, GrantedTTL: info.GrantedTTL, Keys: info.Keys}, nil
}

// renewLocal renews a lease with this member's lessor: on the leader (a
// follower's answers "not leader").
func (m *Member) renewLocal(ctx context.Context, id int64) (int64, error) {
	ttl, clear, err := m.eng.LeaseRenew(id)
	switch {
	case errors.Is(err, engine.ErrLeaseNotFound):
		return 0, nil
	case errors.Is(err, engine.ErrNotPrimary):
		return 0, rpctypes.ErrGRPCNotLeader
	case err != nil:
		return 0, convert.Error(err)
	}
	if clear {
		// Later leaders should count from the full TTL again.
		go func() {
			_, _ = m.Propose(context.WithoutCancel(ctx), &pb.InternalRaftRequest{LeaseCheckpoint: &pb.LeaseCheckpointRequest{
				Checkpoints: []*pb.LeaseCheckpoint{{ID: id, Remaining_TTL: 0}}}})
		}()
	}
	return ttl, nil
}

// leaseLoop revokes, through the log, the leases whose TTL ran out on the
// leader, and records the remaining TTLs of lapsing leases every
// leaseCheckpointInterval, so that a new leader does not restart them
// from the full TTL: a leader change extends a lease whose client is gone
// by the election timeout (etcd's grace for the election) and the
// checkpoint's age at most.
func (m *Member) leaseLoop() {
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
					_, err := m.Propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}})
					switch {
					case err == nil:
						m.metrics.leasesExpired.Inc()
					case !errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) && ctx.Err() == nil:
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
			go func() { _, _ = m.Propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: req}) }()
		}
	}
}

// Lease upkeep on the leader, etcd's rates.
const (
	leaseExpiryInterval     = 500 * time.Millisecond
	leaseCheckpointInterval = time.Second // etcd: 5 min, all leases, and off by default
	leaseRevokesPerRound    = 500         // etcd revokes at most 1,000 a second
)
