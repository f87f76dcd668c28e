// Package server is a cairn member: raft, the WAL and the engine behind
// etcd's v3 gRPC API.
//
// A write (Put, DeleteRange, Txn, Compact) is checked as etcd checks it,
// encoded as etcd's InternalRaftRequest with a fresh id, proposed, and
// answered once the apply goroutine has applied its entry. A linearizable
// Range asks raft for a read index (one heartbeat round shared by the
// reads that arrive together), waits until the member has applied it, then
// reads the engine; a serializable one reads the engine at once.
//
// Built so far: a single member (it elects itself at once), the KV
// service. The rest of etcd's surface is still to come (see the README).
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
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/cairn-kv/cairn/internal/h2grpc"
	"github.com/cairn-kv/cairn/internal/rawconn"
	"github.com/cairn-kv/cairn/server/v3electionpb"
	"github.com/cairn-kv/cairn/server/v3lockpb"
)

// Config is a member's configuration; the names follow etcd's flags.
type Config struct {
	Name    string
	DataDir string // default <Name>.cairn
	WALDir  string // default <DataDir>/member/wal

	ListenClientURLs  []string
	ListenMetricsURLs []string
	// ListenPeerURLs is recorded only: a cluster of one member has no
	// peer traffic, and no peer port is opened.
	ListenPeerURLs           []string
	AdvertiseClientURLs      []string
	InitialAdvertisePeerURLs []string
	InitialClusterToken      string

	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	MaxRequestBytes   int
	MaxTxnOps         int
	// QuotaBackendBytes: past it the NOSPACE alarm is raised (0: etcd's
	// default, 2 GiB).
	QuotaBackendBytes int64

	// Auth: how long a simple token lives unused, bcrypt's cost for the
	// passwords hashed here, and whether a client certificate's common
	// name stands for the user.
	AuthToken      string // --auth-token: "simple" or "jwt,..."
	AuthTokenTTL   time.Duration
	BcryptCost     int
	ClientCertAuth bool

	// Client TLS: the server's certificate and key, or a self-signed pair
	// made at start (AutoTLS); with ClientCertAuth, clients must present a
	// certificate signed by TrustedCAFile.
	CertFile, KeyFile, TrustedCAFile string
	AutoTLS                          bool

	EnablePprof bool

	// CORS is the origins a browser may call the client port from (--cors;
	// "*" or empty: any); HostWhitelist the Host names a plain-HTTP request
	// may carry (--host-whitelist; "*" or empty: any), against DNS
	// rebinding.
	CORS          []string
	HostWhitelist []string

	// AutoCompaction: --auto-compaction-mode and -retention, parsed.
	AutoCompaction AutoCompaction

	// WatchProgressNotifyInterval is how often idle watchers that asked
	// are told the current revision.
	WatchProgressNotifyInterval time.Duration

	// SnapshotCount is how many applied entries trigger a raft snapshot
	// (the log before it leaves memory and the WAL); MaxWALs and
	// MaxSnapshots how many WAL segments and .snap files to keep at least
	// and at most (0: all).
	SnapshotCount uint64
	MaxWALs       int
	MaxSnapshots  int

	// walSegmentSize replaces the WAL's segment size (tests).
	walSegmentSize int64

	Logger *slog.Logger
}

// DefaultConfig is etcd's defaults: member "default" serving clients on
// 127.0.0.1:2379.
func DefaultConfig() Config {
	return Config{
		Name:                        "default",
		ListenClientURLs:            []string{"http://127.0.0.1:2379"},
		AdvertiseClientURLs:         []string{"http://127.0.0.1:2379"},
		InitialAdvertisePeerURLs:    []string{"http://127.0.0.1:2380"},
		ListenPeerURLs:              []string{"http://localhost:2380"},
		InitialClusterToken:         "etcd-cluster",
		HeartbeatInterval:           100 * time.Millisecond,
		ElectionTimeout:             1000 * time.Millisecond,
		MaxRequestBytes:             1536 * 1024,
		MaxTxnOps:                   128,
		QuotaBackendBytes:           DefaultQuotaBytes,
		AuthToken:                   "simple",
		AuthTokenTTL:                300 * time.Second,
		BcryptCost:                  10,
		WatchProgressNotifyInterval: 10 * time.Minute,
		SnapshotCount:               100000,
		MaxWALs:                     5,
		MaxSnapshots:                5,
		CORS:                        []string{"*"},
		HostWhitelist:               []string{"*"},
	}
}

// DefaultQuotaBytes is etcd's default backend quota, 2 GiB; MaxQuotaBytes
// the most it lets one ask for, 8 GiB.
const (
	DefaultQuotaBytes = 2 << 30
	MaxQuotaBytes     = 8 << 30
)

// grpcOverheadBytes is what etcd allows a gRPC message beyond
// max-request-bytes, so that a request just over the limit reaches the
// server's own check and its "request is too large".
const grpcOverheadBytes = 512 * 1024

// Server is a running member.
type Server struct {
	cfg         Config
	m           *member
	grpc        *grpc.Server   // TLS connections, behind net/http
	rpc         *h2grpc.Server // cleartext connections and the gateway
	lns         []net.Listener // client listeners
	urls        []string       // their URLs, with the ports bound
	httpServers []*http.Server // client (plain and TLS) and metrics ports
	gateway     *grpc.ClientConn
	ws          *websockets // the gateway's websocket sessions
	pipes       *chanListener
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	stopOnce    sync.Once
}

// listener is a client or metrics URL bound.
type listener struct {
	ln     net.Listener
	secure bool
}

// listen binds each URL (http or https).
func listen(flag string, urls []string) ([]listener, error) {
	var out []listener
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err == nil && pu.Host == "" {
			err = errors.New("no host")
		}
		if err == nil && pu.Scheme != "http" && pu.Scheme != "https" {
			err = fmt.Errorf("URL scheme must be http or https")
		}
		var ln net.Listener
		if err == nil {
			ln, err = net.Listen("tcp", pu.Host)
		}
		if err != nil {
			for _, l := range out {
				l.ln.Close()
			}
			return nil, fmt.Errorf("%s %q: %w", flag, u, err)
		}
		out = append(out, listener{ln: ln, secure: pu.Scheme == "https"})
	}
	return out, nil
}

// Start opens the member's data and serves clients.
func Start(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn"
	}
	if cfg.QuotaBackendBytes <= 0 {
		cfg.QuotaBackendBytes = DefaultQuotaBytes
	}
	if cfg.AuthTokenTTL <= 0 {
		cfg.AuthTokenTTL = 300 * time.Second
	}
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = 10
	}
	if cfg.WatchProgressNotifyInterval <= 0 {
		cfg.WatchProgressNotifyInterval = 10 * time.Minute
	}
	if cfg.HeartbeatInterval <= 0 || cfg.ElectionTimeout < 5*cfg.HeartbeatInterval {
		return nil, fmt.Errorf("--election-timeout[%v] should be at least as 5 times as --heartbeat-interval[%v]", cfg.ElectionTimeout, cfg.HeartbeatInterval)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	clients, err := listen("--listen-client-urls", cfg.ListenClientURLs)
	if err != nil {
		return nil, err
	}
	metricsLns, err := listen("--listen-metrics-urls", cfg.ListenMetricsURLs)
	closeAll := func() {
		for _, l := range append(clients, metricsLns...) {
			l.ln.Close()
		}
	}
	if err != nil {
		closeAll()
		return nil, err
	}
	var tlsCfg *tls.Config
	for _, l := range append(clients, metricsLns...) {
		if l.secure && tlsCfg == nil {
			if tlsCfg, err = serverTLS(&cfg, log); err != nil {
				closeAll()
				return nil, err
			}
		}
	}
	m, err := openMember(cfg, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	// Cleartext connections and the gateway's pipes are served by h2grpc;
	// TLS connections by grpc-go's server behind net/http, which shares
	// the port with the HTTP side by ALPN. Both carry the same services.
	s := &Server{cfg: cfg, m: m, pipes: newChanListener(pipeAddr{}),
		grpc: grpc.NewServer(
			grpc.MaxRecvMsgSize(cfg.MaxRequestBytes+grpcOverheadBytes),
			grpc.MaxSendMsgSize(math.MaxInt32),
			grpc.MaxConcurrentStreams(math.MaxUint32),
			grpc.ChainUnaryInterceptor(m.unaryInterceptor),
			grpc.ChainStreamInterceptor(m.streamInterceptor),
		),
		rpc: h2grpc.NewServer(h2grpc.Options{
			MaxRecvMsgSize: cfg.MaxRequestBytes + grpcOverheadBytes,
			Unary:          m.unaryInterceptor,
			Stream:         m.streamInterceptor,
		}),
	}
	rc := recipes{kv: &kvServer{m: m}, lease: &leaseServer{m: m}}
	hs := health.NewServer()
	for _, reg := range []grpc.ServiceRegistrar{s.grpc, s.rpc} {
		pb.RegisterKVServer(reg, &kvServer{m: m})
		pb.RegisterWatchServer(reg, &watchServer{m: m})
		pb.RegisterLeaseServer(reg, &leaseServer{m: m})
		pb.RegisterMaintenanceServer(reg, &maintenanceServer{m: m})
		pb.RegisterAuthServer(reg, &authServer{m: m})
		pb.RegisterClusterServer(reg, &clusterServer{m: m})
		v3lockpb.RegisterLockServer(reg, &lockServer{r: rc})
		v3electionpb.RegisterElectionServer(reg, &electionServer{r: rc})
		healthpb.RegisterHealthServer(reg, hs)
	}

	var ctx context.Context
	ctx, s.cancel = context.WithCancel(context.Background())
	s.ws = newWebsockets(ctx)
	gwHandler, gwConn, err := s.httpHandler(ctx, s.pipes)
	if err != nil {
		s.cancel()
		closeAll()
		m.stop()
		return nil, err
	}
	s.gateway = gwConn
	// Client certificates name users only when auth is on.
	certAuth := func() bool {
		on, _ := m.eng.AuthStatus()
		return cfg.ClientCertAuth && on
	}
	handler := accessControl(cfg.CORS, cfg.HostWhitelist, certAuth, gwHandler)
	// Serve once there is a leader, as etcd does, so that the first
	// requests do not meet "no leader".
	select {
	case <-m.readyc:
	case <-time.After(2 * cfg.ElectionTimeout):
		log.Warn("no leader yet; serving clients anyway")
	}
	s.serveGRPC(s.pipes)
	for _, l := range clients {
		s.lns = append(s.lns, l.ln)
		scheme := "http://"
		if l.secure {
			scheme = "https://"
			// TLS: one HTTP server (HTTP/2 by ALPN) that hands gRPC
			// requests to the gRPC server, as etcd serves TLS.
			s.serveHTTP(tls.NewListener(rawconn.Listener{Listener: l.ln}, tlsCfg), grpcOr(s.grpc, handler))
		} else {
			sl := newSplitListener(l.ln)
			s.wg.Add(1)
			go func() { defer s.wg.Done(); sl.serve() }()
			s.serveGRPC(sl.grpc)
			s.serveHTTP(sl.http, handler)
		}
		s.urls = append(s.urls, scheme+l.ln.Addr().String())
	}
	for _, l := range metricsLns {
		mux := http.NewServeMux()
		s.addInfoHandlers(mux)
		ln := l.ln
		if l.secure {
			ln = tls.NewListener(ln, tlsCfg)
		}
		s.serveHTTP(ln, mux)
	}
	log.Info("serving clients", "name", cfg.Name, "member-id", fmt.Sprintf("%x", m.id), "cluster-id", fmt.Sprintf("%x", m.clusterID), "urls", s.ClientURLs())
	log.Info("no peer port opened: a cluster of one member has no peer traffic", "listen-peer-urls", cfg.ListenPeerURLs)
	return s, nil
}

func (s *Server) serveGRPC(ln net.Listener) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.rpc.Serve(ln); err != nil && !errors.Is(err, h2grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
			s.m.log.Error("serving gRPC", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

func (s *Server) serveHTTP(ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	s.httpServers = append(s.httpServers, srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.m.log.Error("serving HTTP", "addr", ln.Addr().String(), "err", err)
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

// ClientURLs returns the URLs the member listens on for clients, with the
// ports actually bound.
func (s *Server) ClientURLs() []string { return slices.Clone(s.urls) }

// Stop stops serving (requests in flight get etcd's "server stopped"),
// lets the applier finish what is committed, and closes the WAL and the
// page file.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.rpc.Stop()
		s.grpc.Stop()
		for _, srv := range s.httpServers {
			srv.Close()
		}
		for _, ln := range s.lns {
			ln.Close()
		}
		if s.ws != nil {
			s.ws.closeAll()
		}
		s.gateway.Close()
		s.pipes.Close()
		s.cancel()
		s.wg.Wait()
		s.m.stop()
	})
}

// unaryInterceptor and streamInterceptor refuse a call whose client
// requires a leader when the member knows none, as etcd does (before the
// call is counted), then count it in the gRPC metrics.
func (m *member) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := m.requireLeader(ctx); err != nil {
		return nil, err
	}
	return m.metrics.unary(ctx, req, info, h)
}

func (m *member) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := m.requireLeader(ss.Context()); err != nil {
		return err
	}
	return m.metrics.stream(srv, ss, info, h)
}

// requireLeader returns etcd's "no leader" when the call carries the
// hasleader metadata (clientv3.WithRequireLeader) and the member knows no
// leader. The metadata is looked at only then: a call's metadata is not
// built unless asked for.
func (m *member) requireLeader(ctx context.Context) error {
	if m.lead.Load() != 0 {
		return nil
	}
	if vs := metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey); len(vs) > 0 && vs[0] == rpctypes.MetadataHasLeader {
		return rpctypes.ErrGRPCNoLeader
	}
	return nil
}
