package v3rpc

import (
	"context"

	"github.com/cairn-kv/cairn/server/member"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// clusterServer is etcd's Cluster service: the member list, and
// membership changes through raft (member/membership.go).
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
	if _, err := s.m.RequireUser(ctx); err != nil {
		return nil, err
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
	return s.m.MemberAdd(ctx, r)
}

func (s *clusterServer) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	return s.m.MemberRemove(ctx, r)
}

func (s *clusterServer) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	return s.m.MemberUpdate(ctx, r)
}

func (s *clusterServer) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return nil, err
	}
	return s.m.MemberPromote(ctx, r)
}
