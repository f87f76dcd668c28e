package member

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/server/convert"
	"github.com/cairn-kv/cairn/server/transport"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
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
	lead := m.Lead()
	switch {
	case lead == 0:
		return 0, rpctypes.ErrGRPCNoLeader
	case lead == m.id:
		return 0, rpctypes.ErrGRPCNotLeader // leadership is changing hands
	}
	req, err := proto.Marshal(&pb.LeaseKeepAliveRequest{ID: id})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	answer, err := m.tr.Request(ctx, lead, append([]byte{requestLeaseRenew}, req...))
	var remote *transport.RemoteError
	switch {
	case errors.As(err, &remote):
		if remote.Msg == rpctypes.ErrGRPCNotLeader.Error() {
			return 0, rpctypes.ErrGRPCNotLeader
		}
		return 0, status.Error(codes.Unavailable, remote.Msg)
	case err != nil:
		return 0, rpctypes.ErrGRPCTimeoutDueToConnectionLost
	}
	var resp pb.LeaseKeepAliveResponse
	if err := proto.Unmarshal(answer, &resp); err != nil {
		return 0, err
	}
	return resp.TTL, nil
}

// Requests one member sends another over the peer transport: a kind
// byte, then the request's protobuf encoding.
const (
	requestLeaseRenew      byte = 1
	requestLeaseTimeToLive byte = 2
)

// LeaseTimeToLive answers etcd's LeaseTimeToLive (TTL -1 for a lease not
// found) as of a linearizable read. A follower asks the leader, whose
// lessor counts the TTL down (etcd forwards it too); the header is the
// caller's to set.
func (m *Member) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	lead := m.Lead()
	if lead == m.id || lead == 0 {
		return m.leaseTimeToLiveLocal(ctx, r)
	}
	req, err := proto.Marshal(r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	answer, err := m.tr.Request(ctx, lead, append([]byte{requestLeaseTimeToLive}, req...))
	var remote *transport.RemoteError
	switch {
	case errors.As(err, &remote):
		return nil, status.Error(codes.Unavailable, remote.Msg)
	case err != nil:
		return nil, rpctypes.ErrGRPCTimeoutDueToConnectionLost
	}
	var resp pb.LeaseTimeToLiveResponse
	if err := proto.Unmarshal(answer, &resp); err != nil {
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

// handleRequest answers a peer's request: a keep-alive or a time-to-live
// a follower forwards to this member, its leader.
func (m *Member) handleRequest(from uint64, req []byte) ([]byte, error) {
	if len(req) == 0 {
		return nil, errors.New("an empty request")
	}
	switch req[0] {
	case requestLeaseRenew:
		var r pb.LeaseKeepAliveRequest
		if err := proto.Unmarshal(req[1:], &r); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		ttl, err := m.renewLocal(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		return proto.Marshal(&pb.LeaseKeepAliveResponse{ID: r.ID, TTL: ttl})
	case requestLeaseTimeToLive:
		var r pb.LeaseTimeToLiveRequest
		if err := proto.Unmarshal(req[1:], &r); err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		resp, err := m.leaseTimeToLiveLocal(ctx, &r)
		if err != nil {
			return nil, err
		}
		return proto.Marshal(resp)
	}
	return nil, fmt.Errorf("unknown request kind %d from %x", req[0], from)
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
