package server

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testcert"
)

// TestTLSPolicy: --cipher-suites, --tls-min-version and --tls-max-version
// decide what a client may negotiate, on the client and the peer ports;
// what etcd refuses is refused with its message.
func TestTLSPolicy(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.New(t, dir)
	srvCert, srvKey := ca.Issue(t, dir, "server", true)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	suite := tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
	for _, tc := range []struct {
		name   string
		policy TLSPolicy
		client *tls.Config
		want   string // the server's handshake error, "" for none
	}{
		{"defaults", TLSPolicy{}, &tls.Config{}, ""},
		{"TLS 1.1 refused", TLSPolicy{}, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, "unsupported versions"},
		{"TLS 1.3 only", TLSPolicy{MinVersion: "TLS1.3"}, &tls.Config{MaxVersion: tls.VersionTLS12}, "unsupported versions"},
		{"TLS 1.2 at most", TLSPolicy{MaxVersion: "TLS1.2"}, &tls.Config{MinVersion: tls.VersionTLS13}, "unsupported versions"},
		{"suite offered", TLSPolicy{CipherSuites: []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}, MaxVersion: "TLS1.2"},
			&tls.Config{CipherSuites: []uint16{suite}}, ""},
		{"suite not offered", TLSPolicy{CipherSuites: []string{"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}, MaxVersion: "TLS1.2"},
			&tls.Config{CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}}, "no cipher suite supported by both"},
		{"etcd's name for CHACHA20", TLSPolicy{CipherSuites: []string{"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"}, MaxVersion: "TLS1.2"},
			&tls.Config{CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.CertFile, cfg.KeyFile, cfg.TLS = srvCert, srvKey, tc.policy
			client := tc.client.Clone()
			client.RootCAs, client.ServerName = pool, "127.0.0.1"
			serverCfg, err := serverTLS(&cfg, log)
			require.NoError(t, err)
			peerCfg, _, err := peerTLS(PeerTLS{CertFile: srvCert, KeyFile: srvKey}, tc.policy, dir, nil, log)
			require.NoError(t, err)
			for port, c := range map[string]*tls.Config{"client": serverCfg, "peer": peerCfg} {
				got := handshake(t, c, client)
				if tc.want == "" {
					require.Empty(t, got, port)
				} else {
					require.Contains(t, got, tc.want, port)
				}
			}
		})
	}
	for _, tc := range []struct {
		policy TLSPolicy
		says   string
	}{
		{TLSPolicy{MinVersion: "TLS1.1"}, `unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)`},
		{TLSPolicy{MaxVersion: "tls1.3"}, `unexpected TLS version "tls1.3" (must be one of: TLS1.2, TLS1.3)`},
		{TLSPolicy{MinVersion: "TLS1.3", MaxVersion: "TLS1.2"}, "min version (TLS1.3) is greater than max version (TLS1.2)"},
		{TLSPolicy{MinVersion: "TLS1.3", CipherSuites: []string{"TLS_AES_128_GCM_SHA256"}}, "cipher suites cannot be configured when only TLS1.3 is enabled"},
		{TLSPolicy{CipherSuites: []string{"TLS_NO_SUCH"}}, `unexpected TLS cipher suite "TLS_NO_SUCH"`},
	} {
		require.EqualError(t, tc.policy.Check(), tc.says)
		cfg := DefaultConfig()
		cfg.TLS = tc.policy
		_, err := Start(cfg)
		require.EqualError(t, err, tc.says, "Start refuses it before opening anything")
	}
}

// TestClientCertChecks: --client-crl-file turns away a revoked client
// certificate, --client-cert-allowed-hostname one valid for none of the
// names; others are let in.
func TestClientCertChecks(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.New(t, dir)
	srvCert, srvKey := ca.Issue(t, dir, "server", true)
	good, goodKey := ca.IssueFor(t, dir, "good", true, true) // for 127.0.0.1
	revoked, revokedKey := ca.IssueFor(t, dir, "revoked", true, true)
	crl := writeCRL(t, ca, dir, serialOf(t, revoked))
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	for _, tc := range []struct {
		name      string
		set       func(*Config)
		cert, key string
		want      string
	}{
		{"not revoked", func(c *Config) { c.ClientCRLFile = crl }, good, goodKey, ""},
		{"revoked", func(c *Config) { c.ClientCRLFile = crl }, revoked, revokedKey, "is revoked"},
		{"allowed hostname", func(c *Config) { c.ClientCertAllowedHostnames = []string{"a.example", "127.0.0.1"} }, good, goodKey, ""},
		{"no allowed hostname", func(c *Config) { c.ClientCertAllowedHostnames = []string{"a.example"} }, good, goodKey, "not valid for any of the allowed host names"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.CertFile, cfg.KeyFile, cfg.TrustedCAFile, cfg.ClientCertAuth = srvCert, srvKey, ca.File, true
			tc.set(&cfg)
			serverCfg, err := serverTLS(&cfg, log)
			require.NoError(t, err)
			pair, err := tls.LoadX509KeyPair(tc.cert, tc.key)
			require.NoError(t, err)
			got := handshake(t, serverCfg, &tls.Config{RootCAs: serverCfg.ClientCAs, ServerName: "127.0.0.1", Certificates: []tls.Certificate{pair}})
			if tc.want == "" {
				require.Empty(t, got)
			} else {
				require.Contains(t, got, tc.want)
			}
		})
	}
}

// TestSelfSignedValidity: --self-signed-cert-validity sets the lifetime
// of --auto-tls's and --peer-auto-tls's certificates, in years.
func TestSelfSignedValidity(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg := DefaultConfig()
	cfg.DataDir, cfg.AutoTLS, cfg.TLS.SelfSignedCertValidity = dir, true, 3
	_, err := serverTLS(&cfg, log)
	require.NoError(t, err)
	_, _, err = peerTLS(PeerTLS{AutoTLS: true}, TLSPolicy{}, dir, nil, log)
	require.NoError(t, err)
	for dir, years := range map[string]int{"client": 3, "peer": 1} {
		data, err := os.ReadFile(filepath.Join(cfg.DataDir, "fixtures", dir, "cert.pem"))
		require.NoError(t, err)
		b, _ := pem.Decode(data)
		c, err := x509.ParseCertificate(b.Bytes)
		require.NoError(t, err)
		require.WithinDuration(t, time.Now().Add(time.Duration(years)*365*24*time.Hour), c.NotAfter, 2*time.Hour, dir)
	}
}

// TestPeerClientCert: --peer-client-cert-file and --peer-client-key-file
// are what a member presents when it dials; without them, its peer
// certificate.
func TestPeerClientCert(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.New(t, dir)
	srv, srvKey := ca.IssueFor(t, dir, "member", true, true)
	cli, cliKey := ca.IssueFor(t, dir, "member-client", false, true)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	for _, tc := range []struct {
		p    PeerTLS
		want string
	}{
		{PeerTLS{CertFile: srv, KeyFile: srvKey, TrustedCAFile: ca.File}, "member"},
		{PeerTLS{CertFile: srv, KeyFile: srvKey, ClientCertFile: cli, ClientKeyFile: cliKey, TrustedCAFile: ca.File}, "member-client"},
	} {
		_, dial, err := peerTLS(tc.p, TLSPolicy{}, dir, nil, log)
		require.NoError(t, err)
		presented, err := dial.GetClientCertificate(&tls.CertificateRequestInfo{})
		require.NoError(t, err)
		leaf, err := x509.ParseCertificate(presented.Certificate[0])
		require.NoError(t, err)
		require.Equal(t, tc.want, leaf.Subject.CommonName)
	}
	_, _, err := peerTLS(PeerTLS{CertFile: srv, KeyFile: srvKey, ClientCertFile: cli}, TLSPolicy{}, dir, nil, log)
	require.ErrorContains(t, err, "--peer-client-cert-file and --peer-client-key-file")
}
