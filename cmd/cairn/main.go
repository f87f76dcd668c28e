// Command cairn runs a cairn member, configured with etcd's flag names (and
// the same settings from ETCD_* or CAIRN_* environment variables), so that
// existing units and scripts work.
//
// With no flags it is a single member named "default" serving clients on
// http://127.0.0.1:2379 from ./default.cairn.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/server"
)

// version is cairn's version; the etcd API version it speaks is 3.5.
const version = "0.1.0"

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	os.Exit(run(os.Args[1:], environment(), os.Stdout, os.Stderr, sig, nil))
}

// environment is the process's environment as a map.
func environment() map[string]string {
	env := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

// run is the binary: it serves until a signal arrives on sig (then stops
// cleanly and returns 0) or the member fails (then returns 1, the reason
// on stderr). set, if not nil, changes the configuration before the start
// (tests give the member a file system that fails).
func run(args []string, env map[string]string, stdout, stderr io.Writer, sig <-chan os.Signal, set func(*server.Config)) int {
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
	o, err := parseFlags(args, env, stderr)
	if err != nil {
		if err == flag.ErrHelp {
			fmt.Fprint(stdout, help)
			return 0
		}
		fmt.Fprintln(stderr, "cairn:", err)
		return 2
	}
	if o.version {
		fmt.Fprintf(stdout, "cairn Version: %s\nAPI Version: 3.5\nGo Version: %s\nGo OS/Arch: %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	log, logs, err := o.log.open(stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "cairn:", err)
		return 2
	}
	defer logs.Close()
	for _, n := range o.notes {
		log.Log(context.Background(), n.level, n.msg, n.args...)
	}
	o.cfg.Logger = log // (--discovery's hook logs with it too)
	cfg := o.cfg
	if spec := env["CAIRN_FAILPOINTS"]; spec != "" {
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
	if err := server.RestoreSnapshot(file, cfg, server.RestoreOptions{SkipHashCheck: *skip}); err != nil {
		return err
	}
	fmt.Fprintf(out, "restored snapshot %s into %s\n", file, cfg.DataDir)
	return nil
}
