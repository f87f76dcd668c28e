// Package v3rpc is etcd's v3 gRPC API on a member: the KV, Watch, Lease,
// Maintenance, Auth and Cluster services, v3lock and v3election, and
// grpc.health.v1, with etcd's checks, errors and headers; and the
// interceptors every call passes (a required leader, the call metrics).
// A write is checked here, then proposed through the member and answered
// with what its entry applied; a read is made linearizable by the member
// (unless serializable), then served from the engine.
//
// Failpoints (internal/failpoint), canaries that break an answer on
// purpose, once, so that a checker shows it catches it:
// v3rpc/canaryDropWatchEvent drops one watch event (the fault-injection
// harness's watch checker, jepsen/); v3rpc/canaryWrongVersion adds one to
// a key's version in a range's answer (the client-operations harness,
// fuzz/).
package v3rpc

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cairn-kv/cairn/server/member"
	"github.com/cairn-kv/cairn/server/v3electionpb"
	"github.com/cairn-kv/cairn/server/v3lockpb"
)

// Services are a member's gRPC services, to register on any number of
// gRPC servers, and the interceptors those servers must chain.
type Services struct {
	m       *member.Member
	metrics *rpcMetrics
	health  *health.Server
	leader  *leaderStreams
	tracing *tracing // nil unless SetTracer
}

// New makes m's services; their call metrics join m's registry. Until m
// stops, a monitor ends the streams that require a leader once m has
// known none for three election timeouts.
func New(m *member.Member) *Services {
	s := &Services{m: m, metrics: newRPCMetrics(m.Registry(), m.Config().ExtensiveMetrics), health: health.NewServer(),
		leader: &leaderStreams{streams: map[*leaderStream]struct{}{}}}
	go s.leader.monitor(m.Config().ElectionTimeout, m.Lead, m.Stopping())
	return s
}

// Register registers every service on reg.
func (s *Services) Register(reg grpc.ServiceRegistrar) {
	m := s.m
	rc := recipes{kv: &kvServer{m: m}, lease: &leaseServer{m: m}}
	pb.RegisterKVServer(reg, &kvServer{m: m})
	pb.RegisterWatchServer(reg, &watchServer{m: m})
	pb.RegisterLeaseServer(reg, &leaseServer{m: m})
	pb.RegisterMaintenanceServer(reg, &maintenanceServer{m: m, health: s.health})
	pb.RegisterAuthServer(reg, &authServer{m: m})
	pb.RegisterClusterServer(reg, &clusterServer{m: m})
	v3lockpb.RegisterLockServer(reg, &lockServer{r: rc})
	v3electionpb.RegisterElectionServer(reg, &electionServer{r: rc})
	healthpb.RegisterHealthServer(reg, s.health)
}

// UnaryInterceptor and StreamInterceptor refuse a call whose client
// requires a leader when the member knows none, as etcd does (before the
// call is counted), then count it in the gRPC metrics. A stream that
// requires a leader is ended with "no leader" if the member loses it for
// three election timeouts (leadermonitor.go).
func (s *Services) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := requireLeader(ctx, s.m.Lead()); err != nil {
		return nil, err
	}
	if s.m.IsLearner() && !servedByLearner(req) {
		return nil, errNotSupportedForLearner
	}
	if s.tracing != nil {
		return s.metrics.unary(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			return s.tracing.unary(ctx, req, info, h)
		})
	}
	return s.metrics.unary(ctx, req, info, h)
}

// errNotSupportedForLearner is etcd 3.5's refusal by a learner:
// Unavailable, which clientv3 retries on another endpoint (later etcd
// releases made it FailedPrecondition).
var errNotSupportedForLearner = status.Error(codes.Unavailable, "etcdserver: rpc not supported for learner")

// servedByLearner: a learner answers Status and serializable ranges, as
// etcd 3.5's does (and the Snapshot stream), and, where etcd 3.5 refuses
// it, MemberList (linearizable by a ReadIndex through the leader, as on
// any member): an operator looking at a learner sees its cluster.
func servedByLearner(req any) bool {
	switch r := req.(type) {
	case *pb.StatusRequest, *pb.MemberListRequest:
		return true
	case *pb.RangeRequest:
		return r.Serializable
	}
	return false
}

func (s *Services) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := requireLeader(ss.Context(), s.m.Lead()); err != nil {
		return err
	}
	if s.m.IsLearner() && info.FullMethod != "/etcdserverpb.Maintenance/Snapshot" {
		return errNotSupportedForLearner
	}
	if s.tracing != nil {
		inner := h
		h = func(srv any, ss grpc.ServerStream) error { return s.tracing.stream(srv, ss, info, inner) }
	}
	if wantsLeader(ss.Context()) {
		// (streams are few: their metadata is read for each)
		return s.metrics.stream(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
			return s.leader.run(srv, ss, h)
		})
	}
	return s.metrics.stream(srv, ss, info, h)
}

// requireLeader returns etcd's "no leader" when the call carries the
// hasleader metadata (clientv3.WithRequireLeader) and lead is 0. The
// metadata is looked at only then: a call's metadata is not built unless
// asked for.
func requireLeader(ctx context.Context, lead uint64) error {
	if lead != 0 {
		return nil
	}
	if vs := metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey); len(vs) > 0 && vs[0] == rpctypes.MetadataHasLeader {
		return rpctypes.ErrGRPCNoLeader
	}
	return nil
}

// GRPCOverheadBytes is what etcd allows a gRPC message beyond
// max-request-bytes, so that a request just over the limit reaches the
// server's own check and its "request is too large".
const GRPCOverheadBytes = 512 * 1024
