package v3rpc

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"

	"github.com/coreos/go-semver/semver"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/cairn-kv/cairn/server/convert"
	"github.com/cairn-kv/cairn/server/member"
)

// maintenanceServer is etcd's Maintenance service.
type maintenanceServer struct {
	pb.UnimplementedMaintenanceServer
	m      *member.Member
	health *health.Server // the gRPC health service, turned off during a defrag if asked
}

func (s *maintenanceServer) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	if _, err := s.m.RequireUser(ctx); err != nil {
		return nil, err
	}
	m := s.m
	size, inUse := m.Engine().BackendSize(), m.Engine().BackendInUse()
	resp := &pb.StatusResponse{
		Header:           m.Header(m.Engine().Rev()),
		Version:          member.Version,
		DbSize:           size,
		DbSizeInUse:      inUse,
		Leader:           m.Lead(),
		RaftIndex:        m.Committed(),
		RaftTerm:         m.Term(),
		RaftAppliedIndex: m.AppliedIndex(),
		DbSizeQuota:      m.Config().QuotaBackendBytes,
		StorageVersion:   member.ClusterVersion,
	}
	if resp.Leader == 0 {
		resp.Errors = append(resp.Errors, rpctypes.ErrGRPCNoLeader.Error())
	}
	for _, a := range m.Engine().Alarms() {
		resp.Errors = append(resp.Errors, fmt.Sprintf("memberID:%d alarm:%s ", a.MemberID, pb.AlarmType(a.Type)))
	}
	return resp, nil
}

func (s *maintenanceServer) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	// Any user lists the alarms; raising or disarming one is the root
	// role's (as in etcd).
	if r.Action == pb.AlarmRequest_GET {
		if _, err := s.m.RequireUser(ctx); err != nil {
			return nil, err
		}
	} else if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	return proposeFor[*pb.AlarmResponse](ctx, s.m, &pb.InternalRaftRequest{Alarm: r})
}

func (s *maintenanceServer) Defragment(ctx context.Context, r *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := authorizeAdminRaw(ctx, s.m); err != nil {
		return nil, err
	}
	m := s.m
	if m.Config().StopGRPCServiceOnDefrag {
		// --experimental-stop-grpc-service-on-defrag: clients that check
		// the gRPC health service go elsewhere meanwhile, as in etcd.
		s.setServing(healthpb.HealthCheckResponse_NOT_SERVING, "defrag is active")
		defer s.setServing(healthpb.HealthCheckResponse_SERVING, "")
	}
	if err := m.Defragment(); err != nil {
		return nil, err
	}
	return &pb.DefragmentResponse{Header: m.Header(m.Engine().Rev())}, nil
}

// rawAuthErrors are the texts etcd's Defragment, Hash, HashKV and Snapshot
// refuse with: its auth store's own errors, which reach the client
// unconverted (code Unknown, "auth: ..."), where its other services send
// the "etcdserver: ..." status.
var rawAuthErrors = map[error]string{
	rpctypes.ErrGRPCUserEmpty:        "auth: user name is empty",
	rpctypes.ErrGRPCPermissionDenied: "auth: permission denied",
	rpctypes.ErrGRPCUserNotFound:     "auth: user not found",
	rpctypes.ErrGRPCInvalidAuthToken: "auth: invalid auth token",
	rpctypes.ErrGRPCAuthOldRevision:  "auth: revision in header is old",
	rpctypes.ErrGRPCAuthNotEnabled:   "auth: authentication is not enabled",
	rpctypes.ErrGRPCInvalidAuthMgmt:  "auth: invalid auth management",
	rpctypes.ErrGRPCRoleNotFound:     "auth: role not found",
	rpctypes.ErrGRPCAuthFailed:       "auth: authentication failed, invalid user ID or password",
}

// authorizeAdminRaw is AuthorizeAdmin with a refusal as etcd's
// maintenance calls send it (rawAuthErrors).
func authorizeAdminRaw(ctx context.Context, m *member.Member) error {
	err := m.AuthorizeAdmin(ctx)
	if text, ok := rawAuthErrors[err]; ok {
		return status.Error(codes.Unknown, text)
	}
	return err
}

// setServing sets the health of every gRPC service (""), with etcd's log
// line.
func (s *maintenanceServer) setServing(st healthpb.HealthCheckResponse_ServingStatus, reason string) {
	args := []any{"service", "", "status", st.String()}
	if reason != "" {
		args = append(args, "reason", reason)
		s.m.Logger().Warn("grpc service status changed", args...)
	} else {
		s.m.Logger().Info("grpc service status changed", args...)
	}
	s.health.SetServingStatus("", st)
}

func (s *maintenanceServer) Hash(ctx context.Context, r *pb.HashRequest) (*pb.HashResponse, error) {
	if err := authorizeAdminRaw(ctx, s.m); err != nil {
		return nil, err
	}
	var h uint32
	err := s.m.OnApplier(func() (err error) {
		h, err = s.m.HashBackend()
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pb.HashResponse{Header: s.m.Header(s.m.Engine().Rev()), Hash: h}, nil
}

func (s *maintenanceServer) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := authorizeAdminRaw(ctx, s.m); err != nil {
		return nil, err
	}
	res, err := s.m.HashKV(r.Revision)
	if err != nil {
		return nil, convert.Error(err)
	}
	return &pb.HashKVResponse{Header: s.m.Header(s.m.Engine().Rev()), Hash: res.Hash, CompactRevision: res.CompactRev, HashRevision: res.HashRev}, nil
}

// snapshotChunk is what each Snapshot message carries, etcd's 32 KiB.
const snapshotChunk = 32 * 1024

// Snapshot streams a consistent copy of the page file (compacted, as of
// the latest commit) in 32 KiB chunks, then its SHA-256 in a last message,
// as etcd does; `etcdctl snapshot save` checks it.
func (s *maintenanceServer) Snapshot(r *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	if err := authorizeAdminRaw(stream.Context(), s.m); err != nil {
		return err
	}
	m := s.m
	f, err := m.Snapshot()
	if err != nil {
		return err
	}
	defer f.Close()
	sr := io.NewSectionReader(f, 0, f.Size())
	h := sha256.New()
	remaining := uint64(f.Size())
	for remaining > 0 {
		// A fresh buffer each time: gRPC may hold a sent message.
		buf := make([]byte, min(snapshotChunk, remaining))
		n, err := io.ReadFull(sr, buf)
		if err != nil {
			return err
		}
		h.Write(buf[:n])
		remaining -= uint64(n)
		resp := &pb.SnapshotResponse{Header: m.Header(m.Engine().Rev()), RemainingBytes: remaining, Blob: buf[:n], Version: member.ClusterVersion}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return stream.Send(&pb.SnapshotResponse{Header: m.Header(m.Engine().Rev()), Blob: h.Sum(nil), Version: member.ClusterVersion})
}

func (s *maintenanceServer) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	m := s.m
	if m.Lead() != m.ID() {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	if err := m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	if err := m.MoveLeader(ctx, r.TargetID); err != nil {
		return nil, err
	}
	return &pb.MoveLeaderResponse{Header: m.Header(m.Engine().Rev())}, nil
}

// Downgrade validates, enables or cancels a downgrade job as etcd 3.5
// does: the target must be the minor version below the cluster's (3.4),
// given as "X.Y" or "X.Y.Z"; the job goes through raft and persists until
// cancelled. No cairn release speaks 3.4, so here an enabled job is
// recorded and reported and changes nothing else (etcd 3.5 would refuse to
// restart a 3.5 member while one is enabled; cairn starts, with a warning).
func (s *maintenanceServer) Downgrade(ctx context.Context, r *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	m := s.m
	switch r.Action {
	case pb.DowngradeRequest_VALIDATE:
		resp, _, err := downgradeValidate(ctx, m, r.Version)
		return resp, err
	case pb.DowngradeRequest_ENABLE:
		_, target, err := downgradeValidate(ctx, m, r.Version)
		if err != nil {
			return nil, err
		}
		set := &membershippb.DowngradeInfoSetRequest{Enabled: true, Ver: target.String()}
		return proposeFor[*pb.DowngradeResponse](ctx, m, &pb.InternalRaftRequest{DowngradeInfoSet: set})
	case pb.DowngradeRequest_CANCEL:
		if err := m.LinearizableRead(ctx); err != nil {
			return nil, err
		}
		if !m.Engine().Downgrade().Enabled {
			return nil, rpctypes.ErrGRPCNoInflightDowngrade
		}
		return proposeFor[*pb.DowngradeResponse](ctx, m, &pb.InternalRaftRequest{DowngradeInfoSet: &membershippb.DowngradeInfoSetRequest{}})
	}
	return nil, status.Error(codes.Unknown, "etcdserver: unknown method")
}

// clusterVersion is member.ClusterVersion as major.minor.
var clusterVersion = semver.Must(semver.NewVersion(member.ClusterVersion))

// downgradeValidate checks that a downgrade to version may begin: the
// version reads ("X.Y.Z" or "X.Y", as etcd takes it), it is the minor
// version below the cluster's, and no job is enabled as of a linearizable
// read. It returns the target as major.minor.0.
func downgradeValidate(ctx context.Context, m *member.Member, version string) (*pb.DowngradeResponse, *semver.Version, error) {
	v, err := semver.NewVersion(version)
	if err != nil {
		if v, err = semver.NewVersion(version + ".0"); err != nil {
			return nil, nil, rpctypes.ErrGRPCWrongDowngradeVersionFormat
		}
	}
	target := &semver.Version{Major: v.Major, Minor: v.Minor}
	if err := m.LinearizableRead(ctx); err != nil {
		return nil, nil, err
	}
	if target.Major != clusterVersion.Major || target.Minor != clusterVersion.Minor-1 {
		return nil, nil, rpctypes.ErrGRPCInvalidDowngradeTargetVersion
	}
	if m.Engine().Downgrade().Enabled {
		return nil, nil, rpctypes.ErrGRPCDowngradeInProcess
	}
	return &pb.DowngradeResponse{Header: m.Header(m.Engine().Rev()), Version: member.ClusterVersion}, target, nil
}
