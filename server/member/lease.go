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

// renew restarts a lease's TTL and returns it; 0 for a lease not found or
// expired (a keep-alive reply, not an error, as in etcd).
func (m *Member) Renew(ctx context.Context, id int64) (int64, error) {
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
// leader, and records remaining TTLs every leaseCheckpointInterval so that
// a new leader does not restart them from the full TTL.
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
					if _, err := m.Propose(ctx, &pb.InternalRaftRequest{LeaseRevoke: &pb.LeaseRevokeRequest{ID: id}}); err != nil &&
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
			go func() { _, _ = m.Propose(ctx, &pb.InternalRaftRequest{LeaseCheckpoint: req}) }()
		}
	}
}

// Lease upkeep on the leader, etcd's rates.
const (
	leaseExpiryInterval     = 500 * time.Millisecond
	leaseCheckpointInterval = 5 * time.Minute
	leaseRevokesPerRound    = 500 // etcd revokes at most 1,000 a second
)
