package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-kv/cairn/server"
	"github.com/cairn-kv/cairn/server/discovery"
	"github.com/cairn-kv/cairn/server/member"
	"github.com/cairn-kv/cairn/server/transport"
)

// help is `cairn --help`: etcd 3.5's flags, in its sections and wording,
// with what each means in cairn where that differs.
//
//go:embed help.txt
var help string

// usageLine is what a wrong command line prints before its error, as etcd.
const usageLine = `Usage:

  cairn -h | --help
    Show the help information about cairn.
`

// options is what the command line, the environment or a configuration
// file asked for: the server's configuration, and the process's own
// settings.
type options struct {
	cfg     server.Config
	log     logging
	version bool
	// notes are said once the logger exists: the environment variables
	// used or not recognized, the flags that change nothing in cairn.
	notes []note
}

// note is a log line to write once logging is set up.
type note struct {
	level slog.Level
	msg   string
	args  []any
}

// noEffect names the flags cairn accepts, as etcd does, that change
// nothing here, with why. Setting one is said once at startup.
var noEffect = map[string]string{
	"backend-bbolt-freelist-type":                    "the page file keeps its own free list; there is no bbolt",
	"experimental-txn-mode-write-with-shared-buffer": "a bbolt read-buffer option; the page file has no such buffer",
	"experimental-downgrade-check-time":              "cairn has no downgrade: its cluster version is 3.5",
	"v2-deprecation":                                 "cairn keeps no v2 store: there is nothing of v2 to deprecate",
	"experimental-enable-lease-checkpoint":           "cairn always checkpoints the remaining TTL of long leases",
	"experimental-enable-lease-checkpoint-persist":   "cairn always persists the checkpointed remaining TTL",
	"proxy-failure-wait":                             "a v2 proxy setting; cairn has no v2 proxy",
	"proxy-refresh-interval":                         "a v2 proxy setting; cairn has no v2 proxy",
	"proxy-dial-timeout":                             "a v2 proxy setting; cairn has no v2 proxy",
	"proxy-write-timeout":                            "a v2 proxy setting; cairn has no v2 proxy",
	"proxy-read-timeout":                             "a v2 proxy setting; cairn has no v2 proxy",
	"client-cert-file":                               "the JSON gateway calls the member in process: cairn makes no client connection of its own",
	"client-key-file":                                "the JSON gateway calls the member in process: cairn makes no client connection of its own",
}

// urlList is a comma-separated list of URLs.
type urlList []string

func (u *urlList) String() string { return strings.Join(*u, ",") }
func (u *urlList) Set(v string) error {
	*u = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*u = append(*u, s)
		}
	}
	if len(*u) == 0 {
		return fmt.Errorf("no URL in %q", v)
	}
	return nil
}

// stringList is a comma-separated list flag whose entries are kept once
// each, as etcd's unique-strings flags.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error {
	*l = nil
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" && !slices.Contains(*l, s) {
			*l = append(*l, s)
		}
	}
	return nil
}

// uint32Value is a uint32 flag.
type uint32Value uint32

func (v *uint32Value) String() string { return strconv.FormatUint(uint64(*v), 10) }
func (v *uint32Value) Set(s string) error {
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return err
	}
	*v = uint32Value(n)
	return nil
}
func (v *uint32Value) Get() any { return uint32(*v) }

// choice is a string flag that takes one of a few values.
type choice struct {
	value string
	valid []string
}

func (c *choice) String() string { return c.value }
func (c *choice) Set(v string) error {
	if !slices.Contains(c.valid, v) {
		return fmt.Errorf("invalid value (valid values: %s)", strings.Join(c.valid, ", "))
	}
	c.value = v
	return nil
}

// parseFlags reads etcd's flags, from the command line and, for a flag
// not on it, from ETCD_<NAME> or CAIRN_<NAME> (dashes as underscores,
// uppercase); or, with --config-file (or ETCD_CONFIG_FILE), from that
// file alone, as etcd does.
func parseFlags(args []string, env map[string]string, out io.Writer) (*options, error) {
	o, _, err := parseFlagSet(args, env, out)
	return o, err
}

// parseFlagSet is parseFlags, with the flags as parsed.
func parseFlagSet(args []string, env map[string]string, out io.Writer) (*options, *flag.FlagSet, error) {
	o, fs, finish := newFlagSet(out)
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("'%s' is not a valid flag", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	configFile := fs.Lookup("config-file").Value.String()
	if configFile == "" {
		configFile = firstEnv(env, "config-file")
	}
	if configFile != "" {
		// As in etcd, the file is the whole configuration: start again
		// from the defaults, with no other flag and no environment.
		o, fs, finish = newFlagSet(out)
		set = map[string]bool{}
		if err := applyConfigFile(o, fs, configFile, set); err != nil {
			return nil, nil, err
		}
		o.notes = append(o.notes, note{slog.LevelInfo, "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided", []any{"path", configFile}})
	} else if err := fromEnvironment(o, fs, set, env); err != nil {
		return nil, nil, err
	}
	if err := finish(set); err != nil {
		return nil, nil, err
	}
	return o, fs, nil
}

// envNames are the variables flag name is read from, in order.
func envNames(name string) []string {
	env := strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	return []string{"ETCD_" + env, "CAIRN_" + env}
}

// firstEnv is the value of the first of name's variables set.
func firstEnv(env map[string]string, name string) string {
	for _, k := range envNames(name) {
		if v := env[k]; v != "" {
			return v
		}
	}
	return ""
}

// fromEnvironment sets each flag not on the command line from its
// variable. As in etcd, a variable for a flag also on the command line is
// an error (one of them would be silently ignored), and an ETCD_ variable
// that names no flag is said in the log.
func fromEnvironment(o *options, fs *flag.FlagSet, set map[string]bool, env map[string]string) error {
	used := map[string]bool{}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || f.Name == "version" || f.Name == "config-file" {
			return
		}
		for _, k := range envNames(f.Name) {
			v := env[k]
			if v == "" {
				continue
			}
			used[k] = true
			if set[f.Name] {
				err = fmt.Errorf("conflicting environment variable %q is shadowed by corresponding command-line flag (either unset environment variable or disable flag)", k)
				return
			}
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("invalid value %q for %s: %v", v, k, e)
				return
			}
			set[f.Name] = true
			o.notes = append(o.notes, note{slog.LevelInfo, "recognized and used environment variable", []any{"variable-name", k, "variable-value", v}})
			return
		}
	})
	if err != nil {
		return err
	}
	var keys []string
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case used[k] || k == "ETCD_CONFIG_FILE" || !strings.HasPrefix(k, "ETCD_"):
		case k == "ETCD_VERSION":
			o.notes = append(o.notes, note{slog.LevelWarn, "cannot set special environment variable", []any{"key", k, "value", env[k]}})
		default:
			o.notes = append(o.notes, note{slog.LevelWarn, "unrecognized environment variable", []any{"environment-variable", k + "=" + env[k]}})
		}
	}
	return nil
}

// newFlagSet registers etcd's flags, bound to a fresh options. finish,
// given the flags set (by any means), checks them together and completes
// the configuration.
func newFlagSet(out io.Writer) (*options, *flag.FlagSet, func(set map[string]bool) error) {
	o := &options{cfg: server.DefaultConfig()}
	cfg := &o.cfg
	fs := flag.NewFlagSet("cairn", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { fmt.Fprint(out, usageLine) }
	configFile := ""
	fs.StringVar(&configFile, "config-file", "", "Path to the server configuration file.")

	// Member.
	fs.StringVar(&cfg.Name, "name", cfg.Name, "Human-readable name for this member.")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "Path to the data directory.")
	fs.StringVar(&cfg.WALDir, "wal-dir", "", "Path to the dedicated wal directory.")
	fs.Uint64Var(&cfg.SnapshotCount, "snapshot-count", cfg.SnapshotCount, "Number of committed transactions to trigger a snapshot to disk.")
	hb := fs.Uint("heartbeat-interval", uint(cfg.HeartbeatInterval/time.Millisecond), "Time (in milliseconds) of a heartbeat interval.")
	et := fs.Uint("election-timeout", uint(cfg.ElectionTimeout/time.Millisecond), "Time (in milliseconds) for an election to timeout.")
	tickAdvance := fs.Bool("initial-election-tick-advance", true, "Whether to fast-forward initial election ticks on boot for faster election.")
	lpu, lcu := urlList(cfg.ListenPeerURLs), urlList(cfg.ListenClientURLs)
	fs.Var(&lpu, "listen-peer-urls", "List of URLs to listen on for peer traffic.")
	fs.Var(&lcu, "listen-client-urls", "List of URLs to listen on for client traffic.")
	lchu := urlList(nil)
	fs.Var(&lchu, "listen-client-http-urls", "List of URLs to listen on for http only client traffic.")
	fs.IntVar(&cfg.MaxSnapshots, "max-snapshots", cfg.MaxSnapshots, "Maximum number of snapshot files to retain (0 is unlimited).")
	fs.IntVar(&cfg.MaxWALs, "max-wals", cfg.MaxWALs, "Maximum number of wal files to retain (0 is unlimited).")
	fs.Int64Var(&cfg.QuotaBackendBytes, "quota-backend-bytes", 0, "Sets the maximum size (in bytes) that the backend may consume.")
	fs.String("backend-bbolt-freelist-type", "map", "BackendFreelistType specifies the type of freelist that boltdb backend uses.")
	fs.DurationVar(&cfg.BackendBatchInterval, "backend-batch-interval", 0, "BackendBatchInterval is the maximum time before commit the backend transaction.")
	fs.IntVar(&cfg.BackendBatchLimit, "backend-batch-limit", 0, "BackendBatchLimit is the maximum operations before commit the backend transaction.")
	fs.IntVar(&cfg.MaxTxnOps, "max-txn-ops", cfg.MaxTxnOps, "Maximum number of operations permitted in a transaction.")
	fs.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", cfg.MaxRequestBytes, "Maximum client request size in bytes the server will accept.")
	fs.Var((*uint32Value)(&cfg.MaxConcurrentStreams), "max-concurrent-streams", "Maximum concurrent streams that each client can open at a time.")
	gateway := fs.Bool("enable-grpc-gateway", true, "Enable GRPC gateway.")
	fs.DurationVar(&cfg.GRPCKeepAliveMinTime, "grpc-keepalive-min-time", cfg.GRPCKeepAliveMinTime, "Minimum duration interval that a client should wait before pinging server.")
	fs.DurationVar(&cfg.GRPCKeepAliveInterval, "grpc-keepalive-interval", cfg.GRPCKeepAliveInterval, "Frequency duration of server-to-client ping to check if a connection is alive (0 to disable).")
	fs.DurationVar(&cfg.GRPCKeepAliveTimeout, "grpc-keepalive-timeout", cfg.GRPCKeepAliveTimeout, "Additional duration of wait before closing a non-responsive connection (0 to disable).")
	fs.BoolVar(&cfg.SocketOptions.ReusePort, "socket-reuse-port", false, "Enable to set socket option SO_REUSEPORT on listeners allowing rebinding of a port already in use.")
	fs.DurationVar(&cfg.RaftReadTimeout, "raft-read-timeout", transport.MinTimeout, "Read timeout set on each rafthttp connection")
	fs.DurationVar(&cfg.RaftWriteTimeout, "raft-write-timeout", transport.MinTimeout, "Write timeout set on each rafthttp connection")
	fs.BoolVar(&cfg.SocketOptions.ReuseAddress, "socket-reuse-address", false, "Enable to set socket option SO_REUSEADDR on listeners allowing binding to an address in TIME_WAIT state.")

	// Clustering.
	apu, acu := urlList(cfg.InitialAdvertisePeerURLs), urlList(cfg.AdvertiseClientURLs)
	fs.Var(&apu, "initial-advertise-peer-urls", "List of this member's peer URLs to advertise to the rest of the cluster.")
	initialCluster := fs.String("initial-cluster", "", "Initial cluster configuration for bootstrapping.")
	discoveryURL := fs.String("discovery", "", "Discovery URL used to bootstrap the cluster.")
	fallback := &choice{"proxy", []string{"exit", "proxy"}}
	fs.Var(fallback, "discovery-fallback", "Expected behavior ('exit' or 'proxy') when discovery services fails.")
	discoveryProxy := fs.String("discovery-proxy", "", "HTTP proxy to use for traffic to discovery service.")
	discoverySRV := fs.String("discovery-srv", "", "DNS srv domain used to bootstrap the cluster.")
	discoverySRVName := fs.String("discovery-srv-name", "", "Suffix to the dns srv name queried when bootstrapping.")
	clusterState := &choice{"new", []string{"new", "existing"}}
	fs.Var(clusterState, "initial-cluster-state", "Initial cluster state ('new' or 'existing').")
	fs.StringVar(&cfg.InitialClusterToken, "initial-cluster-token", cfg.InitialClusterToken, "Initial cluster token for the etcd cluster during bootstrap.")
	fs.Var(&acu, "advertise-client-urls", "List of this member's client URLs to advertise to the public.")
	strictReconfig := fs.Bool("strict-reconfig-check", true, "Reject reconfiguration requests that would cause quorum loss.")
	preVote := fs.Bool("pre-vote", true, "Enable to run an additional Raft election phase.")
	acRetention := fs.String("auto-compaction-retention", "0", "Auto compaction retention length. 0 means disable auto compaction.")
	acMode := fs.String("auto-compaction-mode", "periodic", "Interpret 'auto-compaction-retention' one of: periodic|revision.")
	enableV2 := fs.Bool("enable-v2", false, "Accept etcd V2 client requests.")
	fs.Var(&choice{"not-yet", []string{"not-yet", "write-only", "write-only-skip-check", "write-only-drop-data", "gone"}}, "v2-deprecation", "Phase of v2store deprecation.")
	fs.BoolVar(&cfg.LearnerAutoPromote, "learner-auto-promote", false, "Promote a learner once it has caught up with the leader.")
	fs.BoolVar(&cfg.AutoRecoverNoSpace, "auto-recover-nospace", false, "On a NOSPACE alarm, compact at the current revision, defragment and disarm the alarm once there is room.")
	fs.IntVar(&cfg.MaxLearners, "max-learners", 1, "Sets the maximum number of learners that can be available in the cluster membership.")

	// Security.
	fs.StringVar(&cfg.CertFile, "cert-file", "", "Path to the client server TLS cert file.")
	fs.StringVar(&cfg.KeyFile, "key-file", "", "Path to the client server TLS key file.")
	fs.BoolVar(&cfg.ClientCertAuth, "client-cert-auth", false, "Enable client cert authentication.")
	fs.String("client-cert-file", "", "Path to an explicit peer client TLS cert file.")
	fs.String("client-key-file", "", "Path to an explicit peer client TLS key file.")
	fs.StringVar(&cfg.TrustedCAFile, "trusted-ca-file", "", "Path to the client server TLS trusted CA cert file.")
	fs.BoolVar(&cfg.AutoTLS, "auto-tls", false, "Client TLS using generated certificates.")
	fs.StringVar(&cfg.PeerTLS.CertFile, "peer-cert-file", "", "Path to the peer server TLS cert file.")
	fs.StringVar(&cfg.PeerTLS.KeyFile, "peer-key-file", "", "Path to the peer server TLS key file.")
	fs.BoolVar(&cfg.PeerTLS.ClientCertAuth, "peer-client-cert-auth", false, "Enable peer client cert authentication.")
	fs.StringVar(&cfg.PeerTLS.TrustedCAFile, "peer-trusted-ca-file", "", "Path to the peer server TLS trusted CA file.")
	allowedCNs, allowedPeerHosts := stringList(nil), stringList(nil)
	fs.Var(&allowedCNs, "peer-cert-allowed-cn", "Comma-separated list of allowed CNs for inter-peer TLS authentication.")
	fs.Var(&allowedPeerHosts, "peer-cert-allowed-hostname", "Comma-separated list of allowed SAN hostnames for inter-peer TLS authentication.")
	fs.BoolVar(&cfg.PeerTLS.AutoTLS, "peer-auto-tls", false, "Peer TLS using self-generated certificates.")
	fs.StringVar(&cfg.PeerTLS.ClientCertFile, "peer-client-cert-file", "", "Path to an explicit peer client TLS cert file.")
	fs.StringVar(&cfg.PeerTLS.ClientKeyFile, "peer-client-key-file", "", "Path to an explicit peer client TLS key file.")
	fs.UintVar(&cfg.TLS.SelfSignedCertValidity, "self-signed-cert-validity", 1, "The validity period of the automatically generated certificates, in years.")
	fs.StringVar(&cfg.PeerTLS.CRLFile, "peer-crl-file", "", "Path to the peer certificate revocation list file.")
	fs.BoolVar(&cfg.PeerTLS.SkipClientSANVerify, "experimental-peer-skip-client-san-verification", false, "Skip verification of SAN field in client certificate for peer connections.")
	fs.StringVar(&cfg.ClientCRLFile, "client-crl-file", "", "Path to the client certificate revocation list file.")
	allowedClientHosts, ciphers := stringList(nil), stringList(nil)
	fs.Var(&allowedClientHosts, "client-cert-allowed-hostname", "Comma-separated list of SAN hostnames for client cert authentication.")
	fs.Var(&ciphers, "cipher-suites", "Comma-separated list of supported TLS cipher suites between client/server and peers.")
	fs.StringVar(&cfg.TLS.MinVersion, "tls-min-version", "TLS1.2", "Minimum TLS version supported. Possible values: TLS1.2, TLS1.3.")
	fs.StringVar(&cfg.TLS.MaxVersion, "tls-max-version", "", "Maximum TLS version supported. Possible values: TLS1.2, TLS1.3.")
	cors, hosts := stringList(cfg.CORS), stringList(cfg.HostWhitelist)
	fs.Var(&cors, "cors", "Comma-separated whitelist of origins for CORS (empty or * means allow all).")
	fs.Var(&hosts, "host-whitelist", "Acceptable hostnames from HTTP client requests, if server is not secure (empty or * means allow all).")

	// Auth.
	fs.StringVar(&cfg.AuthToken, "auth-token", cfg.AuthToken, "Specify a v3 authentication token type and its options ('simple' or 'jwt').")
	fs.IntVar(&cfg.BcryptCost, "bcrypt-cost", cfg.BcryptCost, "Specify the cost / strength of the bcrypt algorithm for hashing auth passwords.")
	tokenTTL := fs.Uint("auth-token-ttl", 300, "Time (in seconds) of the auth-token-ttl.")

	// Profiling and monitoring.
	fs.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "Enable runtime profiling data via HTTP server.")
	metricsLevel := &choice{"basic", []string{"basic", "extensive"}}
	fs.Var(metricsLevel, "metrics", "Set level of detail for exported metrics, specify 'extensive' to include server side grpc histogram metrics.")
	lmu := urlList(nil)
	fs.Var(&lmu, "listen-metrics-urls", "List of URLs to listen on for the /metrics and /health endpoints.")

	// Logging.
	fs.Var(&choice{"zap", []string{"zap"}}, "logger", "Currently only supports 'zap' for structured logging.")
	logOutputs := stringList{outputDefault}
	fs.Var(&logOutputs, "log-outputs", "Specify 'stdout' or 'stderr' to skip journald logging even when running under systemd, or list of comma separated output targets.")
	logLevel := &choice{"info", []string{"debug", "info", "warn", "error", "panic", "fatal"}}
	fs.Var(logLevel, "log-level", "Configures log level.")
	fs.BoolVar(&o.log.rotate, "enable-log-rotation", false, "Enable log rotation of a single log-outputs file target.")
	fs.StringVar(&o.log.rotation, "log-rotation-config-json", defaultRotation, "Configures log rotation if enabled with a JSON logger config.")

	// Experimental distributed tracing.
	fs.BoolVar(&cfg.Tracing.Enabled, "experimental-enable-distributed-tracing", false, "Enable experimental distributed tracing.")
	fs.StringVar(&cfg.Tracing.Address, "experimental-distributed-tracing-address", "localhost:4317", "Distributed tracing collector address.")
	fs.StringVar(&cfg.Tracing.ServiceName, "experimental-distributed-tracing-service-name", "etcd", "Distributed tracing service name.")
	fs.StringVar(&cfg.Tracing.InstanceID, "experimental-distributed-tracing-instance-id", "", "Distributed tracing instance ID.")
	fs.IntVar(&cfg.Tracing.SamplingRatePerMillion, "experimental-distributed-tracing-sampling-rate", 0, "Number of samples to collect per million spans.")

	// v2 proxy.
	proxy := &choice{"off", []string{"off", "readonly", "on"}}
	fs.Var(proxy, "proxy", "Proxy mode setting ('off', 'readonly' or 'on').")
	fs.Uint("proxy-failure-wait", 5000, "Time (in milliseconds) an endpoint will be held in a failed state.")
	fs.Uint("proxy-refresh-interval", 30000, "Time (in milliseconds) of the endpoints refresh interval.")
	fs.Uint("proxy-dial-timeout", 1000, "Time (in milliseconds) for a dial to timeout.")
	fs.Uint("proxy-write-timeout", 5000, "Time (in milliseconds) for a write to timeout.")
	fs.Uint("proxy-read-timeout", 0, "Time (in milliseconds) for a read to timeout.")

	// Experimental.
	fs.BoolVar(&cfg.InitialCorruptCheck, "experimental-initial-corrupt-check", false, "Enable to check data corruption before serving any client/peer traffic.")
	fs.DurationVar(&cfg.CorruptCheckTime, "experimental-corrupt-check-time", 0, "Duration of time between cluster corruption check passes.")
	compactHashCheck := fs.Bool("experimental-compact-hash-check-enabled", false, "Enable leader to periodically check followers compaction hashes.")
	compactHashCheckTime := fs.Duration("experimental-compact-hash-check-time", time.Minute, "Duration of time between leader checks followers compaction hashes.")
	v2v3 := fs.String("experimental-enable-v2v3", "", "Serve v2 requests through the v3 backend under a given prefix.")
	fs.Bool("experimental-enable-lease-checkpoint", false, "Enable the primary lessor to persist lease remainingTTL.")
	fs.Bool("experimental-enable-lease-checkpoint-persist", false, "Enable persisting remainingTTL.")
	fs.DurationVar(&cfg.WatchProgressNotifyInterval, "experimental-watch-progress-notify-interval", cfg.WatchProgressNotifyInterval, "Duration of periodical watch progress notification.")
	fs.Duration("experimental-downgrade-check-time", 5*time.Second, "Duration of time between two downgrade status checks.")
	fs.IntVar(&cfg.CompactionBatchLimit, "experimental-compaction-batch-limit", 1000, "Sets the maximum revisions deleted in each compaction batch.")
	fs.DurationVar(&cfg.CompactionSleepInterval, "experimental-compaction-sleep-interval", 10*time.Millisecond, "Sets the sleep interval between each compaction batch.")
	fs.DurationVar(&cfg.WarningApplyDuration, "experimental-warning-apply-duration", 100*time.Millisecond, "Time duration after which a warning is generated if request takes more time.")
	fs.BoolVar(&cfg.MemoryMlock, "experimental-memory-mlock", false, "Enable to enforce the member's pages to stay in RAM.")
	fs.UintVar(&cfg.BootstrapDefragThresholdMegabytes, "experimental-bootstrap-defrag-threshold-megabytes", 0, "Enable the defrag during bootstrap on condition that it will free at least the provided threshold of disk space.")
	fs.BoolVar(&cfg.StopGRPCServiceOnDefrag, "experimental-stop-grpc-service-on-defrag", false, "Enable the gRPC service to stop serving client requests on defragmentation.")
	fs.Bool("experimental-txn-mode-write-with-shared-buffer", true, "Enable the write transaction to use a shared buffer in its readonly check operations.")
	fs.Uint64Var(&cfg.SnapshotCatchUpEntries, "experimental-snapshot-catchup-entries", member.DefaultSnapshotCatchUpEntries, "Number of entries for a slow follower to catch up after compacting the raft storage entries.")

	// Unsafe.
	fs.BoolVar(&cfg.ForceNewCluster, "force-new-cluster", false, "Force to create a new one-member cluster.")
	fs.BoolVar(&cfg.UnsafeNoFsync, "unsafe-no-fsync", false, "Disables fsync, unsafe, will cause data loss.")

	fs.BoolVar(&o.version, "version", false, "Print the version and exit.")

	finish := func(set map[string]bool) error {
		if *enableV2 {
			return errors.New("--enable-v2: cairn serves the v3 API only, not etcd's v2 API; use the v3 API (etcdctl v3, clientv3)")
		}
		if *v2v3 != "" {
			return errors.New("--experimental-enable-v2v3: cairn serves the v3 API only, not v2 requests; use the v3 API (etcdctl v3, clientv3)")
		}
		if proxy.value != "off" {
			return fmt.Errorf("--proxy %s: cairn has no v2 proxy; use a member of the cluster, or etcd's grpc-proxy in front of cairn", proxy.value)
		}
		var names []string
		for name := range set {
			if _, ok := noEffect[name]; ok {
				names = append(names, name)
			}
		}
		sort.Strings(names)
		for _, name := range names {
			o.notes = append(o.notes, note{slog.LevelWarn, "flag accepted but changes nothing in cairn", []any{"flag", "--" + name, "value", fs.Lookup(name).Value.String(), "why", noEffect[name]}})
		}
		cfg.ListenClientURLs, cfg.AdvertiseClientURLs, cfg.InitialAdvertisePeerURLs = lcu, acu, apu
		cfg.ListenMetricsURLs, cfg.ListenPeerURLs, cfg.ListenClientHTTPURLs = lmu, lpu, lchu
		cfg.NoGRPCGateway = !*gateway
		cfg.ExtensiveMetrics = metricsLevel.value == "extensive"
		if *compactHashCheck {
			cfg.CompactHashCheckTime = *compactHashCheckTime
		}
		cfg.CORS, cfg.HostWhitelist = cors, hosts
		cfg.PeerTLS.AllowedCNs, cfg.PeerTLS.AllowedHostnames = allowedCNs, allowedPeerHosts
		cfg.ClientCertAllowedHostnames, cfg.TLS.CipherSuites = allowedClientHosts, ciphers
		if cfg.TLS.SelfSignedCertValidity == 0 {
			return errors.New("selfSignedCertValidity is invalid,it should be greater than 0")
		}
		if err := cfg.TLS.Check(); err != nil {
			return err
		}
		if err := cfg.Tracing.Check(); err != nil {
			return err
		}
		if set["listen-client-urls"] && !set["advertise-client-urls"] {
			return errors.New("--advertise-client-urls is required when --listen-client-urls is set explicitly")
		}
		var err error
		if n := countSet(*initialCluster, *discoverySRV, *discoveryURL); n > 1 {
			return errConflictBootstrapFlags
		}
		if *discoveryURL != "" {
			// As in etcd, the discovery URL is the cluster's token.
			cfg.InitialClusterToken = *discoveryURL
			d := discovery.V2{URL: *discoveryURL, Proxy: *discoveryProxy}
			name, apurls, mode := cfg.Name, slices.Clone([]string(apu)), fallback.value
			cfg.Discover = func(id uint64) ([]member.InitialMember, error) {
				var self []string
				for _, u := range apurls {
					self = append(self, name+"="+u)
				}
				d.Logger = cfg.Logger
				cluster, err := d.Join(context.Background(), id, strings.Join(self, ","))
				if errors.Is(err, discovery.ErrFullCluster) && mode == "proxy" {
					return nil, fmt.Errorf("%w: etcd would start a v2 proxy here (--discovery-fallback=proxy), which cairn does not offer; "+
						"add this member to the running cluster with `etcdctl member add` and start it with --initial-cluster-state=existing", err)
				}
				if err != nil {
					return nil, fmt.Errorf("--discovery %s: %w", *discoveryURL, err)
				}
				return server.ParseInitialCluster(name, apurls, cluster)
			}
		}
		if *discoverySRV != "" {
			// etcd resolves the records at every start: a member restarting
			// over its data checks them as it checks --initial-cluster.
			if *initialCluster, err = discovery.SRVCluster(cfg.Name, *discoverySRV, *discoverySRVName, apu); err != nil {
				return fmt.Errorf("--discovery-srv %s: %w", *discoverySRV, err)
			}
			o.notes = append(o.notes, note{slog.LevelInfo, "got bootstrap from DNS for etcd-server", []any{"initial-cluster", *initialCluster}})
		}
		if cfg.InitialCluster, err = server.ParseInitialCluster(cfg.Name, apu, *initialCluster); err != nil {
			return err
		}
		cfg.Resolver = discovery.Resolver
		cfg.InitialClusterState = clusterState.value
		if cfg.AutoCompaction, err = member.ParseAutoCompaction(*acMode, *acRetention); err != nil {
			return err
		}
		cfg.NoStrictReconfigCheck = !*strictReconfig
		if cfg.UnsafeNoFsync {
			o.notes = append(o.notes, note{slog.LevelWarn, "--unsafe-no-fsync: the WAL and the page file are not synced; a crash of the machine may lose acknowledged writes", nil})
		}
		for _, t := range []struct {
			flag string
			d    *time.Duration
		}{{"raft-read-timeout", &cfg.RaftReadTimeout}, {"raft-write-timeout", &cfg.RaftWriteTimeout}} {
			if *t.d < transport.MinTimeout {
				*t.d = transport.MinTimeout
				o.notes = append(o.notes, note{slog.LevelInfo, fmt.Sprintf("%s increased to minimum value: %v", t.flag, transport.MinTimeout), nil})
			}
		}
		cfg.NoPreVote, cfg.NoInitialElectionTickAdvance = !*preVote, !*tickAdvance
		if cfg.MaxLearners < 1 {
			return fmt.Errorf("--max-learners must be at least 1, got %d", cfg.MaxLearners)
		}
		cfg.AuthTokenTTL = time.Duration(*tokenTTL) * time.Second
		if cfg.QuotaBackendBytes > member.MaxQuotaBytes {
			o.notes = append(o.notes, note{slog.LevelWarn, "--quota-backend-bytes exceeds the maximum recommended", []any{"quota", cfg.QuotaBackendBytes, "max", int64(member.MaxQuotaBytes)}})
		}
		cfg.HeartbeatInterval = time.Duration(*hb) * time.Millisecond
		cfg.ElectionTimeout = time.Duration(*et) * time.Millisecond
		switch logLevel.value {
		case "panic", "fatal":
			// slog has no such levels: only errors are written, as
			// etcd writes at those levels only what stops it.
			o.log.level = slog.LevelError
		default:
			_ = o.log.level.UnmarshalText([]byte(logLevel.value))
		}
		o.log.outputs = logOutputs
		return o.log.check()
	}
	return o, fs, finish
}

// countSet counts the values that are not empty.
func countSet(values ...string) int {
	n := 0
	for _, v := range values {
		if v != "" {
			n++
		}
	}
	return n
}

// errConflictBootstrapFlags is etcd's refusal of two ways to bootstrap.
var errConflictBootstrapFlags = errors.New(`multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", "discovery" or "discovery-srv"`)
