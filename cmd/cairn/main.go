// Command cairn runs a cairn member, configured with etcd's flag names (and
// the same settings from ETCD_* or CAIRN_* environment variables), so that
// existing units and scripts work.
//
// With no flags it is a single member named "default" serving clients on
// http://127.0.0.1:2379 from ./default.cairn.
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/cairn-kv/cairn/server"
)

// version is cairn's version; the etcd API version it speaks is 3.5.
const version = "0.1.0"

func main() {
	cfg, logLevel, showVersion, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "cairn:", err)
		os.Exit(2)
	}
	if showVersion {
		fmt.Printf("cairn Version: %s\nAPI Version: 3.5\nGo Version: %s\nGo OS/Arch: %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel}))
	cfg.Logger = log
	s, err := server.Start(cfg)
	if err != nil {
		log.Error("cannot start", "err", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	got := <-sig
	log.Info("stopping", "signal", got.String())
	s.Stop()
	log.Info("stopped")
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

// parseFlags reads etcd's flags; a flag not on the command line takes its
// value from ETCD_<NAME> or CAIRN_<NAME> (dashes as underscores,
// uppercase), as etcd's do.
func parseFlags(args []string, getenv func(string) string, out io.Writer) (cfg server.Config, level slog.Level, showVersion bool, err error) {
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
	hb := fs.Uint("heartbeat-interval", uint(cfg.HeartbeatInterval/time.Millisecond), "Time (in milliseconds) of a heartbeat interval.")
	et := fs.Uint("election-timeout", uint(cfg.ElectionTimeout/time.Millisecond), "Time (in milliseconds) for an election to timeout.")
	fs.IntVar(&cfg.MaxRequestBytes, "max-request-bytes", cfg.MaxRequestBytes, "Maximum client request size in bytes the server will accept.")
	fs.IntVar(&cfg.MaxTxnOps, "max-txn-ops", cfg.MaxTxnOps, "Maximum number of operations permitted in a transaction.")
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
	cfg.HeartbeatInterval = time.Duration(*hb) * time.Millisecond
	cfg.ElectionTimeout = time.Duration(*et) * time.Millisecond
	if err = level.UnmarshalText([]byte(*logLevel)); err != nil {
		return cfg, 0, false, fmt.Errorf("--log-level: %v", err)
	}
	return cfg, level, showVersion, nil
}
