// Command cairn runs a cairn member, configured with etcd's flag names (and
// the same settings from ETCD_* or CAIRN_* environment variables), so that
// existing units and scripts work.
//
// With no flags it is a single member named "default" serving clients on
// http://127.0.0.1:2379 from ./default.cairn.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/server"
	"github.com/cairn-kv/cairn/server/member"
)

// version is cairn's version; the etcd API version it speaks is 3.5.
const version = "0.1.0"

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr, sig, nil))
}

// run is the binary: it serves until a signal arrives on sig (then stops
// cleanly and returns 0) or the member fails (then returns 1, the reason
// on stderr). set, if not nil, changes the configuration before the start
// (tests give the member a file system that fails).
func run(args []string, getenv func(string) string, stderr io.Writer, sig <-chan os.Signal, set func(*server.Config)) int {
	if len(args) > 0 && args[0] == "local-cluster" {
		return localCluster(args[1:], stderr, sig)
	}
	if len(args) > 1 && args[0] == "snapshot" && args[1] == "restore" {
		if err := restore(args[2:], stderr); err != nil {
			fmt.Fprintln(stderr, "Error:", err)
			return 1
		}
		return 0
	}
	cfg, logLevel, showVersion, err := parseFlags(args, getenv, stderr)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintln(stderr, "cairn:", err)
		return 2
	}
	if showVersion {
		fmt.Fprintf(os.Stdout, "cairn Version: %s\nAPI Version: 3.5\nGo Version: %s\nGo OS/Arch: %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel}))
	cfg.Logger = log
	if spec := getenv("CAIRN_FAILPOINTS"); spec != "" {
		// For fault-injection tests of the binary, as etcd's
		// GOFAIL_FAILPOINTS.
		if err := failpoint.EnableSpec(spec); err != nil {
			fmt.Fprintln(stderr, "cairn: CAIRN_FAILPOINTS:", err)
			return 2
		}
		log.Warn("failpoints armed", "CAIRN_FAILPOINTS", spec)
	}
	if set != nil {
		set(&cfg)
	}
	s, err := server.Start(cfg)
	if err != nil {
		log.Error("cannot start", "err", err)
		fmt.Fprintln(stderr, "cairn: cannot start:", err)
		return 1
	}
	if err := notifySystemd(); err != nil {
		log.Warn("telling systemd the member is ready", "err", err)
	}
	select {
	case got := <-sig:
		log.Info("stopping", "signal", got.String())
		s.Stop()
		log.Info("stopped")
		return 0
	case <-s.Failed():
		// A WAL or page-file write failed: the server has stopped, and a
		// supervisor should see the member die, not serve on.
		log.Error("stopped: the member failed", "err", s.Err())
		fmt.Fprintln(stderr, "cairn: the member failed:", s.Err())
		return 1
	}
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

// parseFlags reads etcd's flags; a flag not on the command line takes its
// value from ETCD_<NAME> or CAIRN_<NAME> (dashes as underscores,
// uppercase), as etcd's do.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (cfg server.Config, level slog.Level, showVersion bool, err error) {
	return parse(args, getenv, out, "")
}

// parse is parseFlags; with a configuration file named, the flags come
// from it alone.
func parse(args []string, getenv func(string) string, out io.Writer, configOnly string) (cfg server.Config, level slog.Level, showVersion bool, err error) {
	cfg = server.DefaultConfig()
	fs := flag.NewFlagSet("cairn", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.Name, "name", cfg.Name, "Human-readable name for this member.")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "Path to the data directory (default ${name}.cairn).")
	fs.StringVar(&cfg.WALDir, "wal-dir", "", "Path to the dedicated wal directory.")
	lcu, acu, apu := urlList(cfg.ListenClientURLs), urlList(cfg.AdvertiseClientURLs), urlList(cfg.InitialAdvertisePeerURLs)
	fs.Var(&lcu, "listen-client-urls", "List of URLs to listen on for client traffic.")
	fs.Var(&acu, "advertise-client-urls", "List of this member's client URLs to advertise to the public.")
	fs.Var(&apu, "initial-advertise-peer-urls", "List of this member's peer URLs to advertise to the rest of the cluster.")
	fs.StringVar(&cfg.InitialClusterToken, "initial-cluster-token", cfg.InitialClusterToken, "Initial cluster token for the etcd cluster during bootstrap.")
	lpu := urlList(cfg.ListenPeerURLs)
	fs.Var(&lpu, "listen-peer-urls", "List of URLs to listen on for peer traffic.")
	initialCluster := fs.String("initial-cluster", "", "Initial cluster configuration for bootstrapping (default ${name}=${initial-advertise-peer-urls}).")
	clusterState := fs.String("initial-cluster-state", "new", "Initial cluster state ('new' or 'existing').")
	strictReconfig := fs.Bool("strict-reconfig-check", true, "Reject reconfiguration requests that would cause quorum loss.")
	fs.BoolVar(&cfg.ForceNewCluster, "force-new-cluster", false, "Force to create a new one member cluster.")
	fs.BoolVar(&cfg.LearnerAutoPromote, "learner-auto-promote", false, "Promote a learner to a voting member once it has caught up with the leader (cairn's own; etcd promotes only on member promote).")
	fs.IntVar(&cfg.MaxLearners, "max-learners", 1, "Sets the maximum number of learners that can be available in the cluster membership.")
	fs.Uint64Var(&cfg.SnapshotCount, "snapshot-count", cfg.SnapshotCount, "Number of committed transactions to trigger a snapshot to disk.")
	fs.IntVar(&cfg.MaxWALs, "max-wals", cfg.MaxWALs, "Maximum number of wal files to retain (0 is unlimited).")
	fs.IntVar(&cfg.MaxSnapshots, "max-snapshots", cfg.MaxSnapshots, "Maximum number of snapshot files to retain (0 is unlimited).")
	fs.Uint64Var(&cfg.SnapshotCatchUpEntries, "experimental-snapshot-catchup-entries", member.DefaultSnapshotCatchUpEntries, "Number of entries for a slow follower to catch up after compacting the raft storage entries.")
	hb := fs.Uint("heartbeat-interval", uint(cfg.HeartbeatInterval/time.Millisecond), "Time (in milliseconds) of a heartbeat interval.")
	et := fs.Uint("election-timeout", uint(cfg.ElectionTimeout/time.Millisecond), "Time (in milliseconds) for an election to timeout.")
	fs.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", cfg.MaxRequestBytes, "Maximum client request size in bytes the server will accept.")
	fs.IntVar(&cfg.MaxTxnOps, "max-txn-ops", cfg.MaxTxnOps, "Maximum number of operations permitted in a transaction.")
	fs.Int64Var(&cfg.QuotaBackendBytes, "quota-backend-bytes", 0, "Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).")
	acMode := fs.String("auto-compaction-mode", "periodic", "Interpret 'auto-compaction-retention' one of: periodic|revision.")
	acRetention := fs.String("auto-compaction-retention", "0", "Auto compaction retention for mvcc key value store. 0 means disable auto compaction.")
	lmu := urlList(nil)
	fs.Var(&lmu, "listen-metrics-urls", "List of URLs to listen on for the metrics and health endpoints.")
	fs.StringVar(&cfg.CertFile, "cert-file", "", "Path to the client server TLS cert file.")
	fs.StringVar(&cfg.KeyFile, "key-file", "", "Path to the client server TLS key file.")
	fs.StringVar(&cfg.TrustedCAFile, "trusted-ca-file", "", "Path to the client server TLS trusted CA cert file.")
	fs.BoolVar(&cfg.ClientCertAuth, "client-cert-auth", false, "Enable client cert authentication.")
	fs.BoolVar(&cfg.AutoTLS, "auto-tls", false, "Client TLS using generated certificates.")
	fs.StringVar(&cfg.PeerTLS.CertFile, "peer-cert-file", "", "Path to the peer server TLS cert file.")
	fs.StringVar(&cfg.PeerTLS.KeyFile, "peer-key-file", "", "Path to the peer server TLS key file.")
	fs.StringVar(&cfg.PeerTLS.TrustedCAFile, "peer-trusted-ca-file", "", "Path to the peer server TLS trusted CA file.")
	fs.BoolVar(&cfg.PeerTLS.ClientCertAuth, "peer-client-cert-auth", false, "Enable peer client cert authentication.")
	fs.BoolVar(&cfg.PeerTLS.AutoTLS, "peer-auto-tls", false, "Peer TLS using generated certificates.")
	fs.StringVar(&cfg.PeerTLS.AllowedCN, "peer-cert-allowed-cn", "", "Allowed CN for inter peer authentication.")
	fs.StringVar(&cfg.PeerTLS.AllowedHostname, "peer-cert-allowed-hostname", "", "Allowed TLS hostname for inter peer authentication.")
	fs.StringVar(&cfg.PeerTLS.CRLFile, "peer-crl-file", "", "Path to the peer certificate revocation list file.")
	cors, hosts := stringList(cfg.CORS), stringList(cfg.HostWhitelist)
	fs.Var(&cors, "cors", "Comma-separated white list of origins for CORS, or cross-origin resource sharing, (empty or * means allow all).")
	fs.Var(&hosts, "host-whitelist", "Comma-separated acceptable hostnames from HTTP client requests, if server is not secure (empty means allow all).")
	fs.BoolVar(&cfg.EnablePprof, "enable-pprof", false, "Enable runtime profiling data via HTTP server. Address is at client URL + \"/debug/pprof/\"")
	fs.StringVar(&cfg.AuthToken, "auth-token", cfg.AuthToken, "Specify auth token specific options. Only 'simple' and 'jwt' are supported; jwt takes pub-key, priv-key, sign-method and ttl, e.g. 'jwt,pub-key=/key.pub,priv-key=/key,sign-method=RS256,ttl=5m'.")
	tokenTTL := fs.Uint("auth-token-ttl", 300, "The lifetime in seconds of the auth token.")
	fs.IntVar(&cfg.BcryptCost, "bcrypt-cost", cfg.BcryptCost, "Specify bcrypt algorithm cost factor for auth password hashing.")
	progress := fs.Duration("experimental-watch-progress-notify-interval", cfg.WatchProgressNotifyInterval, "Duration of periodic watch progress notifications.")
	configFile := fs.String("config-file", "", "Path to the server configuration file. Note that if a configuration file is provided, other command line flags and environment variables will be ignored.")
	logLevel := fs.String("log-level", "info", "Configures log level. Only supports debug, info, warn, error.")
	fs.BoolVar(&showVersion, "version", false, "Print the version and exit.")
	if err = fs.Parse(args); err != nil {
		return cfg, 0, false, err
	}
	if fs.NArg() > 0 {
		return cfg, 0, false, fmt.Errorf("%q is not a valid flag", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["config-file"] {
		for _, name := range []string{"ETCD_CONFIG_FILE", "CAIRN_CONFIG_FILE"} {
			if v := getenv(name); v != "" && *configFile == "" {
				*configFile = v
			}
		}
	}
	if *configFile != "" && configOnly == "" {
		// As in etcd, the file is the whole configuration: start again
		// from the defaults, with no other flag and no environment.
		return parse(nil, func(string) string { return "" }, out, *configFile)
	}
	if configOnly != "" {
		if err = applyConfigFile(fs, configOnly); err != nil {
			return cfg, 0, false, err
		}
		fs.VisitAll(func(f *flag.Flag) { set[f.Name] = true })
	}
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		for _, name := range []string{"ETCD_" + env, "CAIRN_" + env} {
			if v := getenv(name); v != "" {
				if e := f.Value.Set(v); e != nil {
					err = fmt.Errorf("invalid value %q for %s: %v", v, name, e)
				}
				return
			}
		}
	})
	if err != nil {
		return cfg, 0, false, err
	}
	cfg.ListenClientURLs, cfg.AdvertiseClientURLs, cfg.InitialAdvertisePeerURLs = lcu, acu, apu
	cfg.ListenMetricsURLs, cfg.ListenPeerURLs = lmu, lpu
	cfg.CORS, cfg.HostWhitelist = cors, hosts
	if cfg.InitialCluster, err = parseInitialCluster(cfg.Name, apu, *initialCluster, *clusterState); err != nil {
		return cfg, 0, false, err
	}
	cfg.InitialClusterState = *clusterState
	if cfg.AutoCompaction, err = member.ParseAutoCompaction(*acMode, *acRetention); err != nil {
		return cfg, 0, false, err
	}
	cfg.NoStrictReconfigCheck = !*strictReconfig
	if cfg.MaxLearners < 1 {
		return cfg, 0, false, fmt.Errorf("--max-learners must be at least 1, got %d", cfg.MaxLearners)
	}
	cfg.AuthTokenTTL = time.Duration(*tokenTTL) * time.Second
	cfg.WatchProgressNotifyInterval = *progress
	if cfg.QuotaBackendBytes > member.MaxQuotaBytes {
		slog.Warn("--quota-backend-bytes exceeds the maximum recommended", "quota", cfg.QuotaBackendBytes, "max", int64(member.MaxQuotaBytes))
	}
	cfg.HeartbeatInterval = time.Duration(*hb) * time.Millisecond
	cfg.ElectionTimeout = time.Duration(*et) * time.Millisecond
	if err = level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, 0, false, fmt.Errorf("--log-level: %v", err)
	}
	return cfg, level, showVersion, nil
}

// parseInitialCluster reads --initial-cluster and checks it with
// --initial-cluster-state as etcd does at bootstrap: name=URL pairs (a
// name may have several URLs), this member's name among them with
// exactly its advertised peer URLs. An empty --initial-cluster is this
// member alone (nil).
func parseInitialCluster(name string, peerURLs []string, cluster, state string) ([]member.InitialMember, error) {
	switch state {
	case "new":
	case "existing":
	default:
		return nil, fmt.Errorf("unexpected clusterState %q", state)
	}
	if cluster == "" {
		return nil, nil
	}
	var members []member.InitialMember
	index := map[string]int{}
	for _, part := range strings.Split(cluster, ",") {
		n, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || n == "" || u == "" {
			return nil, fmt.Errorf("--initial-cluster %q: %q is not name=URL", cluster, part)
		}
		if _, err := url.Parse(u); err != nil {
			return nil, fmt.Errorf("--initial-cluster %q: %w", cluster, err)
		}
		i, seen := index[n]
		if !seen {
			i = len(members)
			index[n] = i
			members = append(members, member.InitialMember{Name: n})
		}
		members[i].PeerURLs = append(members[i].PeerURLs, u)
	}
	// The member's own bootstrap checks: this name present with exactly
	// its advertised peer URLs, no URL twice.
	return members, member.CheckInitialCluster(member.Config{Name: name, InitialAdvertisePeerURLs: peerURLs, InitialCluster: members})
}

// applyConfigFile sets the flags from an etcd YAML configuration file: its
// keys are the flag names; TLS settings sit under client-transport-security
// and peer-transport-security.
// Keys cairn does not know are reported and ignored.
func applyConfigFile(fs *flag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config-file: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("--config-file %s: %w", path, err)
	}
	set := func(key string, v any) error {
		if v == nil {
			return nil
		}
		f := fs.Lookup(key)
		if f == nil || key == "config-file" {
			slog.Warn("configuration file key not supported; ignored", "key", key)
			return nil
		}
		var s string
		switch x := v.(type) {
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			s = strings.Join(parts, ",")
		default:
			s = fmt.Sprint(x)
		}
		if s == "" {
			return nil
		}
		if err := f.Value.Set(s); err != nil {
			return fmt.Errorf("--config-file %s: %s: %v", path, key, err)
		}
		return nil
	}
	for key, v := range doc {
		if key == "client-transport-security" || key == "peer-transport-security" {
			sec, _ := v.(map[string]any)
			for k, v := range sec {
				if key == "peer-transport-security" {
					if flag, ok := peerSecurityKeys[k]; ok {
						k = flag
					} else {
						k = key + "." + k // not a flag: reported and ignored
					}
				}
				if err := set(k, v); err != nil {
					return err
				}
			}
			continue
		}
		if key == "experimental-snapshot-catch-up-entries" {
			key = "experimental-snapshot-catchup-entries" // etcd's YAML spells it so
		}
		if err := set(key, v); err != nil {
			return err
		}
	}
	return nil
}

// peerSecurityKeys are the flags of etcd's peer-transport-security keys.
var peerSecurityKeys = map[string]string{
	"cert-file": "peer-cert-file", "key-file": "peer-key-file", "trusted-ca-file": "peer-trusted-ca-file",
	"client-cert-auth": "peer-client-cert-auth", "auto-tls": "peer-auto-tls",
	"allowed-cn": "peer-cert-allowed-cn", "allowed-hostname": "peer-cert-allowed-hostname", "crl-file": "peer-crl-file",
}

// notifySystemd sends READY=1 to $NOTIFY_SOCKET, as a Type=notify unit
// expects once the member serves; without the variable it does nothing.
func notifySystemd() error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Write([]byte("READY=1"))
	return err
}

// restore is `cairn snapshot restore FILE`: a new data dir from a
// snapshot, as `etcdctl snapshot restore` makes one.
func restore(args []string, out io.Writer) error {
	cfg := server.DefaultConfig()
	fs := flag.NewFlagSet("cairn snapshot restore", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&cfg.Name, "name", cfg.Name, "Human-readable name for this member.")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "Path to the data directory (default ${name}.cairn).")
	fs.StringVar(&cfg.InitialClusterToken, "initial-cluster-token", cfg.InitialClusterToken, "Initial cluster token for the cluster during restore bootstrap.")
	apu := urlList(cfg.InitialAdvertisePeerURLs)
	fs.Var(&apu, "initial-advertise-peer-urls", "List of this member's peer URLs to advertise to the rest of the cluster.")
	skip := fs.Bool("skip-hash-check", false, "Ignore snapshot integrity hash value (required if copied from data directory).")
	// The file may come before or after the flags.
	var file string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if file == "" && fs.NArg() > 0 {
		file = fs.Arg(0)
	}
	if file == "" {
		return errors.New("snapshot restore needs the snapshot file")
	}
	cfg.InitialAdvertisePeerURLs = apu
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn"
	}
	if err := server.RestoreSnapshot(file, cfg, *skip); err != nil {
		return err
	}
	fmt.Fprintf(out, "restored snapshot %s into %s\n", file, cfg.DataDir)
	return nil
}
