package server

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// sameStatus reports whether err is want's gRPC status: code and message.
func sameStatus(err, want error) bool {
	got, ok := status.FromError(err)
	w := status.Convert(want)
	return ok && got.Code() == w.Code() && got.Message() == w.Message()
}

// TestAuthThroughClient: users, roles and permissions; once auth is on,
// every RPC checks who asks (no token, a bad token, a token older than
// the last auth change, a user without the right) with etcd's errors,
// watch and txn included; root may do anything; auth off again.
func TestAuthThroughClient(t *testing.T) {
	// bcrypt's least cost: the test hashes and checks many passwords, and
	// the race detector slows bcrypt tenfold.
	s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "data"), func(cfg *Config) { cfg.BcryptCost = 4 })
	ctx := ctxT(t)
	ep := s.ClientURLs()[0]
	if _, err := c.Authenticate(ctx, "root", "pw"); !errors.Is(err, rpctypes.ErrAuthNotEnabled) {
		t.Fatalf("authenticate with auth off: %v", err)
	}
	if _, err := c.AuthEnable(ctx); !errors.Is(err, rpctypes.ErrRootUserNotExist) {
		t.Fatalf("enable with no root: %v", err)
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.UserAdd(ctx, "root", "rootpw"))
	if _, err := c.AuthEnable(ctx); !errors.Is(err, rpctypes.ErrRootRoleNotExist) {
		t.Fatalf("enable with root lacking the root role: %v", err)
	}
	must(c.UserGrantRole(ctx, "root", "root"))
	must(c.RoleAdd(ctx, "reader"))
	must(c.RoleGrantPermission(ctx, "reader", "pub/", clientv3.GetPrefixRangeEnd("pub/"), clientv3.PermissionType(clientv3.PermRead)))
	must(c.UserAdd(ctx, "alice", "alicepw"))
	must(c.UserGrantRole(ctx, "alice", "reader"))
	if _, err := c.UserAdd(ctx, "alice", "x"); !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
		t.Fatalf("second alice: %v", err)
	}
	must(c.Put(ctx, "pub/x", "1"))
	must(c.Put(ctx, "secret", "s"))
	must(c.AuthEnable(ctx))

	// No token.
	if _, err := c.Put(ctx, "pub/x", "2"); !errors.Is(err, rpctypes.ErrUserEmpty) {
		t.Fatalf("put with no token: %v", err)
	}
	if _, err := c.Get(ctx, "pub/x"); !errors.Is(err, rpctypes.ErrUserEmpty) {
		t.Fatalf("get with no token: %v", err)
	}
	// A bad token, and a bad password.
	raw := pb.NewKVClient(rawConn(t, ep))
	bad := metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, "bogus.1")
	if _, err := raw.Range(bad, &pb.RangeRequest{Key: []byte("pub/x")}); !sameStatus(err, rpctypes.ErrGRPCInvalidAuthToken) {
		t.Fatalf("get with a bad token: %v", err)
	}
	if _, err := c.Authenticate(ctx, "alice", "wrong"); !errors.Is(err, rpctypes.ErrAuthFailed) {
		t.Fatalf("bad password: %v", err)
	}

	client := func(user, pw string) *clientv3.Client {
		t.Helper()
		uc, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, Username: user, Password: pw, DialTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { uc.Close() })
		return uc
	}
	root, alice := client("root", "rootpw"), client("alice", "alicepw")
	if get, err := alice.Get(ctx, "pub/x"); err != nil || string(get.Kvs[0].Value) != "1" {
		t.Fatalf("alice reads pub/x: %+v %v", get, err)
	}
	for name, err := range map[string]error{
		"alice puts pub/x":   func() error { _, err := alice.Put(ctx, "pub/x", "2"); return err }(),
		"alice reads secret": func() error { _, err := alice.Get(ctx, "secret"); return err }(),
		"alice compares secret": func() error {
			_, err := alice.Txn(ctx).If(clientv3.Compare(clientv3.Value("secret"), "=", "s")).Then(clientv3.OpGet("pub/x")).Commit()
			return err
		}(),
		"alice deletes pub/x": func() error { _, err := alice.Delete(ctx, "pub/x"); return err }(),
		"alice adds a user":   func() error { _, err := alice.UserAdd(ctx, "bob", "x"); return err }(),
	} {
		if !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Errorf("%s: %v, want permission denied", name, err)
		}
	}
	// Defragment refuses with the auth store's own error, as etcd's does.
	if _, err := alice.Defragment(ctx, ep); status.Code(err) != codes.Unknown || status.Convert(err).Message() != "auth: permission denied" {
		t.Errorf("alice defragments: %v, want Unknown: auth: permission denied", err)
	}
	w := alice.Watch(ctx, "secret")
	r := nextWatch(t, w)
	if !r.Canceled || !strings.Contains(r.Err().Error(), "permission denied") {
		t.Fatalf("alice watches secret: %+v %v", r, r.Err())
	}
	if _, err := root.Put(ctx, "secret", "t"); err != nil {
		t.Fatalf("root puts: %v", err)
	}
	if _, err := root.UserDelete(ctx, "root"); !errors.Is(err, rpctypes.ErrInvalidAuthMgmt) {
		t.Fatalf("deleting root while auth is on: %v", err)
	}

	// A simple token is checked as of the current auth revision (as
	// etcd's): an auth change does not make it old.
	tok, err := c.Authenticate(ctx, "alice", "alicepw")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(tok.Token, ".") || len(strings.SplitN(tok.Token, ".", 2)[0]) != 16 {
		t.Fatalf("simple token %q", tok.Token)
	}
	withTok := metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, tok.Token)
	if _, err := raw.Range(withTok, &pb.RangeRequest{Key: []byte("pub/x")}); err != nil {
		t.Fatalf("get with alice's token: %v", err)
	}
	if _, err := root.RoleGrantPermission(ctx, "reader", "more/", "", clientv3.PermissionType(clientv3.PermRead)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Range(withTok, &pb.RangeRequest{Key: []byte("more/")}); err != nil {
		t.Fatalf("get of what the auth change granted, with a token from before it: %v", err)
	}
	// A changed password ends the user's tokens.
	if _, err := root.UserChangePassword(ctx, "alice", "newpw"); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Range(metadata.AppendToOutgoingContext(context.Background(), rpctypes.TokenFieldNameGRPC, tok.Token),
		&pb.RangeRequest{Key: []byte("pub/x")}); !sameStatus(err, rpctypes.ErrGRPCInvalidAuthToken) {
		t.Fatalf("get with a token of a changed password: %v", err)
	}
	users, err := root.UserList(ctx)
	if err != nil || strings.Join(users.Users, ",") != "alice,root" {
		t.Fatalf("users: %+v %v", users, err)
	}
	role, err := root.RoleGet(ctx, "reader")
	if err != nil || len(role.Perm) != 2 {
		t.Fatalf("role reader: %+v %v", role, err)
	}

	if _, err := root.AuthDisable(ctx); err != nil {
		t.Fatal(err)
	}
	if get, err := c.Get(ctx, "secret"); err != nil || string(get.Kvs[0].Value) != "t" {
		t.Fatalf("get with auth off: %+v %v", get, err)
	}
	if st, err := c.AuthStatus(ctx); err != nil || st.Enabled || st.AuthRevision < 2 {
		t.Fatalf("auth status: %+v %v", st, err)
	}
}
