package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/cairn-kv/cairn/internal/kvbench"
)

// compare runs the workload against the two sets of --compare in
// alternating rounds (A B A B ...) and prints each round and the median of
// the ratios A/B. The key space is preloaded in each set's first round
// only.
func compare(ctx context.Context, f *flags, o kvbench.Options, stdout, stderr io.Writer) error {
	targets, err := kvbench.ParseCompare(f.compare)
	if err != nil {
		return err
	}
	if f.rounds < 1 {
		return fmt.Errorf("--rounds must be at least 1")
	}
	var rounds []kvbench.Round
	no := false
	for r := range f.rounds {
		var rd kvbench.Round
		for _, t := range targets {
			fmt.Fprintf(stderr, "round %d of %d: %s (%s)\n", r+1, f.rounds, t.Name, strings.Join(t.Endpoints, ","))
			ot := o
			ot.Endpoints = t.Endpoints
			if r > 0 {
				ot.Preload = &no
			}
			done := progress(f, &ot, stderr)
			rep, res, err := kvbench.Bench(ctx, ot)
			done()
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r+1, t.Name, err)
			}
			rd.Reports = append(rd.Reports, rep)
			if f.reportDir != "" {
				dir := filepath.Join(f.reportDir, fmt.Sprintf("%s-%d", t.Name, r+1))
				if err := kvbench.WriteHTML(dir, rep, res); err != nil {
					return fmt.Errorf("writing the report: %w", err)
				}
			}
		}
		rounds = append(rounds, rd)
	}
	rows := kvbench.Compare(rounds)
	a, b := targets[0].Name, targets[1].Name
	switch f.output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			A, B   string
			Rounds []kvbench.Round
			Rows   []kvbench.CompareRow
		}{a, b, rounds, rows})
	case "csv":
		fmt.Fprintln(stdout, "measure,round,"+a+","+b+",ratio")
		for _, row := range rows {
			for i, v := range row.Values {
				fmt.Fprintf(stdout, "%s,%d,%g,%g,%g\n", row.Measure, i+1, v[0], v[1], ratio(v))
			}
			fmt.Fprintf(stdout, "%s,median,,,%g\n", row.Measure, row.Median)
		}
		return nil
	}
	fmt.Fprintf(stdout, "\n%s: %s against %s, %d rounds (ratio = %s / %s; the median of the rounds' ratios)\n",
		o.Workload.Name, a, b, f.rounds, a, b)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "  measure\t")
	for i := range rounds {
		fmt.Fprintf(tw, "round %d %s\t%s\tratio\t", i+1, a, b)
	}
	fmt.Fprintln(tw, "median ratio\t")
	for _, row := range rows {
		fmt.Fprintf(tw, "  %s\t", row.Measure)
		for _, v := range row.Values {
			fmt.Fprintf(tw, "%.4g\t%.4g\t%.3f\t", v[0], v[1], ratio(v))
		}
		fmt.Fprintf(tw, "%.3f\t\n", row.Median)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if f.reportDir != "" {
		fmt.Fprintf(stderr, "reports: %s/{%s,%s}-N/index.html\n", f.reportDir, a, b)
	}
	return nil
}

func ratio(v [2]float64) float64 {
	if v[1] == 0 {
		return 0
	}
	return v[0] / v[1]
}
