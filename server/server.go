// Package server runs a cairn member: it opens the member (server/member),
// registers etcd's gRPC services (server/v3rpc) on cairn's own cleartext
// HTTP/2 server and on grpc-go's for TLS, puts the HTTP gateway
// (server/gateway) beside them on every client URL, and serves the
// metrics URLs. Config is etcd's flags; Start and Stop are the whole
// lifecycle.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"

	"github.com/cairn-kv/cairn/internal/h2grpc"
	"github.com/cairn-kv/cairn/internal/rawconn"
	"github.com/cairn-kv/cairn/server/gateway"
	"github.com/cairn-kv/cairn/server/member"
	"github.com/cairn-kv/cairn/server/v3rpc"
)

// Config is a member's configuration; the names follow etcd's flags. The
// member's own part (data, raft, limits, auth) is member.Config; the rest
// is the server's ports.
type Config struct {
	member.Config

	ListenClientURLs []string
	// ListenClientHTTPURLs (--listen-client-http-urls) serve the HTTP side
	// alone (the JSON gateway, health, metrics); when there are any, the
	// client URLs serve gRPC alone, as in etcd.
	ListenClientHTTPURLs []string
	ListenMetricsURLs    []string
	// NoGRPCGateway is --enable-grpc-gateway=false: no JSON gateway on
	// /v3/ (health, version and metrics stay).
	NoGRPCGateway bool
	// SocketOptions are set on every listening socket.
	SocketOptions SocketOptions
	// Tracing exports a span of every gRPC call (off by default).
	Tracing Tracing
	// MaxConcurrentStreams bounds the gRPC calls a client connection may
	// have open at once (--max-concurrent-streams; 0: no bound).
	MaxConcurrentStreams uint32
	// GRPCKeepAlive: a client may ping no more often than MinTime while
	// it has calls open (--grpc-keepalive-min-time); the server pings a
	// connection idle for Interval and closes it if nothing comes back
	// within Timeout (--grpc-keepalive-interval, -timeout; 0: no pings).
	GRPCKeepAliveMinTime, GRPCKeepAliveInterval, GRPCKeepAliveTimeout time.Duration
	// ListenPeerURLs are where the other members' streams are served;
	// PeerTLS secures https ones.
	ListenPeerURLs []string
	PeerTLS        PeerTLS

	// Client TLS: the server's certificate and key, or a self-signed pair
	// made at start (AutoTLS); with ClientCertAuth, clients must present a
	// certificate signed by TrustedCAFile, not revoked in ClientCRLFile
	// (--client-crl-file), and valid for one of ClientCertAllowedHostnames
	// (--client-cert-allowed-hostname) if any.
	CertFile, KeyFile, TrustedCAFile string
	AutoTLS                          bool
	ClientCRLFile                    string
	ClientCertAllowedHostnames       []string
	// TLS is what the client and peer ports' TLS share: versions, cipher
	// suites, the self-signed certificates' lifetime.
	TLS TLSPolicy

	EnablePprof bool

	// CORS is the origins a browser may call the client port from (--cors;
	// "*" or empty: any); HostWhitelist the Host names a plain-HTTP request
	// may carry (--host-whitelist; "*" or empty: any), against DNS
	// rebinding.
	CORS          []string
	HostWhitelist []string
}

// DefaultConfig is etcd's defaults: member "default" serving clients on
// 127.0.0.1:2379.
func DefaultConfig() Config {
	return Config{
		Config: member.Config{
			Name:                        "default",
			InitialAdvertisePeerURLs:    []string{"http://127.0.0.1:2380"},
			InitialClusterToken:         "etcd-cluster",
			HeartbeatInterval:           100 * time.Millisecond,
			ElectionTimeout:             1000 * time.Millisecond,
			MaxRequestBytes:             1536 * 1024,
			MaxTxnOps:                   128,
			QuotaBackendBytes:           member.DefaultQuotaBytes,
			AuthToken:                   "simple",
			AuthTokenTTL:                300 * time.Second,
			BcryptCost:                  10,
			WatchProgressNotifyInterval: 10 * time.Minute,
			SnapshotCount:               100000,
			MaxWALs:                     5,
			MaxSnapshots:                5,
			AdvertiseClientURLs:         []string{"http://127.0.0.1:2379"},
		},
		ListenClientURLs:      []string{"http://127.0.0.1:2379"},
		MaxConcurrentStreams:  math.MaxUint32,
		GRPCKeepAliveMinTime:  5 * time.Second,
		GRPCKeepAliveInterval: 2 * time.Hour,
		GRPCKeepAliveTimeout:  20 * time.Second,
		ListenPeerURLs:        []string{"http://localhost:2380"},
		CORS:                  []string{"*"},
		HostWhitelist:         []string{"*"},
	}
}

// Server is a running member: the member itself, its gRPC services on
// every client URL and the HTTP gateway beside them.
type Server struct {
	cfg         Config
	m           *member.Member
	grpc        *grpc.Server   // TLS connections, behind net/http
	rpc         *h2grpc.Server // cleartext connections and the gateway
	lns         []net.Listener // client listeners
	urls        []string       // their URLs, with the ports bound
	httpURLs    []string       // the HTTP-only client URLs, with the ports bound
	httpServers []*http.Server // client (plain and TLS) and metrics ports
	gw          *gateway.Gateway
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	stopOnce    sync.Once
	stopc       chan struct{}            // closed as Stop begins
	tracer      *sdktrace.TracerProvider // nil unless tracing; flushed at Stop
	failed      chan struct{}            // closed once the server stopped because its member failed
}

// Start opens the member's data and serves clients.
func Start(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn"
	}
	if cfg.HeartbeatInterval <= 0 || cfg.ElectionTimeout < 5*cfg.HeartbeatInterval {
		return nil, fmt.Errorf("--election-timeout[%v] should be at least as 5 times as --heartbeat-interval[%v]", cfg.ElectionTimeout, cfg.HeartbeatInterval)
	}
	if err := cfg.TLS.Check(); err != nil {
		return nil, err
	}
	if err := cfg.Tracing.Check(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	// Every listener is bound before the member opens: a port taken fails
	// the start with nothing opened.
	var all []listener
	closeAll := func() {
		for _, l := range all {
			l.ln.Close()
		}
	}
	bind := func(flag string, urls []string) ([]listener, error) {
		lns, err := listen(flag, urls, cfg.SocketOptions)
		all = append(all, lns...)
		return lns, err
	}
	clients, err := bind("--listen-client-urls", cfg.ListenClientURLs)
	var httpLns, metricsLns, peerLns []listener
	if err == nil {
		httpLns, err = bind("--listen-client-http-urls", cfg.ListenClientHTTPURLs)
	}
	if err == nil {
		metricsLns, err = bind("--listen-metrics-urls", cfg.ListenMetricsURLs)
	}
	if err == nil {
		peerLns, err = bind("--listen-peer-urls", cfg.ListenPeerURLs)
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	var tlsCfg *tls.Config
	for _, l := range slices.Concat(clients, httpLns, metricsLns) {
		if l.secure && tlsCfg == nil {
			if tlsCfg, err = serverTLS(&cfg, log); err != nil {
				closeAll()
				return nil, err
			}
		}
	}
	var peerListenTLS *tls.Config
	needPeerTLS := cfg.PeerTLS.enabled()
	for _, l := range peerLns {
		needPeerTLS = needPeerTLS || l.secure
	}
	if needPeerTLS {
		if peerListenTLS, cfg.Config.PeerTLS, err = peerTLS(cfg.PeerTLS, cfg.TLS, cfg.DataDir, cfg.InitialAdvertisePeerURLs, log); err != nil {
			closeAll()
			return nil, err
		}
	}
	m, err := member.Open(cfg.Config)
	if err != nil {
		closeAll()
		return nil, err
	}
	for _, l := range peerLns {
		ln := l.ln
		if l.secure {
			ln = tls.NewListener(ln, peerListenTLS)
		}
		m.ServePeers(ln)
	}
	// Cleartext connections and the gateway's pipes are served by h2grpc;
	// TLS connections by grpc-go's server behind net/http, which shares
	// the port with the HTTP side by ALPN. Both carry the same services.
	svc := v3rpc.New(m)
	var tp *sdktrace.TracerProvider
	if cfg.Tracing.Enabled {
		if tp, err = cfg.Tracing.provider(context.Background()); err != nil {
			closeAll()
			m.Stop()
			return nil, err
		}
		svc.SetTracer(tp)
		log.Info("distributed tracing enabled", "address", cfg.Tracing.Address, "service-name", cfg.Tracing.ServiceName,
			"service-instance-id", cfg.Tracing.InstanceID)
	}
	maxStreams := cfg.MaxConcurrentStreams
	if maxStreams == 0 {
		maxStreams = math.MaxUint32
	}
	kp := h2grpc.Keepalive{MinTime: cfg.GRPCKeepAliveMinTime}
	if cfg.GRPCKeepAliveInterval > 0 && cfg.GRPCKeepAliveTimeout > 0 {
		kp.Time, kp.Timeout = cfg.GRPCKeepAliveInterval, cfg.GRPCKeepAliveTimeout
	}
	// On TLS ports grpc-go serves through net/http's HTTP/2 (its
	// ServeHTTP, as in etcd), so the stream bound and the server's pings
	// are net/http's settings there; the ping policy has no equivalent.
	h2cfg := &http.HTTP2Config{MaxConcurrentStreams: int(min(maxStreams, math.MaxInt32)),
		SendPingTimeout: kp.Time, PingTimeout: kp.Timeout}
	s := &Server{cfg: cfg, m: m, stopc: make(chan struct{}), failed: make(chan struct{}), tracer: tp,
		grpc: grpc.NewServer(
			grpc.MaxRecvMsgSize(cfg.MaxRequestBytes+v3rpc.GRPCOverheadBytes),
			grpc.MaxSendMsgSize(math.MaxInt32),
			grpc.ChainUnaryInterceptor(svc.UnaryInterceptor),
			grpc.ChainStreamInterceptor(svc.StreamInterceptor),
		),
		rpc: h2grpc.NewServer(h2grpc.Options{
			MaxRecvMsgSize:       cfg.MaxRequestBytes + v3rpc.GRPCOverheadBytes,
			Unary:                svc.UnaryInterceptor,
			Stream:               svc.StreamInterceptor,
			MaxConcurrentStreams: cfg.MaxConcurrentStreams,
			Keepalive:            kp,
		}),
	}
	svc.Register(s.grpc)
	svc.Register(s.rpc)

	var ctx context.Context
	ctx, s.cancel = context.WithCancel(context.Background())
	s.gw, err = gateway.New(ctx, m, gateway.Options{CORS: cfg.CORS, HostWhitelist: cfg.HostWhitelist,
		ClientCertAuth: cfg.ClientCertAuth, EnablePprof: cfg.EnablePprof, NoJSONGateway: cfg.NoGRPCGateway,
		MaxRecvMsgSize: cfg.MaxRequestBytes + v3rpc.GRPCOverheadBytes})
	if err != nil {
		s.cancel()
		closeAll()
		m.Stop()
		return nil, err
	}
	handler := s.gw.Handler()
	clientHandler := handler
	if len(httpLns) > 0 {
		// The HTTP side has ports of its own: the client ports serve
		// gRPC alone.
		clientHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "this port serves gRPC only; HTTP is served on --listen-client-http-urls", http.StatusNotFound)
		})
	}
	// Serve once there is a leader, as etcd does, so that the first
	// requests do not meet "no leader".
	select {
	case <-m.LeaderKnown():
	case <-time.After(2 * cfg.ElectionTimeout):
		log.Warn("no leader yet; serving clients anyway")
	}
	s.serveGRPC(s.gw.Pipes())
	for _, l := range clients {
		s.lns = append(s.lns, l.ln)
		scheme := "http://"
		if l.secure {
			scheme = "https://"
			// TLS: one HTTP server (HTTP/2 by ALPN) that hands gRPC
			// requests to the gRPC server, as etcd serves TLS.
			s.serveHTTP(tls.NewListener(rawconn.Listener{Listener: l.ln}, tlsCfg), grpcOr(s.grpc, clientHandler), h2cfg)
		} else {
			sl := newSplitListener(l.ln)
			s.wg.Add(1)
			go func() { defer s.wg.Done(); sl.serve() }()
			s.serveGRPC(sl.grpc)
			s.serveHTTP(sl.http, clientHandler, nil)
		}
		s.urls = append(s.urls, scheme+l.ln.Addr().String())
	}
	for _, l := range httpLns {
		s.lns = append(s.lns, l.ln)
		ln := l.ln
		if l.secure {
			ln = tls.NewListener(rawconn.Listener{Listener: l.ln}, tlsCfg)
		}
		s.serveHTTP(ln, handler, nil)
		s.httpURLs = append(s.httpURLs, map[bool]string{true: "https://", false: "http://"}[l.secure]+l.ln.Addr().String())
	}
	for _, l := range metricsLns {
		mux := http.NewServeMux()
		gateway.AddInfoHandlers(mux, m, cfg.EnablePprof)
		ln := l.ln
		if l.secure {
			ln = tls.NewListener(ln, tlsCfg)
		}
		s.serveHTTP(ln, mux, nil)
	}
	// A member whose storage failed serves nothing more: not even
	// serializable reads or watches, which would go stale.
	go func() {
		select {
		case <-m.Failed():
			log.Error("the member failed: stopping the server", "err", m.Err())
			s.Stop()
			close(s.failed)
		case <-s.stopc:
		}
	}()
	log.Info("serving clients", "name", cfg.Name, "member-id", fmt.Sprintf("%x", m.ID()), "cluster-id", fmt.Sprintf("%x", m.ClusterID()), "urls", s.ClientURLs())
	// etcd's words, which scripts and operators wait for.
	for _, u := range slices.Concat(s.urls, s.httpURLs) {
		traffic := "grpc+http"
		if slices.Contains(s.httpURLs, u) {
			traffic = "http"
		} else if len(httpLns) > 0 {
			traffic = "grpc"
		}
		if strings.HasPrefix(u, "https://") {
			log.Info("serving client traffic securely", "traffic", traffic, "address", strings.TrimPrefix(u, "https://"))
		} else {
			log.Info("serving client traffic insecurely; this is strongly discouraged!", "traffic", traffic, "address", strings.TrimPrefix(u, "http://"))
		}
	}
	log.Info("ready to serve client requests")
	return s, nil
}

func (s *Server) serveGRPC(ln net.Listener) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.rpc.Serve(ln); err != nil && !errors.Is(err, h2grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
			s.m.Logger().Error("serving gRPC", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// serveHTTP serves h on ln; h2, if not nil, configures HTTP/2 there.
func (s *Server) serveHTTP(ln net.Listener, h http.Handler, h2 *http.HTTP2Config) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, HTTP2: h2}
	s.httpServers = append(s.httpServers, srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.m.Logger().Error("serving HTTP", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// grpcOr sends gRPC requests (HTTP/2, content type application/grpc) to
// the gRPC server and the rest to h.
func grpcOr(g *grpc.Server, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Failed is closed once the server has stopped because its member failed
// (a WAL or page-file write error); Err says why.
func (s *Server) Failed() <-chan struct{} { return s.failed }

// Err is the error the member failed with, or nil.
func (s *Server) Err() error { return s.m.Err() }

// ClientURLs returns the URLs the member listens on for clients, with the
// ports actually bound.
func (s *Server) ClientURLs() []string { return slices.Clone(s.urls) }

// ClientHTTPURLs returns the HTTP-only client URLs, with the ports bound.
func (s *Server) ClientHTTPURLs() []string { return slices.Clone(s.httpURLs) }

// Stop stops serving (requests in flight get etcd's "server stopped"),
// lets the applier finish what is committed, and closes the WAL and the
// page file.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		close(s.stopc)
		s.rpc.Stop()
		s.grpc.Stop()
		for _, srv := range s.httpServers {
			srv.Close()
		}
		for _, ln := range s.lns {
			ln.Close()
		}
		s.gw.Close()
		s.cancel()
		s.wg.Wait()
		s.m.Stop()
		if s.tracer != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.tracer.Shutdown(ctx) // exports what is left
			cancel()
		}
	})
}
