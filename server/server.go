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
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/url"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"

	"github.com/cairn-kv/cairn/server/v3electionpb"
	"github.com/cairn-kv/cairn/server/v3lockpb"
)

// Config is a member's configuration; the names follow etcd's flags.
type Config struct {
	Name    string
	DataDir string // default <Name>.cairn
	WALDir  string // default <DataDir>/member/wal

	ListenClientURLs         []string
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
	AuthTokenTTL   time.Duration
	BcryptCost     int
	ClientCertAuth bool

	// WatchProgressNotifyInterval is how often idle watchers that asked
	// are told the current revision.
	WatchProgressNotifyInterval time.Duration

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
		InitialClusterToken:         "etcd-cluster",
		HeartbeatInterval:           100 * time.Millisecond,
		ElectionTimeout:             1000 * time.Millisecond,
		MaxRequestBytes:             1536 * 1024,
		MaxTxnOps:                   128,
		QuotaBackendBytes:           DefaultQuotaBytes,
		AuthTokenTTL:                300 * time.Second,
		BcryptCost:                  10,
		WatchProgressNotifyInterval: 10 * time.Minute,
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
	cfg  Config
	m    *member
	grpc *grpc.Server
	lns  []net.Listener
	wg   sync.WaitGroup
	once sync.Once
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
	var lns []net.Listener
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, u := range cfg.ListenClientURLs {
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" {
			closeAll()
			return nil, fmt.Errorf("listen-client-urls: %q is not a URL", u)
		}
		if pu.Scheme != "http" {
			closeAll()
			return nil, fmt.Errorf("listen-client-urls: %q: only http is served so far", u)
		}
		ln, err := net.Listen("tcp", pu.Host)
		if err != nil {
			closeAll()
			return nil, err
		}
		lns = append(lns, ln)
	}
	m, err := openMember(cfg, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	s := &Server{cfg: cfg, m: m, lns: lns, grpc: grpc.NewServer(
		grpc.MaxRecvMsgSize(cfg.MaxRequestBytes+grpcOverheadBytes),
		grpc.MaxSendMsgSize(math.MaxInt32),
		grpc.MaxConcurrentStreams(math.MaxUint32),
	)}
	pb.RegisterKVServer(s.grpc, &kvServer{m: m})
	pb.RegisterWatchServer(s.grpc, &watchServer{m: m})
	pb.RegisterLeaseServer(s.grpc, &leaseServer{m: m})
	pb.RegisterMaintenanceServer(s.grpc, &maintenanceServer{m: m})
	pb.RegisterAuthServer(s.grpc, &authServer{m: m})
	pb.RegisterClusterServer(s.grpc, &clusterServer{m: m})
	rc := recipes{kv: &kvServer{m: m}, lease: &leaseServer{m: m}}
	v3lockpb.RegisterLockServer(s.grpc, &lockServer{r: rc})
	v3electionpb.RegisterElectionServer(s.grpc, &electionServer{r: rc})
	// Serve once there is a leader, as etcd does, so that the first
	// requests do not meet "no leader".
	select {
	case <-m.readyc:
	case <-time.After(2 * cfg.ElectionTimeout):
		log.Warn("no leader yet; serving clients anyway")
	}
	for _, ln := range lns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				log.Error("serving clients", "addr", ln.Addr().String(), "err", err)
			}
		}()
	}
	log.Info("serving clients", "name", cfg.Name, "member-id", fmt.Sprintf("%x", m.id), "cluster-id", fmt.Sprintf("%x", m.clusterID), "urls", s.ClientURLs())
	return s, nil
}

// ClientURLs returns the URLs the member listens on for clients, with the
// ports actually bound.
func (s *Server) ClientURLs() []string {
	out := make([]string, len(s.lns))
	for i, ln := range s.lns {
		out[i] = "http://" + ln.Addr().String()
	}
	return out
}

// Stop stops serving (requests in flight get etcd's "server stopped"),
// lets the applier finish what is committed, and closes the WAL and the
// page file.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.grpc.Stop()
		s.wg.Wait()
		s.m.stop()
	})
}
