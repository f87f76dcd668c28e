// Command kvbench measures any etcd-API endpoint (cairn, etcd) with a
// workload: put, get, range, delete, txn, mixed, watch, lease, k8s. It
// prints latency percentiles, throughput and errors by code (text, JSON
// or CSV), draws an HTML report with --report, and with --compare A,B runs
// the same workload against two endpoint sets in alternating rounds and
// prints the ratios.
//
//	kvbench put --total 100000 --clients 1000 --conns 100 --val-size 256
//	kvbench get --consistency s --duration 30s --rate 5000 --report out/
//	kvbench put --compare cairn=127.0.0.1:2379,etcd=127.0.0.1:2389 --rounds 5
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/cairn-kv/cairn/internal/kvbench"
	"github.com/cairn-kv/cairn/internal/profiling"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newCommand(os.Stdout, os.Stderr).ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// flags are every workload's options.
type flags struct {
	endpoints                       []string
	conns, clients                  int
	total                           uint64
	duration, dialTimeout, cmdTO    time.Duration
	rate                            float64
	keySize, valSize                int
	keySpace                        uint64
	keyDist, keyPrefix              string
	zipf                            float64
	seed                            uint64
	consistency                     string
	limit, pageSize, leaseTTL       int64
	readRatio                       float64
	watchers                        int
	preload                         string
	output, reportDir, compare      string
	rounds                          int
	cacert, cert, key               string
	insecureSkipVerify, insecureTLS bool
	user, password                  string
	prof, progress, transport       string
}

func newCommand(stdout, stderr io.Writer) *cobra.Command {
	f := &flags{}
	root := &cobra.Command{
		Use:           "kvbench",
		Short:         "A benchmark for etcd-API endpoints (cairn, etcd)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringSliceVar(&f.endpoints, "endpoints", []string{"127.0.0.1:2379"}, "gRPC endpoints")
	pf.IntVar(&f.conns, "conns", 1, "gRPC connections")
	pf.IntVar(&f.clients, "clients", 1, "clients (goroutines), spread over the connections")
	pf.Uint64Var(&f.total, "total", 0, "requests to issue (default 10000 when --duration is not given)")
	pf.DurationVar(&f.duration, "duration", 0, "issue requests for this long")
	pf.Float64Var(&f.rate, "rate", 0, "open loop: requests a second from all clients, latency counted from each request's due time (0: closed loop)")
	pf.IntVar(&f.keySize, "key-size", 8, "key size in bytes")
	pf.IntVar(&f.valSize, "val-size", 8, "value size in bytes")
	pf.Uint64Var(&f.keySpace, "key-space", 1, "keys in the key space")
	pf.StringVar(&f.keyDist, "key-dist", "uniform", "key distribution: sequential, uniform or zipfian")
	pf.Float64Var(&f.zipf, "zipf-s", 1.1, "the zipfian distribution's exponent (> 1)")
	pf.StringVar(&f.keyPrefix, "key-prefix", "", "prefix of every key")
	pf.Uint64Var(&f.seed, "seed", 0, "seed of the key choices and values (0: a random one, printed)")
	pf.StringVar(&f.consistency, "consistency", "l", "reads: l (linearizable) or s (serializable)")
	pf.Int64Var(&f.limit, "limit", 100, "range: keys a request (0: to the end of the key space)")
	pf.Float64Var(&f.readRatio, "read-ratio", 0.9, "mixed: the share of requests that are gets")
	pf.IntVar(&f.watchers, "watchers", 10, "watch, k8s: watchers over the key space")
	pf.Int64Var(&f.leaseTTL, "lease-ttl", 60, "lease: TTL of the granted leases, seconds")
	pf.Int64Var(&f.pageSize, "page-size", 500, "k8s: keys a list page")
	pf.StringVar(&f.preload, "preload", "auto", "put every key of the space before the run: auto (the workloads that read), true or false")
	pf.StringVarP(&f.output, "output", "o", "text", "output: text, json or csv")
	pf.StringVar(&f.reportDir, "report", "", "write an HTML report (index.html, with plots) and report.json into this directory")
	pf.StringVar(&f.compare, "compare", "", "A,B: run against two endpoint sets in alternating rounds (a set's endpoints joined by +, optionally NAME=...)")
	pf.IntVar(&f.rounds, "rounds", 3, "--compare: rounds (each runs A then B)")
	pf.DurationVar(&f.dialTimeout, "dial-timeout", 2*time.Second, "dial timeout for client connections")
	pf.DurationVar(&f.cmdTO, "command-timeout", 0, "a request's timeout; over it, it fails with DeadlineExceeded (0: none)")
	pf.StringVar(&f.cacert, "cacert", "", "verify certificates of TLS-enabled secure servers using this CA bundle")
	pf.StringVar(&f.cert, "cert", "", "identify secure client using this TLS certificate file")
	pf.StringVar(&f.key, "key", "", "identify secure client using this TLS key file")
	pf.BoolVar(&f.insecureSkipVerify, "insecure-skip-tls-verify", false, "skip server certificate verification")
	pf.BoolVar(&f.insecureTLS, "insecure-transport", true, "disable transport security for client connections")
	pf.StringVar(&f.user, "user", "", "username[:password] for authentication (prompt if password is not supplied)")
	pf.StringVar(&f.password, "password", "", "password for authentication (if this option is used, --user option shouldn't include password)")
	pf.StringVar(&f.prof, "profile", "", "profile kvbench itself: cpu, mem or mutex (written to the working directory)")
	pf.StringVar(&f.transport, "transport", "lean", "lean (cairn's HTTP/2 gRPC client: one system call for what a connection has to write, nothing a call does not need) or grpc-go (clientv3's connections)")
	pf.StringVar(&f.progress, "progress", "auto", "progress on stderr: auto (a bar on a terminal, else a line a second), bar, lines or none")

	for _, w := range kvbench.Workloads {
		root.AddCommand(&cobra.Command{
			Use:   w.Name,
			Short: w.Help,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return run(cmd.Context(), f, w, stdout, stderr)
			},
		})
	}
	return root
}

func run(ctx context.Context, f *flags, w *kvbench.Workload, stdout, stderr io.Writer) error {
	if os.Getenv("GOMAXPROCS") == "" && f.clients >= 1 && f.clients < runtime.GOMAXPROCS(0) {
		// Fewer clients than processors: the scheduler's idle processors
		// would spin looking for work around every round trip
		// (docs/kvbench.md has the measure).
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(f.clients))
	}
	stopProfile, err := profiling.Start(f.prof, ".")
	if err != nil {
		return err
	}
	defer stopProfile()
	o, err := options(f, w)
	if err != nil {
		return err
	}
	switch f.progress {
	case "auto", "bar", "lines", "none":
	default:
		return fmt.Errorf("--progress %q: want auto, bar, lines or none", f.progress)
	}
	switch f.output {
	case "text", "json", "csv":
	default:
		return fmt.Errorf("--output %q: want text, json or csv", f.output)
	}
	fmt.Fprintf(stderr, "kvbench %s: seed %d (replay with --seed %d)\n", w.Name, o.Env.Seed, o.Env.Seed)
	if f.compare != "" {
		return compare(ctx, f, o, stdout, stderr)
	}
	o.Endpoints = f.endpoints
	done := progress(f, &o, stderr)
	rep, res, err := kvbench.Bench(ctx, o)
	done()
	if err != nil {
		return err
	}
	if f.reportDir != "" {
		if err := kvbench.WriteHTML(f.reportDir, rep, res); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
		fmt.Fprintf(stderr, "report: %s\n", f.reportDir+"/index.html")
	}
	switch f.output {
	case "json":
		return rep.WriteJSON(stdout)
	case "csv":
		return rep.WriteCSV(stdout)
	}
	return rep.WriteText(stdout)
}

// progress sets the run's progress writer as --progress says, and returns
// what ends it.
func progress(f *flags, o *kvbench.Options, stderr io.Writer) (done func()) {
	mode := f.progress
	if mode == "auto" {
		mode = "lines"
		if file, ok := stderr.(*os.File); ok && kvbench.IsTerminal(file) {
			mode = "bar"
		}
	}
	done = func() {}
	switch mode {
	case "bar":
		o.Run.Progress, done = kvbench.ProgressBar(stderr)
	case "lines":
		o.Run.Progress = kvbench.ProgressLines(stderr)
	case "none":
	}
	return done
}

// options turns the flags into a benchmark's options.
func options(f *flags, w *kvbench.Workload) (kvbench.Options, error) {
	o := kvbench.Options{Workload: w, Conns: f.conns, Clients: f.clients, DialTimeout: f.dialTimeout, Transport: f.transport}
	o.Run = kvbench.RunConfig{Total: f.total, Duration: f.duration, Rate: f.rate, Timeout: f.cmdTO}
	if o.Run.Total == 0 && o.Run.Duration == 0 {
		o.Run.Total = 10000
	}
	if f.rate < 0 {
		return o, fmt.Errorf("--rate must not be negative")
	}
	seed := f.seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	switch f.consistency {
	case "l", "s":
	default:
		return o, fmt.Errorf("--consistency %q: want l or s", f.consistency)
	}
	if f.readRatio < 0 || f.readRatio > 1 {
		return o, fmt.Errorf("--read-ratio must be in [0, 1], not %g", f.readRatio)
	}
	o.Env = kvbench.Env{
		Keys:    &kvbench.Keys{Prefix: f.keyPrefix, Size: f.keySize, Space: f.keySpace, Dist: f.keyDist, Zipf: f.zipf},
		ValSize: f.valSize, Seed: seed, Serializable: f.consistency == "s", Limit: f.limit,
		ReadRatio: f.readRatio, Watchers: f.watchers, LeaseTTL: f.leaseTTL, PageSize: f.pageSize,
	}
	switch f.preload {
	case "auto":
	case "true", "false":
		b := f.preload == "true"
		o.Preload = &b
	default:
		return o, fmt.Errorf("--preload %q: want auto, true or false", f.preload)
	}
	if f.user != "" {
		o.Username, o.Password = f.user, f.password
		if name, pass, ok := strings.Cut(f.user, ":"); ok {
			if f.password != "" {
				return o, errors.New("--user includes a password and --password is given: use one")
			}
			o.Username, o.Password = name, pass
		} else if f.password == "" {
			return o, errors.New("--user has no password: give it as --user name:password or --password")
		}
	}
	if f.cert != "" || f.key != "" || f.cacert != "" || f.insecureSkipVerify || !f.insecureTLS {
		info := transport.TLSInfo{CertFile: f.cert, KeyFile: f.key, TrustedCAFile: f.cacert, InsecureSkipVerify: f.insecureSkipVerify}
		cfg, err := info.ClientConfig()
		if err != nil {
			return o, err
		}
		if f.cert == "" && f.key == "" && f.cacert == "" {
			cfg = &tls.Config{InsecureSkipVerify: f.insecureSkipVerify}
		}
		o.TLS = cfg
	}
	return o, nil
}
