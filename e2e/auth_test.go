package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3lock/v3lockpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// outcome is what a call came to: "ok", or its gRPC code and message.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	if ee, ok := err.(rpctypes.EtcdError); ok {
		return fmt.Sprintf("%v: %s", ee.Code(), ee.Error())
	}
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%v: %s", s.Code(), s.Message())
	}
	return err.Error()
}

// authFixture is one server (cairn or etcd) set up for the auth table:
// root; alice, whose role "reader" reads pub/ and reads and writes
// alice/; bob with no role; keys pub/x, secret and alice/k; lease L with
// pub/l and secret/l attached; auth on.
type authFixture struct {
	m     *member
	priv  *rsa.PrivateKey // the server's JWT key, when it signs JWTs
	lease int64
	root  *clientv3.Client
	alice *clientv3.Client
	anon  *clientv3.Client
	conn  *grpc.ClientConn // no token of its own
}

func newAuthFixture(t *testing.T, m *member) *authFixture {
	t.Helper()
	m.waitHealthy()
	ctx := ctxE(t)
	c := dialE(t, m.url, "", "")
	steps := []func() error{
		func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.RoleAdd(ctx, "reader"); return err },
		func() error {
			_, err := c.RoleGrantPermission(ctx, "reader", "pub/", clientv3.GetPrefixRangeEnd("pub/"), clientv3.PermissionType(clientv3.PermRead))
			return err
		},
		func() error {
			_, err := c.RoleGrantPermission(ctx, "reader", "alice/", clientv3.GetPrefixRangeEnd("alice/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := c.UserAdd(ctx, "alice", "alicepw"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "alice", "reader"); return err },
		func() error { _, err := c.UserAdd(ctx, "bob", "bobpw"); return err },
		func() error { _, err := c.Put(ctx, "pub/x", "1"); return err },
		func() error { _, err := c.Put(ctx, "secret", "s"); return err },
		func() error { _, err := c.Put(ctx, "alice/k", "a"); return err },
	}
	for _, step := range steps {
		require.NoError(t, step())
	}
	f := &authFixture{m: m}
	l, err := c.Grant(ctx, 600)
	require.NoError(t, err)
	f.lease = int64(l.ID)
	_, err = c.Put(ctx, "pub/l", "1", clientv3.WithLease(l.ID))
	require.NoError(t, err)
	_, err = c.Put(ctx, "secret/l", "1", clientv3.WithLease(l.ID))
	require.NoError(t, err)
	_, err = c.AuthEnable(ctx)
	require.NoError(t, err)
	f.root, f.alice, f.anon = dialE(t, m.url, "root", "rootpw"), dialE(t, m.url, "alice", "alicepw"), c
	cc, err := grpc.NewClient(strings.TrimPrefix(m.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	f.conn = cc
	return f
}

func dialE(t *testing.T, url, user, pw string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, Username: user, Password: pw, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func ctxE(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// authCall is one row of the table: a call made as a caller.
type authCall struct {
	name string
	call func(ctx context.Context, f *authFixture, c *clientv3.Client) error
}

// authCalls covers every service of etcd's API; the calls that change
// state change it the same way on both servers (they run in the same
// order), and none takes the cluster's quorum away.
func authCalls() []authCall {
	grpcOf := func(f *authFixture, c *clientv3.Client) *grpc.ClientConn { return c.ActiveConnection() }
	return []authCall{
		{"kv range pub/x", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Get(ctx, "pub/x")
			return err
		}},
		{"kv range secret", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Get(ctx, "secret")
			return err
		}},
		{"kv range all", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Get(ctx, "", clientv3.WithFromKey())
			return err
		}},
		{"kv put pub/x", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Put(ctx, "pub/x", "2")
			return err
		}},
		{"kv put alice/k", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Put(ctx, "alice/k", "b")
			return err
		}},
		{"kv put alice/k prev_kv", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Put(ctx, "alice/k", "c", clientv3.WithPrevKV())
			return err
		}},
		{"kv delete secret", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Delete(ctx, "secret", clientv3.WithPrefix(), clientv3.WithPrevKV())
			return err
		}},
		{"kv txn compare secret", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Value("secret"), "=", "s")).Then(clientv3.OpGet("pub/x")).Commit()
			return err
		}},
		{"kv txn in alice/", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version("alice/k"), ">", 0)).Then(clientv3.OpPut("alice/t", "1")).Else(clientv3.OpGet("pub/x")).Commit()
			return err
		}},
		{"kv compact 1", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Compact(ctx, 1)
			return err
		}},
		{"watch secret", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			return watchOutcome(ctx, c, "secret")
		}},
		{"watch pub/x", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			return watchOutcome(ctx, c, "pub/x")
		}},
		{"lease grant", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Grant(ctx, 60)
			return err
		}},
		{"lease timetolive", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.TimeToLive(ctx, clientv3.LeaseID(f.lease))
			return err
		}},
		{"lease timetolive --keys", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.TimeToLive(ctx, clientv3.LeaseID(f.lease), clientv3.WithAttachedKeys())
			return err
		}},
		{"lease list", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Leases(ctx)
			return err
		}},
		{"lease keep-alive once", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.KeepAliveOnce(ctx, clientv3.LeaseID(f.lease))
			return err
		}},
		{"cluster member list", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.MemberList(ctx)
			return err
		}},
		{"cluster member add learner", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.MemberAddAsLearner(ctx, []string{"http://127.0.0.1:9"})
			return err
		}},
		{"cluster member remove unknown", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.MemberRemove(ctx, 12345)
			return err
		}},
		{"cluster member update unknown", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.MemberUpdate(ctx, 12345, []string{"http://127.0.0.1:10"})
			return err
		}},
		{"cluster member promote unknown", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.MemberPromote(ctx, 12345)
			return err
		}},
		{"maintenance status", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Status(ctx, f.m.url)
			return err
		}},
		{"maintenance alarm list", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.AlarmList(ctx)
			return err
		}},
		{"maintenance alarm disarm", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.AlarmDisarm(ctx, &clientv3.AlarmMember{})
			return err
		}},
		{"maintenance defragment", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Defragment(ctx, f.m.url)
			return err
		}},
		{"maintenance hash", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := pb.NewMaintenanceClient(grpcOf(f, c)).Hash(ctx, &pb.HashRequest{})
			return err
		}},
		{"maintenance hashkv", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.HashKV(ctx, f.m.url, 0)
			return err
		}},
		{"maintenance snapshot", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			rc, err := c.Snapshot(ctx)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(io.Discard, rc)
			return err
		}},
		{"maintenance downgrade validate", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := pb.NewMaintenanceClient(grpcOf(f, c)).Downgrade(ctx, &pb.DowngradeRequest{Action: pb.DowngradeRequest_VALIDATE, Version: "3.4.0"})
			return err
		}},
		{"maintenance move-leader unknown", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.MoveLeader(ctx, 12345)
			return err
		}},
		{"auth status", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.AuthStatus(ctx)
			return err
		}},
		{"auth user get alice", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.UserGet(ctx, "alice")
			return err
		}},
		{"auth user get bob", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.UserGet(ctx, "bob")
			return err
		}},
		{"auth user list", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.UserList(ctx)
			return err
		}},
		{"auth role get reader", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.RoleGet(ctx, "reader")
			return err
		}},
		{"auth role get root", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.RoleGet(ctx, "root")
			return err
		}},
		{"auth role list", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.RoleList(ctx)
			return err
		}},
		{"auth user add", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.UserAdd(ctx, "carol", "pw")
			return err
		}},
		{"auth user change password bob", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.UserChangePassword(ctx, "bob", "bobpw")
			return err
		}},
		{"auth role grant permission", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.RoleGrantPermission(ctx, "reader", "more/", "", clientv3.PermissionType(clientv3.PermRead))
			return err
		}},
		{"auth disable", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			if c == f.root {
				return fmt.Errorf("not asked of root (it would turn auth off)")
			}
			_, err := pb.NewAuthClient(grpcOf(f, c)).AuthDisable(ctx, &pb.AuthDisableRequest{})
			return err
		}},
		{"lock pub/lock", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			return lockOutcome(ctx, c, "pub/lock")
		}},
		{"lock alice/lock", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			return lockOutcome(ctx, c, "alice/lock")
		}},
		{"election leader pub/e", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := v3electionpb.NewElectionClient(grpcOf(f, c)).Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("pub/e")})
			return err
		}},
		{"election campaign alice/e", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			l, err := c.Grant(ctx, 60)
			if err != nil {
				return err
			}
			ec := v3electionpb.NewElectionClient(grpcOf(f, c))
			r, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("alice/e"), Lease: int64(l.ID), Value: []byte("v")})
			if err != nil {
				return err
			}
			_, err = ec.Resign(ctx, &v3electionpb.ResignRequest{Leader: r.Leader})
			return err
		}},
		{"lease revoke unknown", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			_, err := c.Revoke(ctx, 12345)
			return err
		}},
		{"lease revoke", func(ctx context.Context, f *authFixture, c *clientv3.Client) error {
			// Last: as root it deletes pub/l and secret/l.
			_, err := c.Revoke(ctx, clientv3.LeaseID(f.lease))
			return err
		}},
	}
}

// watchOutcome is a watch's first answer: created, or cancelled with
// its reason.
func watchOutcome(ctx context.Context, c *clientv3.Client, key string) error {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for r := range c.Watch(ctx, key, clientv3.WithCreatedNotify()) {
		if r.Canceled {
			return fmt.Errorf("cancelled: %v", r.Err())
		}
		return nil
	}
	return fmt.Errorf("the watch ended with no answer")
}

// lockOutcome takes and gives back a lock through the Lock service.
func lockOutcome(ctx context.Context, c *clientv3.Client, name string) error {
	l, err := c.Grant(ctx, 60)
	if err != nil {
		return err
	}
	lc := v3lockpb.NewLockClient(c.ActiveConnection())
	r, err := lc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte(name), Lease: int64(l.ID)})
	if err != nil {
		return err
	}
	_, err = lc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: r.Key})
	return err
}

// gatewayCalls are routes of the JSON gateway, each with its body.
var gatewayCalls = []struct{ route, body string }{
	{"/v3/kv/range", `{"key":"` + b64("pub/x") + `"}`},
	{"/v3/kv/range", `{"key":"` + b64("secret") + `"}`},
	{"/v3/kv/put", `{"key":"` + b64("pub/x") + `","value":"` + b64("3") + `"}`},
	{"/v3/kv/put", `{"key":"` + b64("alice/g") + `","value":"` + b64("3") + `"}`},
	{"/v3/kv/deleterange", `{"key":"` + b64("secret") + `"}`},
	{"/v3/kv/txn", `{"compare":[{"key":"` + b64("secret") + `","target":"VALUE","result":"EQUAL","value":"` + b64("s") + `"}]}`},
	{"/v3/kv/compaction", `{"revision":1}`},
	{"/v3/lease/grant", `{"TTL":60}`},
	{"/v3/lease/timetolive", `{"ID":LEASE,"keys":true}`},
	{"/v3/lease/timetolive", `{"ID":LEASE}`},
	{"/v3/lease/leases", `{}`},
	{"/v3/cluster/member/list", `{}`},
	{"/v3/maintenance/status", `{}`},
	{"/v3/maintenance/alarm", `{}`},
	{"/v3/maintenance/hash", `{}`},
	{"/v3/auth/status", `{}`},
	{"/v3/auth/user/get", `{"name":"alice"}`},
	{"/v3/auth/user/get", `{"name":"bob"}`},
	{"/v3/auth/user/list", `{}`},
	{"/v3/auth/role/get", `{"role":"reader"}`},
	{"/v3/auth/role/list", `{}`},
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// gateway posts body to route with token (none if empty) and returns the
// status and the error it carries ("code" and "message"/"error").
func gateway(t *testing.T, url, route, body, token string) string {
	t.Helper()
	req, err := http.NewRequest("POST", url+route, strings.NewReader(body))
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Error   string `json:"error"`
	}
	_ = json.NewDecoder(bytes.NewReader(raw)).Decode(&e)
	if resp.StatusCode == http.StatusOK {
		return "200"
	}
	return fmt.Sprintf("%d code %d: %s", resp.StatusCode, e.Code, e.Message)
}

// authTable runs every call as anonymous, alice and root, every gateway
// route with no token and alice's, and the token cases, and returns what
// each came to.
func authTable(t *testing.T, f *authFixture) map[string]string {
	got := map[string]string{}
	for _, caller := range []struct {
		name string
		c    *clientv3.Client
	}{{"anonymous", f.anon}, {"alice", f.alice}, {"root", f.root}} {
		for _, call := range authCalls() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			got[caller.name+" "+call.name] = outcome(call.call(ctx, f, caller.c))
			cancel()
		}
	}
	ctx := ctxE(t)
	tok, err := f.anon.Authenticate(ctx, "alice", "alicepw")
	require.NoError(t, err)
	for i, g := range gatewayCalls {
		body := strings.ReplaceAll(g.body, "LEASE", fmt.Sprint(f.lease))
		for _, who := range []struct{ name, token string }{{"anonymous", ""}, {"alice", tok.Token}} {
			got[fmt.Sprintf("gateway %d %s %s as %s", i, g.route, g.body, who.name)] = gateway(t, f.m.url, g.route, body, who.token)
		}
	}

	// Tokens: forged; of a user since deleted; older than an auth change.
	kv := pb.NewKVClient(f.conn)
	as := func(token string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, token)
	}
	get := func(token string) string {
		_, err := kv.Range(as(token), &pb.RangeRequest{Key: []byte("pub/x")})
		return outcome(err)
	}
	got["token forged"] = get("bogus.1")
	got["token alice"] = get(tok.Token)
	bob, err := f.anon.Authenticate(ctx, "bob", "bobpw")
	require.NoError(t, err)
	got["token bob before"] = get(bob.Token)
	_, err = f.root.RoleGrantPermission(ctx, "reader", "other/", "", clientv3.PermissionType(clientv3.PermRead))
	require.NoError(t, err)
	got["token alice after an auth change"] = get(tok.Token)
	_, err = f.root.UserDelete(ctx, "bob")
	require.NoError(t, err)
	got["token bob deleted"] = get(bob.Token)
	if f.priv != nil {
		sign := func(key *rsa.PrivateKey, exp time.Time) string {
			st, err := f.root.AuthStatus(ctx)
			require.NoError(t, err)
			tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
				"username": "alice", "revision": st.AuthRevision, "exp": exp.Unix()}).SignedString(key)
			require.NoError(t, err)
			return tok
		}
		other, err := rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		got["jwt made here"] = get(sign(f.priv, time.Now().Add(time.Hour)))
		got["jwt forged"] = get(sign(other, time.Now().Add(time.Hour)))
		got["jwt expired"] = get(sign(f.priv, time.Now().Add(-time.Minute)))
	}
	// Auth turned off and on again.
	tok, err = f.anon.Authenticate(ctx, "alice", "alicepw")
	require.NoError(t, err)
	_, err = f.root.AuthDisable(ctx)
	require.NoError(t, err)
	_, err = f.anon.AuthEnable(ctx)
	require.NoError(t, err)
	got["token alice from before auth was turned off and on"] = get(tok.Token)
	return got
}

// TestAuthTable: with auth on, every RPC of etcd's API and the gateway's
// routes, as an anonymous caller, a user without the permission (and
// with it, where it has one) and root, and tokens forged, of a deleted
// user and older than an auth change: cairn answers each as etcd 3.5
// does, the same refusal (code and message) or the same success. The
// answers are etcd's own, from an etcd 3.5 run beside it.
func TestAuthTable(t *testing.T) {
	t.Run("simple", func(t *testing.T) { testAuthTable(t, nil) })
	t.Run("jwt", func(t *testing.T) {
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		require.NoError(t, err)
		testAuthTable(t, priv)
	})
}

func testAuthTable(t *testing.T, priv *rsa.PrivateKey) {
	dir := t.TempDir()
	var flags []string
	if priv != nil {
		der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
		require.NoError(t, err)
		pub, key := filepath.Join(dir, "jwt.pub"), filepath.Join(dir, "jwt.key")
		require.NoError(t, os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
		require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}), 0o600))
		flags = []string{"--auth-token", "jwt,pub-key=" + pub + ",priv-key=" + key + ",sign-method=RS256,ttl=10m"}
	}
	cairn := newAuthFixture(t, spawnCairn(t, filepath.Join(dir, "cairn"), freeURL(t, "http"), flags...))
	etcd := newAuthFixture(t, spawnEtcd(t, filepath.Join(dir, "etcd"), freeURL(t, "http"), flags...))
	cairn.priv, etcd.priv = priv, priv
	ours, theirs := authTable(t, cairn), authTable(t, etcd)
	require.Equal(t, len(theirs), len(ours))
	refused := 0
	for k, want := range theirs {
		if ours[k] != want {
			t.Errorf("%s:\n  cairn: %s\n  etcd:  %s", k, ours[k], want)
		}
		if want != "ok" && want != "200" {
			refused++
		}
	}
	t.Logf("%d calls, %d refused by etcd", len(theirs), refused)
	if testing.Verbose() {
		keys := slices.Sorted(maps.Keys(theirs))
		for _, k := range keys {
			t.Logf("%s: %s", k, theirs[k])
		}
	}
	// What the table is for, said outright too.
	require.Equal(t, "PermissionDenied: etcdserver: permission denied", ours["alice lease timetolive --keys"])
	require.Equal(t, "ok", ours["alice lease timetolive"])
	require.Equal(t, "InvalidArgument: etcdserver: user name is empty", ours["anonymous kv range pub/x"])
	require.Equal(t, "ok", ours["alice auth user get alice"])
	if priv != nil {
		require.Equal(t, "ok", ours["jwt made here"])
		require.Equal(t, "Unauthenticated: etcdserver: invalid auth token", ours["jwt forged"])
		require.Equal(t, "Unauthenticated: etcdserver: invalid auth token", ours["jwt expired"])
	}
}
