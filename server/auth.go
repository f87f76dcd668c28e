package server

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/server/auth"
)

// authenticate returns who sent the request. While auth is off nobody is
// checked; with it on, a token in the metadata ("token", or the gateway's
// "authorization") must be valid, and with client-certificate auth a
// verified certificate's common name is the user when no token is given.
func (m *member) authenticate(ctx context.Context) (auth.Caller, error) {
	enabled, rev := m.eng.AuthStatus()
	if !enabled {
		return auth.Caller{}, nil
	}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		for _, k := range []string{rpctypes.TokenFieldNameGRPC, "authorization"} {
			if ts := md.Get(k); len(ts) > 0 {
				c, ok := m.tokens.Info(ts[0])
				if !ok {
					return auth.Caller{}, rpctypes.ErrGRPCInvalidAuthToken
				}
				return c, nil
			}
		}
	}
	if m.cfg.ClientCertAuth {
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				for _, chain := range ti.State.VerifiedChains {
					if len(chain) > 0 && chain[0].Subject.CommonName != "" {
						return auth.Caller{Name: chain[0].Subject.CommonName, Rev: rev}, nil
					}
				}
			}
		}
	}
	return auth.Caller{}, nil
}

// checkPermission checks that c may read (or write) [key, end).
func (m *member) checkPermission(c auth.Caller, key, end []byte, write bool) error {
	return grpcError(m.eng.IsPermitted(c.Name, c.Rev, key, end, write))
}

// checkAdmin checks that c may manage auth and the cluster.
func (m *member) checkAdmin(c auth.Caller) error {
	return grpcError(m.eng.IsAdminPermitted(c.Name))
}

// authorizeAdmin checks that the sender of a request may manage auth and
// the cluster: it holds the root role (anyone, while auth is off).
func (m *member) authorizeAdmin(ctx context.Context) error {
	c, err := m.authenticate(ctx)
	if err != nil {
		return err
	}
	return m.checkAdmin(c)
}

// checkTxnPermission checks every compare and operation of a
// transaction, nested ones too, as etcd does: compares and ranges read,
// puts and deletes write (and read, with prev_kv).
func (m *member) checkTxnPermission(c auth.Caller, r *pb.TxnRequest) error {
	for _, cmp := range r.Compare {
		if err := m.checkPermission(c, cmp.Key, rangeEnd(cmp.RangeEnd), false); err != nil {
			return err
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			var err error
			switch q := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				err = m.checkPermission(c, q.RequestRange.Key, rangeEnd(q.RequestRange.RangeEnd), false)
			case *pb.RequestOp_RequestPut:
				err = m.checkPutPermission(c, q.RequestPut)
			case *pb.RequestOp_RequestDeleteRange:
				err = m.checkDeletePermission(c, q.RequestDeleteRange)
			case *pb.RequestOp_RequestTxn:
				err = m.checkTxnPermission(c, q.RequestTxn)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *member) checkPutPermission(c auth.Caller, r *pb.PutRequest) error {
	if err := m.checkPermission(c, r.Key, nil, true); err != nil {
		return err
	}
	if r.PrevKv {
		return m.checkPermission(c, r.Key, nil, false)
	}
	return nil
}

func (m *member) checkDeletePermission(c auth.Caller, r *pb.DeleteRangeRequest) error {
	if err := m.checkPermission(c, r.Key, rangeEnd(r.RangeEnd), true); err != nil {
		return err
	}
	if r.PrevKv {
		return m.checkPermission(c, r.Key, rangeEnd(r.RangeEnd), false)
	}
	return nil
}

// authServer is etcd's Auth service. Changes go through the log; the
// caller's rights are checked when they apply, against the auth state of
// that moment.
type authServer struct {
	pb.UnimplementedAuthServer
	m *member
}

func (s *authServer) change(ctx context.Context, req *pb.InternalRaftRequest) (*pb.ResponseHeader, error) {
	resp, err := s.m.propose(ctx, req)
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
	if err := s.m.linearizableRead(ctx); err != nil {
		return nil, err
	}
	enabled, rev := s.m.eng.AuthStatus()
	return &pb.AuthStatusResponse{Header: s.m.header(s.m.eng.Rev()), Enabled: enabled, AuthRevision: rev}, nil
}

func (s *authServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	if !s.m.tokens.CanSign() {
		return nil, status.Error(codes.Unknown, auth.ErrVerifyOnly.Error())
	}
	// The password is checked here, not in the log, which carries none.
	if _, err := s.m.eng.CheckPassword(r.Name, r.Password); err != nil {
		return nil, grpcError(err)
	}
	resp, err := s.m.propose(ctx, &pb.InternalRaftRequest{Authenticate: &pb.InternalAuthenticateRequest{
		Name: r.Name, SimpleToken: auth.NewPrefix()}})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.AuthenticateResponse), nil
}

// hashPassword is what a user change carries into the log: a bcrypt hash,
// given by the client or made here.
func (m *member) hashPassword(password string, hashed string, noPassword bool) (string, error) {
	if noPassword || hashed != "" {
		return hashed, nil
	}
	h, err := engine.HashPassword(password, m.cfg.BcryptCost)
	if err != nil {
		return "", fmt.Errorf("hashing the password: %w", err)
	}
	return string(h), nil
}

func (s *authServer) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	noPassword := r.Options != nil && r.Options.NoPassword
	h, err := s.m.hashPassword(r.Password, r.HashedPassword, noPassword)
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
	if err := s.readAdmin(ctx); err != nil {
		return nil, err
	}
	roles, err := s.m.eng.UserGet(r.Name)
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.AuthUserGetResponse{Header: s.m.header(s.m.eng.Rev()), Roles: roles}, nil
}

func (s *authServer) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	if err := s.readAdmin(ctx); err != nil {
		return nil, err
	}
	return &pb.AuthUserListResponse{Header: s.m.header(s.m.eng.Rev()), Users: s.m.eng.UserList()}, nil
}

func (s *authServer) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	h, err := s.change(ctx, &pb.InternalRaftRequest{AuthUserDelete: r})
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserDeleteResponse{Header: h}, nil
}

func (s *authServer) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	h, err := s.m.hashPassword(r.Password, r.HashedPassword, false)
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
	if err := s.readAdmin(ctx); err != nil {
		return nil, err
	}
	perms, err := s.m.eng.RoleGet(r.Role)
	if err != nil {
		return nil, grpcError(err)
	}
	resp := &pb.AuthRoleGetResponse{Header: s.m.header(s.m.eng.Rev())}
	for _, p := range perms {
		resp.Perm = append(resp.Perm, &authpb.Permission{PermType: authpb.Permission_Type(p.Type), Key: p.Key, RangeEnd: p.RangeEnd})
	}
	return resp, nil
}

func (s *authServer) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	if err := s.readAdmin(ctx); err != nil {
		return nil, err
	}
	return &pb.AuthRoleListResponse{Header: s.m.header(s.m.eng.Rev()), Roles: s.m.eng.RoleList()}, nil
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
func (s *authServer) readAdmin(ctx context.Context) error {
	if err := s.m.authorizeAdmin(ctx); err != nil {
		return err
	}
	return s.m.linearizableRead(ctx)
}

// authChange returns, for an auth change from the log, the engine call
// that applies it (first checking that its sender may make it, against
// the auth state of that moment) and the response to give once applied;
// f is nil for a request that is not an auth change.
func (m *member) authChange(index uint64, c auth.Caller, req *pb.InternalRaftRequest) (f func() error, resp func() proto.Message) {
	e := m.eng
	header := func() proto.Message { return m.header(e.Rev()) }
	var change func() error
	switch {
	case req.Authenticate != nil:
		r := req.Authenticate
		var out pb.AuthenticateResponse
		change = func() error {
			enabled, rev := e.AuthStatus()
			if !enabled {
				return engine.ErrAuthNotEnabled
			}
			if _, err := e.UserGet(r.Name); err != nil {
				return engine.ErrAuthFailed
			}
			token, err := m.tokens.Assign(r.SimpleToken, index, r.Name, rev)
			if err != nil {
				// Not the store failing: this request's refusal.
				m.log.Warn("minting an auth token failed", "user", r.Name, "error", err)
				return engine.ErrAuthFailed
			}
			out.Token = token
			return nil
		}
		// Not an admin's change: anyone may authenticate.
		return change, func() proto.Message { out.Header = m.header(e.Rev()); return &out }
	case req.AuthEnable != nil:
		change = e.AuthEnable
	case req.AuthDisable != nil:
		change = e.AuthDisable
	case req.AuthUserAdd != nil:
		r := req.AuthUserAdd
		change = func() error {
			return e.UserAdd(r.Name, []byte(r.HashedPassword), r.Options != nil && r.Options.NoPassword)
		}
	case req.AuthUserDelete != nil:
		change = func() error { return e.UserDelete(req.AuthUserDelete.Name) }
	case req.AuthUserChangePassword != nil:
		r := req.AuthUserChangePassword
		change = func() error { return e.UserChangePassword(r.Name, []byte(r.HashedPassword)) }
	case req.AuthUserGrantRole != nil:
		change = func() error { return e.UserGrantRole(req.AuthUserGrantRole.User, req.AuthUserGrantRole.Role) }
	case req.AuthUserRevokeRole != nil:
		change = func() error { return e.UserRevokeRole(req.AuthUserRevokeRole.Name, req.AuthUserRevokeRole.Role) }
	case req.AuthRoleAdd != nil:
		change = func() error { return e.RoleAdd(req.AuthRoleAdd.Name) }
	case req.AuthRoleDelete != nil:
		change = func() error { return e.RoleDelete(req.AuthRoleDelete.Role) }
	case req.AuthRoleGrantPermission != nil:
		r := req.AuthRoleGrantPermission
		change = func() error {
			if r.Perm == nil {
				return engine.ErrPermissionNotGiven
			}
			return e.RoleGrantPermission(r.Name, &engine.Permission{Type: engine.PermType(r.Perm.PermType), Key: r.Perm.Key, RangeEnd: r.Perm.RangeEnd})
		}
	case req.AuthRoleRevokePermission != nil:
		r := req.AuthRoleRevokePermission
		change = func() error { return e.RoleRevokePermission(r.Role, r.Key, r.RangeEnd) }
	default:
		return nil, nil
	}
	return func() error {
		if err := e.IsAdminPermitted(c.Name); err != nil {
			return err
		}
		return change()
	}, header
}

// authApplied follows an applied auth change: a deleted user's tokens,
// and those of a user with a new password, end.
func (m *member) authApplied(req *pb.InternalRaftRequest) {
	switch {
	case req.AuthUserDelete != nil:
		m.tokens.InvalidateUser(req.AuthUserDelete.Name)
	case req.AuthUserChangePassword != nil:
		m.tokens.InvalidateUser(req.AuthUserChangePassword.Name)
	}
}
