package server

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testcert"
)

// TestClusterPeerTLS: three members over https peer URLs with etcd's peer
// flags (certificates from one CA, --peer-client-cert-auth,
// --peer-cert-allowed-cn) form a cluster and replicate; another three
// with --peer-auto-tls do too.
func TestClusterPeerTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.New(t, dir)
	certFile, keyFile := ca.IssueFor(t, dir, "peer", true, true)
	for name, p := range map[string]PeerTLS{
		"ca":   {CertFile: certFile, KeyFile: keyFile, TrustedCAFile: ca.File, ClientCertAuth: true, AllowedCNs: []string{"peer"}},
		"auto": {AutoTLS: true},
	} {
		t.Run(name, func(t *testing.T) {
			c := startClusterWith(t, 3, "https", func(cfg *Config) { cfg.PeerTLS = p })
			lead := c.leader()
			ctx := ctxT(t)
			_, err := c.clients[(lead+1)%3].Put(ctx, "k", "over tls")
			require.NoError(t, err)
			resp, err := c.clients[(lead+2)%3].Get(ctx, "k")
			require.NoError(t, err)
			require.Len(t, resp.Kvs, 1)
		})
	}
}

// TestPeerTLSRefusals: the peer listener turns away a member whose
// certificate has another common name (--peer-cert-allowed-cn), is not
// valid for the allowed host name (--peer-cert-allowed-hostname), is
// revoked (--peer-crl-file), or is missing (--peer-client-cert-auth);
// a certificate that passes is let in.
func TestPeerTLSRefusals(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.New(t, dir)
	good, goodKey := ca.IssueFor(t, dir, "peer", true, true)
	other, otherKey := ca.IssueFor(t, dir, "intruder", true, true)
	elsewhere, elsewhereKey := ca.IssueAt(t, dir, "elsewhere", net.IPv4(10, 9, 9, 9))
	crl := writeCRL(t, ca, dir, serialOf(t, other))
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	for _, tc := range []struct {
		name      string
		listen    PeerTLS
		cert, key string
		want      string // "" to be let in
	}{
		{"allowed cn", PeerTLS{CertFile: good, KeyFile: goodKey, TrustedCAFile: ca.File, ClientCertAuth: true, AllowedCNs: []string{"peer"}}, good, goodKey, ""},
		{"other cn", PeerTLS{CertFile: good, KeyFile: goodKey, TrustedCAFile: ca.File, ClientCertAuth: true, AllowedCNs: []string{"peer"}}, other, otherKey, "not one of the allowed"},
		{"allowed hostname", PeerTLS{CertFile: good, KeyFile: goodKey, TrustedCAFile: ca.File, ClientCertAuth: true, AllowedHostnames: []string{"127.0.0.1"}}, good, goodKey, ""},
		{"hostname", PeerTLS{CertFile: good, KeyFile: goodKey, TrustedCAFile: ca.File, ClientCertAuth: true, AllowedHostnames: []string{"cairn.example", "other.example"}}, good, goodKey, "allowed host names"},
		{"revoked", PeerTLS{CertFile: good, KeyFile: goodKey, TrustedCAFile: ca.File, ClientCertAuth: true, CRLFile: crl}, other, otherKey, "revoked"},
		{"no certificate", PeerTLS{CertFile: good, KeyFile: goodKey, TrustedCAFile: ca.File, ClientCertAuth: true}, "", "", "certificate"},
		{"elsewhere", PeerTLS{CertFile: good, KeyFile: goodKey, TrustedCAFile: ca.File, ClientCertAuth: true}, elsewhere, elsewhereKey, `"127.0.0.1" does not match`},
		{"elsewhere, SAN not verified", PeerTLS{CertFile: good, KeyFile: goodKey, TrustedCAFile: ca.File, ClientCertAuth: true, SkipClientSANVerify: true}, elsewhere, elsewhereKey, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listenCfg, _, err := peerTLS(tc.listen, TLSPolicy{}, dir, nil, log)
			require.NoError(t, err)
			dialCfg := &tls.Config{RootCAs: listenCfg.ClientCAs, ServerName: "127.0.0.1"}
			if tc.cert != "" {
				cert, err := tls.LoadX509KeyPair(tc.cert, tc.key)
				require.NoError(t, err)
				dialCfg.Certificates = []tls.Certificate{cert}
			}
			got := handshake(t, listenCfg, dialCfg)
			if tc.want == "" {
				require.Empty(t, got)
			} else {
				require.Contains(t, got, tc.want)
			}
		})
	}
}

// handshake runs a TLS handshake over 127.0.0.1 and returns the server's
// error ("" if none).
func handshake(t *testing.T, listenCfg, dialCfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		errc <- tls.Server(c, listenCfg).Handshake()
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	_ = tls.Client(a, dialCfg).Handshake()
	a.Close()
	select {
	case err := <-errc:
		if err == nil {
			return ""
		}
		return err.Error()
	case <-time.After(10 * time.Second):
		t.Fatal("handshake did not end")
		return ""
	}
}

func serialOf(t *testing.T, certFile string) *big.Int {
	t.Helper()
	data, err := os.ReadFile(certFile)
	require.NoError(t, err)
	b, _ := pem.Decode(data)
	c, err := x509.ParseCertificate(b.Bytes)
	require.NoError(t, err)
	return c.SerialNumber
}

// writeCRL writes a CRL signed by ca revoking serial, as PEM.
func writeCRL(t *testing.T, ca *testcert.CA, dir string, serial *big.Int) string {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: serial, RevocationTime: time.Now()}}}, ca.Cert, ca.Key)
	require.NoError(t, err)
	path := filepath.Join(dir, "crl.pem")
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o600))
	return path
}
