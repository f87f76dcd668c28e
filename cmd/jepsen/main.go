// Command jepsen runs cairn (or etcd, for comparison) as a cluster of real
// processes on 127.0.0.1 under faults, drives workloads against it,
// checks what it answered, and writes a report.
//
//	jepsen --nemesis kill,partition-halves --workload register,bank --time 2m
//	jepsen --target etcd --binary /path/to/etcd ...
//	jepsen --matrix --time 2m     # every nemesis × every workload, a table
//
// A run prints its seed; --seed replays its schedule and choices. It
// exits 1 if any checker found an anomaly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cairn-kv/cairn/internal/profiling"
	"github.com/cairn-kv/cairn/jepsen"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("jepsen", flag.ContinueOnError)
	target := fs.String("target", "cairn", "the server: cairn or etcd")
	binary := fs.String("binary", "", "the server's binary (cairn: built from this module if empty)")
	members := fs.Int("members", 3, "members in the cluster (3 or 5)")
	nemeses := fs.String("nemesis", "kill,partition-halves,pause", "faults, in turn, comma-separated, or all: "+strings.Join(jepsen.Nemeses, ","))
	workloads := fs.String("workload", "register,bank,watch", "workloads run together, comma-separated, or all: "+strings.Join(jepsen.Workloads, ","))
	runTime := fs.Duration("time", time.Minute, "how long the workloads run (each cell of --matrix)")
	interval := fs.Duration("interval", 5*time.Second, "the quiet time before each fault")
	duration := fs.Duration("duration", 5*time.Second, "how long each fault lasts")
	seed := fs.Int64("seed", 0, "the run's seed (0: a fresh one, printed)")
	out := fs.String("out", "jepsen-runs", "the folder runs are written under")
	serverFlags := fs.String("server-flags", "--snapshot-count=2000", "flags every member starts with, space-separated")
	matrix := fs.Bool("matrix", false, "run every nemesis × workload (of --nemesis and --workload) for --time each and print a table")
	besideEtcd := fs.String("beside-etcd", "", "with --matrix: the etcd binary to run each cell against too, right after cairn")
	prof := fs.String("profile", "", "profile the harness: cpu, mem or mutex (written to the run's folder)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano() % 1_000_000_000
	}
	ns := expand(*nemeses, jepsen.Nemeses)
	ws := expand(*workloads, jepsen.Workloads)
	root, err := filepath.Abs(filepath.Join(*out, fmt.Sprintf("%s-%s-%d", time.Now().Format("20060102-150405"), *target, *seed)))
	if err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fail(err)
	}
	stopProfile, err := profiling.Start(*prof, root)
	if err != nil {
		return fail(err)
	}
	defer stopProfile()
	if *binary == "" {
		if *target != "cairn" {
			return fail(errors.New("--binary is needed for --target " + *target))
		}
		*binary = filepath.Join(root, "cairn")
		build := exec.Command("go", "build", "-o", *binary, "github.com/cairn-kv/cairn/cmd/cairn")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fail(fmt.Errorf("building cairn: %w", err))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := jepsen.Config{
		Cluster: jepsen.ClusterConfig{
			Target:  jepsen.Target{Name: *target, Binary: *binary},
			Members: *members,
			Flags:   strings.Fields(*serverFlags),
		},
		Workloads: ws,
		Schedule:  jepsen.Schedule{Nemeses: ns, Interval: *interval, Duration: *duration},
		Time:      *runTime,
		Seed:      *seed,
		Log: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
		},
	}
	if *matrix {
		targets := []jepsen.Target{cfg.Cluster.Target}
		if *besideEtcd != "" {
			targets = append(targets, jepsen.Target{Name: "etcd", Binary: *besideEtcd})
		}
		return runMatrix(ctx, cfg, root, ns, ws, targets)
	}
	cfg.Cluster.Dir = filepath.Join(root, "run")
	o, err := jepsen.Execute(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	fmt.Println(jepsen.Verdict(o))
	fmt.Println("report:", filepath.Join(cfg.Cluster.Dir, "report.html"))
	if !o.Valid {
		return 1
	}
	return 0
}

// runMatrix runs each nemesis with each workload, one run a cell (on each
// target in turn, so that a cell's runs share the machine's state), and
// prints a table of operations, anomalies, unknown outcomes, and the
// latency and throughput of successful operations, overall and while a
// fault was on; the table is also written to matrix.txt in root.
func runMatrix(ctx context.Context, cfg jepsen.Config, root string, ns, ws []string, targets []jepsen.Target) int {
	f, err := os.Create(filepath.Join(root, "matrix.txt"))
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	w := tabwriter.NewWriter(io.MultiWriter(os.Stdout, f), 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "target\tnemesis\tworkload\tops\tok\tunknown\tanomalies\tok/s\tp50 ms\tp99 ms\tok/s in faults\tp99 ms in faults\tverdict")
	code := 0
	for _, n := range ns {
		for _, wl := range ws {
			for _, t := range targets {
				if n == "disk" && t.Name != "cairn" {
					continue // failpoints are cairn's
				}
				c := cfg
				c.Cluster.Target = t
				c.Workloads = []string{wl}
				c.Schedule.Nemeses = []string{n}
				c.Cluster.Dir = filepath.Join(root, t.Name+"-"+n+"-"+wl)
				o, err := jepsen.Execute(ctx, c)
				if err != nil {
					fmt.Fprintf(w, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\terror: %v\n", t.Name, n, wl, err)
					code = 1
				} else {
					s := o.Summary
					verdict := "valid"
					if !o.Valid {
						verdict = "INVALID: " + jepsen.Verdict(o)
						code = 1
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.0f\t%.1f\t%.1f\t%.0f\t%.1f\t%s\n", t.Name, n, wl, s.Ops, s.OK, s.Unknown, s.Anomalies,
						s.Throughput, s.P50, s.P99, s.FaultThroughput, s.FaultP99, verdict)
				}
				w.Flush()
				if ctx.Err() != nil {
					return 1
				}
			}
		}
	}
	w.Flush()
	return code
}

func expand(list string, all []string) []string {
	if list == "all" {
		return all
	}
	var out []string
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "jepsen:", err)
	return 2
}
