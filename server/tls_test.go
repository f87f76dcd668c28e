package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/testcert"
)

// TestClientCertAuth: TLS with client certificates required; a client
// without one is turned away; with auth on, the certificate's common name
// is the user.
func TestClientCertAuth(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.New(t, dir)
	srvCert, srvKey := ca.Issue(t, dir, "server", true)
	s, _, _ := startMemberWith(t, filepath.Join(dir, "data"), func(cfg *Config) {
		cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
		cfg.CertFile, cfg.KeyFile, cfg.TrustedCAFile, cfg.ClientCertAuth = srvCert, srvKey, ca.File, true
		cfg.BcryptCost = 4
	})
	ep := s.ClientURLs()[0]
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	client := func(cn string) *clientv3.Client {
		t.Helper()
		tc := &tls.Config{RootCAs: pool}
		if cn != "" {
			cf, kf := ca.Issue(t, dir, cn, false)
			pair, err := tls.LoadX509KeyPair(cf, kf)
			if err != nil {
				t.Fatal(err)
			}
			tc.Certificates = []tls.Certificate{pair}
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: tc, DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// gateway posts a range through the HTTP gateway with the certificate
	// of cn; it returns the status and the body.
	gateway := func(cn string) (int, string) {
		t.Helper()
		cf, kf := ca.Issue(t, dir, cn, false)
		pair, err := tls.LoadX509KeyPair(cf, kf)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Post(ep+"/v3/kv/range", "application/json", strings.NewReader(`{"key":"aw=="}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	ctx := ctxT(t)
	root := client("root")
	if _, err := root.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put over TLS with a client certificate: %v", err)
	}
	if code, body := gateway("root"); code != http.StatusOK || !strings.Contains(body, `"count":"1"`) {
		t.Fatalf("gateway with a client certificate, auth off: %d %s", code, body)
	}
	for _, f := range []func() (any, error){
		func() (any, error) { return root.UserAdd(ctx, "root", "pw") },
		func() (any, error) { return root.UserGrantRole(ctx, "root", "root") },
		func() (any, error) { return root.UserAdd(ctx, "carol", "pw") },
		func() (any, error) { return root.AuthEnable(ctx) },
	} {
		if _, err := f(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := root.Put(ctx, "k", "v2"); err != nil {
		t.Fatalf("root by its certificate: %v", err)
	}
	// With auth on, the gateway refuses a certificate's common name (its
	// calls would not carry it), as etcd does.
	const refused = "CommonName of client sending a request against gateway will be ignored and not used as expected"
	if code, body := gateway("root"); code != http.StatusBadRequest || strings.TrimSpace(body) != refused {
		t.Fatalf("gateway with a client certificate, auth on: %d %s", code, body)
	}
	if _, err := client("carol").Get(ctx, "k"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Fatalf("carol by her certificate: %v", err)
	}
	noCert, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: &tls.Config{RootCAs: pool}, DialTimeout: time.Second})
	if err == nil {
		defer noCert.Close()
		shortCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err = noCert.Get(shortCtx, "k"); err == nil {
			t.Fatal("a client without a certificate was served")
		}
	}
}

// TestAutoTLS: --auto-tls serves https with a self-signed certificate,
// gRPC and HTTP alike.
func TestAutoTLS(t *testing.T) {
	s, _, _ := startMemberWith(t, filepath.Join(t.TempDir(), "data"), func(cfg *Config) {
		cfg.ListenClientURLs = []string{"https://127.0.0.1:0"}
		cfg.AutoTLS = true
	})
	ep := s.ClientURLs()[0]
	tc := &tls.Config{InsecureSkipVerify: true}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, TLS: tc, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Put(ctxT(t), "k", "v"); err != nil {
		t.Fatalf("put over auto TLS: %v", err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := hc.Get(ep + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/health over TLS: %d", resp.StatusCode)
	}
}
