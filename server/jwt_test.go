package server

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// rsaKeys writes an RSA key pair as PEM files in dir: the private key's
// path, then the public key's.
func rsaKeys(t *testing.T, dir string) (priv, pub string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub = filepath.Join(dir, "rsa"), filepath.Join(dir, "rsa.pub")
	for path, b := range map[string][]byte{
		priv: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
		pub:  pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}),
	} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return priv, pub
}

// TestJWTThroughClient: a member with --auth-token=jwt hands out signed
// tokens that clientv3 uses like simple ones; a token made before an auth
// change is refused as old, and the client carries on with a new one.
func TestJWTThroughClient(t *testing.T) {
	priv, pub := rsaKeys(t, t.TempDir())
	s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "data"), func(cfg *Config) {
		cfg.BcryptCost = 4
		cfg.AuthToken = "jwt,pub-key=" + pub + ",priv-key=" + priv + ",sign-method=RS256,ttl=10m"
	})
	ctx := ctxT(t)
	for _, f := range []func() error{
		func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.UserAdd(ctx, "bob", "bobpw"); return err },
		func() error { _, err := c.AuthEnable(ctx); return err },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: s.ClientURLs(), Username: "root", Password: "rootpw", DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if _, err := root.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	raw := pb.NewAuthClient(rawConn(t, s.ClientURLs()[0]))
	resp, err := raw.Authenticate(ctx, &pb.AuthenticateRequest{Name: "root", Password: "rootpw"})
	if err != nil {
		t.Fatal(err)
	}
	if parts := strings.Split(resp.Token, "."); len(parts) != 3 {
		t.Fatalf("token %q is not a JWT", resp.Token)
	}
	kv := pb.NewKVClient(rawConn(t, s.ClientURLs()[0]))
	withToken := metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, resp.Token)
	if _, err := kv.Put(withToken, &pb.PutRequest{Key: []byte("k2"), Value: []byte("v")}); err != nil {
		t.Fatalf("put with the JWT: %v", err)
	}
	// An auth change raises the revision: the token is now old.
	if _, err := root.UserGrantRole(ctx, "bob", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(withToken, &pb.PutRequest{Key: []byte("k2"), Value: []byte("v")}); !sameStatus(err, rpctypes.ErrGRPCAuthOldRevision) {
		t.Fatalf("put with a token older than the last auth change: %v", err)
	}
	// clientv3 takes a new token and goes on.
	if _, err := root.Put(ctx, "k3", "v"); err != nil {
		t.Fatalf("client after the auth change: %v", err)
	}
	bad := metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, resp.Token+"x")
	if _, err := kv.Range(bad, &pb.RangeRequest{Key: []byte("k")}); !sameStatus(err, rpctypes.ErrGRPCInvalidAuthToken) {
		t.Fatalf("range with a damaged JWT: %v", err)
	}
}
