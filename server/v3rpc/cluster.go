package v3rpc

import (
	"context"

	"github.com/cairn-kv/cairn/server/member"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// clusterServer is etcd's Cluster service. A member is alone in its
// cluster for now: it lists itself, and refuses membership changes (which
// need the peer transport) with "not capable".
type clusterServer struct {
	pb.UnimplementedClusterServer
	m *member.Member
}

func (s *clusterServer) MemberList(ctx context.Context, r *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if r.Linearizable {
		if err := s.m.LinearizableRead(ctx); err != nil {
			return nil, err
		}
	}
	resp := &pb.MemberListResponse{Header: s.m.Header(s.m.Engine().Rev())}
	for _, mb := range s.m.Engine().Members() {
		resp.Members = append(resp.Members, &pb.Member{ID: mb.ID, Name: mb.Name, PeerURLs: mb.PeerURLs,
			ClientURLs: mb.ClientURLs, IsLearner: mb.IsLearner})
	}
	return resp, nil
}

func (s *clusterServer) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	return nil, rpctypes.ErrGRPCNotCapable
}

func (s *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	return nil, rpctypes.ErrGRPCNotCapable
}

func (s *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	return nil, rpctypes.ErrGRPCNotCapable
}

func (s *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	return nil, rpctypes.ErrGRPCNotCapable
}
