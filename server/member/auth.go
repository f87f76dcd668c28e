package member

import (
	"context"
	"fmt"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/server/auth"
	"github.com/cairn-kv/cairn/server/convert"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"
)

// authenticate returns who sent the request. While auth is off nobody is
// checked; with it on, a token in the metadata ("token", or the gateway's
// "authorization") must be valid, and with client-certificate auth a
// verified certificate's common name is the user when no token is given.
func (m *Member) Authenticate(ctx context.Context) (auth.Caller, error) {
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
				if c.Rev == 0 {
					c.Rev = rev // a simple token: checked as of now
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

// RequireUser is Authenticate for the requests etcd serves to any user
// but not to an anonymous caller while auth is on ("user name is empty").
func (m *Member) RequireUser(ctx context.Context) (auth.Caller, error) {
	c, err := m.Authenticate(ctx)
	if err != nil {
		return c, err
	}
	if enabled, _ := m.eng.AuthStatus(); enabled && c.Name == "" {
		return c, rpctypes.ErrGRPCUserEmpty
	}
	return c, nil
}

// checkPermission checks that c may read (or write) [key, end).
func (m *Member) CheckPermission(c auth.Caller, key, end []byte, write bool) error {
	return convert.Error(m.eng.IsPermitted(c.Name, c.Rev, key, end, write))
}

// checkAdmin checks that c may manage auth and the cluster.
func (m *Member) checkAdmin(c auth.Caller) error {
	return convert.Error(m.eng.IsAdminPermitted(c.Name))
}

// authorizeAdmin checks that the sender of a request may manage auth and
// the cluster: it holds the root role (anyone, while auth is off).
func (m *Member) AuthorizeAdmin(ctx context.Context) error {
	c, err := m.Authenticate(ctx)
	if err != nil {
		return err
	}
	return m.checkAdmin(c)
}

// checkTxnPermission checks every compare and operation of a
// transaction, nested ones too, as etcd does: compares and ranges read,
// puts and deletes write (and read, with prev_kv).
func (m *Member) checkTxnPermission(c auth.Caller, r *pb.TxnRequest) error {
	for _, cmp := range r.Compare {
		if err := m.CheckPermission(c, cmp.Key, convert.RangeEnd(cmp.RangeEnd), false); err != nil {
			return err
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			var err error
			switch q := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				err = m.CheckPermission(c, q.RequestRange.Key, convert.RangeEnd(q.RequestRange.RangeEnd), false)
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

func (m *Member) checkPutPermission(c auth.Caller, r *pb.PutRequest) error {
	if err := m.CheckPermission(c, r.Key, nil, true); err != nil {
		return err
	}
	if r.PrevKv {
		return m.CheckPermission(c, r.Key, nil, false)
	}
	return nil
}

func (m *Member) checkDeletePermission(c auth.Caller, r *pb.DeleteRangeRequest) error {
	if err := m.CheckPermission(c, r.Key, convert.RangeEnd(r.RangeEnd), true); err != nil {
		return err
	}
	if r.PrevKv {
		return m.CheckPermission(c, r.Key, convert.RangeEnd(r.RangeEnd), false)
	}
	return nil
}

// hashPassword is what a user change carries into the log: a bcrypt hash,
// given by the client or made here.
func (m *Member) HashPassword(password string, hashed string, noPassword bool) (string, error) {
	if noPassword || hashed != "" {
		return hashed, nil
	}
	h, err := engine.HashPassword(password, m.cfg.BcryptCost)
	if err != nil {
		return "", fmt.Errorf("hashing the password: %w", err)
	}
	return string(h), nil
}

// authChange returns, for an auth change from the log, the engine call
// that applies it (first checking that its sender may make it, against
// the auth state of that moment) and the response to give once applied;
// f is nil for a request that is not an auth change.
func (m *Member) authChange(index uint64, c auth.Caller, req *pb.InternalRaftRequest) (f func() error, resp func() proto.Message) {
	e := m.eng
	header := func() proto.Message { return m.Header(e.Rev()) }
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
		return change, func() proto.Message { out.Header = m.Header(e.Rev()); return &out }
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
// and those of a user with a new password, end; auth turned off ends
// every token.
func (m *Member) authApplied(req *pb.InternalRaftRequest) {
	switch {
	case req.AuthDisable != nil:
		m.tokens.InvalidateAll()
	case req.AuthUserDelete != nil:
		m.tokens.InvalidateUser(req.AuthUserDelete.Name)
	case req.AuthUserChangePassword != nil:
		m.tokens.InvalidateUser(req.AuthUserChangePassword.Name)
	}
}
