package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/net/http2"

	"github.com/cairn-kv/cairn/internal/testcert"
	"github.com/cairn-kv/cairn/internal/testport"
)

// TestSocketReusePort: with --socket-reuse-port, another socket with
// SO_REUSEPORT binds the member's client and peer ports while it serves;
// without, the ports are taken.
func TestSocketReusePort(t *testing.T) {
	for _, reuse := range []bool{true, false} {
		ports := testport.Free(t, 2)
		client, peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		startMemberWith(t, filepath.Join(t.TempDir(), "m"), func(cfg *Config) {
			cfg.SocketOptions.ReusePort = reuse
			cfg.ListenClientURLs, cfg.AdvertiseClientURLs = []string{client}, []string{client}
			cfg.ListenPeerURLs, cfg.InitialAdvertisePeerURLs = []string{peer}, []string{peer}
		})
		for _, u := range []string{client, peer} {
			pu, _ := url.Parse(u)
			ln, err := SocketOptions{ReusePort: true}.listenConfig().Listen(context.Background(), "tcp", pu.Host)
			if reuse {
				require.NoError(t, err, "binding %s beside the member", u)
				ln.Close()
			} else {
				require.ErrorContains(t, err, "address already in use", u)
			}
		}
	}
}

// TestClientHTTPURLs: with --listen-client-http-urls, the HTTP side (the
// gateway, health) is served there, and the client URLs serve gRPC alone;
// with --enable-grpc-gateway=false there is no /v3/, but health stays.
func TestClientHTTPURLs(t *testing.T) {
	get := func(method, u, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, u, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "m"), func(cfg *Config) {
		cfg.ListenClientHTTPURLs = []string{"http://127.0.0.1:0"}
	})
	_, err := c.Put(ctxT(t), "k", "v")
	require.NoError(t, err, "gRPC on the client URL")
	code, _ := get("GET", s.ClientURLs()[0]+"/health", "")
	require.Equal(t, http.StatusNotFound, code, "HTTP on the client URL")
	code, body := get("GET", s.ClientHTTPURLs()[0]+"/health", "")
	require.Equal(t, http.StatusOK, code, body)
	code, body = get("POST", s.ClientHTTPURLs()[0]+"/v3/kv/range", `{"key":"aw=="}`)
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"count":"1"`)

	s, _, _ = startMemberWith(t, filepath.Join(t.TempDir(), "n"), func(cfg *Config) { cfg.NoGRPCGateway = true })
	code, _ = get("POST", s.ClientURLs()[0]+"/v3/kv/range", `{"key":"aw=="}`)
	require.Equal(t, http.StatusNotFound, code, "/v3/ with the gateway off")
	code, body = get("GET", s.ClientURLs()[0]+"/health", "")
	require.Equal(t, http.StatusOK, code, body)
}

// TestGRPCConnectionLimits: --max-concurrent-streams is what a client
// connection is told in SETTINGS, and with --grpc-keepalive-interval the
// member pings an idle connection, on a plain port (h2grpc) and on a TLS
// one (net/http's HTTP/2) alike.
func TestGRPCConnectionLimits(t *testing.T) {
	dir := t.TempDir()
	ca := testcert.New(t, dir)
	cert, key := ca.Issue(t, dir, "server", true)
	s, _, _ := startMemberWith(t, filepath.Join(dir, "m"), func(cfg *Config) {
		cfg.ListenClientURLs = []string{"http://127.0.0.1:0", "https://127.0.0.1:0"}
		cfg.CertFile, cfg.KeyFile = cert, key
		cfg.MaxConcurrentStreams = 7
		cfg.GRPCKeepAliveInterval, cfg.GRPCKeepAliveTimeout = 20*time.Millisecond, time.Minute
	})
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, u := range s.ClientURLs() {
		pu, _ := url.Parse(u)
		nc, err := net.Dial("tcp", pu.Host)
		require.NoError(t, err)
		defer nc.Close()
		if pu.Scheme == "https" {
			tc := tls.Client(nc, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
			require.NoError(t, tc.Handshake())
			nc = tc
		}
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = io.WriteString(nc, http2.ClientPreface)
		require.NoError(t, err)
		fr := http2.NewFramer(nc, nc)
		require.NoError(t, fr.WriteSettings())
		var streams uint32
		pinged := false
		for !pinged || streams == 0 {
			f, err := fr.ReadFrame()
			require.NoError(t, err, u)
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
					streams = v
				}
				if !f.IsAck() {
					require.NoError(t, fr.WriteSettingsAck())
				}
			case *http2.PingFrame:
				pinged = pinged || !f.IsAck()
			}
		}
		require.Equal(t, uint32(7), streams, u)
	}
}
