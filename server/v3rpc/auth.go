package v3rpc

import (
	"context"
	"slices"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-kv/cairn/server/auth"
	"github.com/cairn-kv/cairn/server/convert"
	"github.com/cairn-kv/cairn/server/member"
)

// authServer is etcd's Auth service. Changes go through the log; the
// caller's rights are checked when they apply, against the auth state of
// that moment.
type authServer struct {
	pb.UnimplementedAuthServer
	m *member.Member
}

func (s *authServer) change(ctx context.Context, req *pb.InternalRaftRequest) (*pb.ResponseHeader, error) {
	resp, err := s.m.Propose(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*pb.ResponseHeader), nil
}

func (s *authServer) AuthEnable(ctx context.Context, r *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthEnable: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthEnableResponse{Header: h}, nil
}

func (s *authServer) AuthDisable(ctx context.Context, r *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthDisable: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthDisableResponse{Header: h}, nil
}

func (s *authServer) AuthStatus(ctx context.Context, r *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	// With auth on, the root role's (as in etcd).
	if err := s.readAdmin(ctx); err != nil {
		return nil, err
	}
	enabled, rev := s.m.Engine().AuthStatus()
	return &pb.AuthStatusResponse{Header: s.m.Header(s.m.Engine().Rev()), Enabled: enabled, AuthRevision: rev}, nil
}

func (s *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	if !s.m.Tokens().CanSign() {
		return nil, status.Error(codes.Unknown, auth.ErrVerifyOnly.Error())
	}
	// The password is checked here, not in the log, which carries none.
	if _, err := s.m.Engine().CheckPassword(r.Name, r.Password); err != nil {
		return nil, convert.Error(err)
	}
	resp, err := s.m.Propose(ctx, &pb.InternalRaftRequest{Authenticate: &pb.InternalAuthenticateRequest{
		Name: r.Name, SimpleToken: auth.NewPrefix()}})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.AuthenticateResponse), nil
}

func (s *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	noPassword := r.Options != nil && r.Options.NoPassword
	h, err := s.m.HashPassword(r.Password, r.HashedPassword, noPassword)
	if err != nil {
		return nil, err
	}
	req := &pb.AuthUserAddRequest{Name: r.Name, HashedPassword: h, Options: r.Options}
	hdr, err := s.change(ctx, &pb.InternalRaftRequest{AuthUserAdd: req})
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserAddResponse{Header: hdr}, nil
}

func (s *authServer) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	// A user reads its own record (as in etcd).
	if err := s.readAdminOr(ctx, func(c auth.Caller) bool { return c.Name == r.Name }); err != nil {
		return nil, err
	}
	roles, err := s.m.Engine().UserGet(r.Name)
	if err != nil {
		return nil, convert.Error(err)
	}
	return &pb.AuthUserGetResponse{Header: s.m.Header(s.m.Engine().Rev()), Roles: roles}, nil
}

func (s *authServer) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	if err := s.readAdmin(ctx); err != nil {
		return nil, err
	}
	return &pb.AuthUserListResponse{Header: s.m.Header(s.m.Engine().Rev()), Users: s.m.Engine().UserList()}, nil
}

func (s *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthUserDelete: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserDeleteResponse{Header: h}, nil
}

func (s *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	h, err := s.m.HashPassword(r.Password, r.HashedPassword, false)
	if err != nil {
		return nil, err
	}
	hdr, err := s.change(ctx, &pb.InternalRaftRequest{AuthUserChangePassword: &pb.AuthUserChangePasswordRequest{Name: r.Name, HashedPassword: h}})
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserChangePasswordResponse{Header: hdr}, nil
}

func (s *authServer) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthUserGrantRole: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserGrantRoleResponse{Header: h}, nil
}

func (s *authServer) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthUserRevokeRole: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserRevokeRoleResponse{Header: h}, nil
}

func (s *authServer) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthRoleAdd: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleAddResponse{Header: h}, nil
}

func (s *authServer) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	// A user reads the roles it has (as in etcd).
	if err := s.readAdminOr(ctx, func(c auth.Caller) bool {
		roles, err := s.m.Engine().UserGet(c.Name)
		return err == nil && slices.Contains(roles, r.Role)
	}); err != nil {
		return nil, err
	}
	perms, err := s.m.Engine().RoleGet(r.Role)
	if err != nil {
		return nil, convert.Error(err)
	}
	resp := &pb.AuthRoleGetResponse{Header: s.m.Header(s.m.Engine().Rev())}
	for _, p := range perms {
		resp.Perm = append(resp.Perm, &authpb.Permission{PermType: authpb.Permission_Type(p.Type), Key: p.Key, RangeEnd: p.RangeEnd})
	}
	return resp, nil
}

func (s *authServer) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	if err := s.readAdmin(ctx); err != nil {
		return nil, err
	}
	return &pb.AuthRoleListResponse{Header: s.m.Header(s.m.Engine().Rev()), Roles: s.m.Engine().RoleList()}, nil
}

func (s *authServer) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthRoleDelete: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleDeleteResponse{Header: h}, nil
}

func (s *authServer) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthRoleGrantPermission: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleGrantPermissionResponse{Header: h}, nil
}

func (s *authServer) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthRoleRevokePermission: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleRevokePermissionResponse{Header: h}, nil
}

// readAdmin is the check before reading users and roles: by an admin, a
// linearizable read.
// readAdminOr is readAdmin, except that a user for whom own holds needs no
// root role.
func (s *authServer) readAdminOr(ctx context.Context, own func(auth.Caller) bool) error {
	c, err := s.m.Authenticate(ctx)
	if err != nil {
		return err
	}
	if err := s.m.Engine().IsAdminPermitted(c.Name); err != nil && (c.Name == "" || !own(c)) {
		return convert.Error(err)
	}
	return s.m.LinearizableRead(ctx)
}

func (s *authServer) readAdmin(ctx context.Context) error {
	if err := s.m.AuthorizeAdmin(ctx); err != nil {
		return err
	}
	return s.m.LinearizableRead(ctx)
}
