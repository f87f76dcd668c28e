package server

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"math/big"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testcert"
)

// servedSerial runs a TLS handshake over 127.0.0.1 and returns the serial
// of the certificate the server presented, and of the one the client
// presented (nil if none).
func servedSerial(t *testing.T, listenCfg, dialCfg *tls.Config) (server, client *big.Int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	type result struct {
		st  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		s := tls.Server(c, listenCfg)
		err = s.Handshake()
		done <- result{s.ConnectionState(), err}
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer a.Close()
	c := tls.Client(a, dialCfg)
	require.NoError(t, c.Handshake())
	server = c.ConnectionState().PeerCertificates[0].SerialNumber
	select {
	case r := <-done:
		require.NoError(t, r.err)
		if len(r.st.PeerCertificates) > 0 {
			client = r.st.PeerCertificates[0].SerialNumber
		}
	case <-time.After(10 * time.Second):
		t.Fatal("handshake did not end")
	}
	return server, client
}

// touchLater moves a file's modification time a second on, so a rewrite
// within the file system's time granularity still reads as a change.
func touchLater(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	later := fi.ModTime().Add(time.Second)
	require.NoError(t, os.Chtimes(path, later, later))
}

// TestCertificateReload: a certificate replaced on disk is served from the
// next handshake on, on the client port and on the peer port (both as
// listener and as dialer); one that does not load (a half-written file)
// leaves the last good one served.
func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.New(t, dir)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	t.Run("client port", func(t *testing.T) {
		certFile, keyFile := ca.Issue(t, dir, "server", true)
		cfg := DefaultConfig()
		cfg.CertFile, cfg.KeyFile = certFile, keyFile
		tc, err := serverTLS(&cfg, log)
		require.NoError(t, err)
		dial := &tls.Config{RootCAs: certPoolOf(t, ca.File), ServerName: "127.0.0.1"}

		first, _ := servedSerial(t, tc, dial)
		require.Equal(t, serialOf(t, certFile), first)
		again, _ := servedSerial(t, tc, dial)
		require.Equal(t, first, again, "no change on disk, the same certificate")

		ca.Issue(t, dir, "server", true) // rotated: same files, new pair
		touchLater(t, certFile)
		rotated, _ := servedSerial(t, tc, dial)
		require.Equal(t, serialOf(t, certFile), rotated)
		require.NotEqual(t, first, rotated)

		require.NoError(t, os.WriteFile(certFile, []byte("-----BEGIN CERT"), 0o600))
		touchLater(t, certFile)
		kept, _ := servedSerial(t, tc, dial)
		require.Equal(t, rotated, kept, "a pair that does not load keeps the last good one")
	})

	t.Run("peer port", func(t *testing.T) {
		certFile, keyFile := ca.IssueAt(t, dir, "peer", net.IPv4(127, 0, 0, 1))
		listen, dial, err := peerTLS(PeerTLS{CertFile: certFile, KeyFile: keyFile, TrustedCAFile: ca.File, ClientCertAuth: true},
			TLSPolicy{}, dir, nil, log)
		require.NoError(t, err)
		dial = dial.Clone()
		dial.ServerName = "127.0.0.1"

		srv, cli := servedSerial(t, listen, dial)
		require.Equal(t, serialOf(t, certFile), srv)
		require.Equal(t, srv, cli, "a peer dials with its own certificate")

		ca.IssueAt(t, dir, "peer", net.IPv4(127, 0, 0, 1))
		touchLater(t, certFile)
		srv2, cli2 := servedSerial(t, listen, dial)
		require.Equal(t, serialOf(t, certFile), srv2)
		require.Equal(t, srv2, cli2)
		require.NotEqual(t, srv, srv2)
	})
}

func certPoolOf(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	pool, err := certPool("ca", file)
	require.NoError(t, err)
	return pool
}
