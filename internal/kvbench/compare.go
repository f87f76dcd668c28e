package kvbench

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Target is a set of endpoints that --compare runs against, with a name.
type Target struct {
	Name      string
	Endpoints []string
}

// ParseCompare reads --compare's value: two sets, comma-separated, each
// NAME=URL[+URL...] or URL[+URL...] (named A and B then).
func ParseCompare(s string) ([]Target, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 2 {
		return nil, fmt.Errorf("--compare wants two endpoint sets, A,B (a set's endpoints joined by +), not %q", s)
	}
	var out []Target
	for i, p := range parts {
		t := Target{Name: string(rune('A' + i))}
		if name, eps, ok := strings.Cut(p, "="); ok {
			t.Name, p = name, eps
		}
		for _, ep := range strings.Split(p, "+") {
			if ep = strings.TrimSpace(ep); ep != "" {
				t.Endpoints = append(t.Endpoints, ep)
			}
		}
		if len(t.Endpoints) == 0 {
			return nil, fmt.Errorf("--compare: set %s has no endpoints", t.Name)
		}
		out = append(out, t)
	}
	return out, nil
}

// ServerCPU returns the CPU seconds the servers at endpoints have used, the
// sum of each one's process_cpu_seconds_total at /metrics; ok is false when
// one of them does not answer with it.
func ServerCPU(ctx context.Context, endpoints []string, tlsConfig *tls.Config) (sum float64, ok bool) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer client.CloseIdleConnections()
	for _, ep := range endpoints {
		u := ep
		if !strings.Contains(u, "://") {
			u = "http://" + u
			if tlsConfig != nil {
				u = "https://" + ep
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(u, "/")+"/metrics", nil)
		if err != nil {
			return 0, false
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, false
		}
		v, found := metricValue(bufio.NewScanner(resp.Body), "process_cpu_seconds_total")
		resp.Body.Close()
		if !found {
			return 0, false
		}
		sum += v
	}
	return sum, true
}

// metricValue returns the value of an unlabelled metric in Prometheus'
// text format.
func metricValue(sc *bufio.Scanner, name string) (float64, bool) {
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// Round is one round of a comparison: each target's report, in order.
type Round struct {
	Reports []*Report
}

// Median returns the median of xs (0 when empty).
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// CompareRow is a measure of a comparison: each round's ratio (first
// target over second) and their median.
type CompareRow struct {
	Measure string
	Values  [][2]float64 // a round's two values
	Ratios  []float64
	Median  float64
}

// Compare makes the rows of the comparison of rounds: throughput, the
// requests' p50, p99 and max, server CPU a request (when read from both)
// and client CPU a request.
func Compare(rounds []Round) []CompareRow {
	measures := []struct {
		name string
		get  func(*Report) float64
	}{
		{"throughput (requests/s)", func(r *Report) float64 { return r.Throughput }},
		{"p50 (ms)", func(r *Report) float64 { return r.Lat["p50"] }},
		{"p99 (ms)", func(r *Report) float64 { return r.Lat["p99"] }},
		{"max (ms)", func(r *Report) float64 { return r.Lat["max"] }},
		{"server CPU (µs a request)", func(r *Report) float64 {
			if r.ServerCPU == nil {
				return 0
			}
			return *r.ServerCPU
		}},
		{"client CPU (µs a request)", func(r *Report) float64 { return r.ClientCPU }},
	}
	var rows []CompareRow
	for _, m := range measures {
		row := CompareRow{Measure: m.name}
		for _, rd := range rounds {
			a, b := m.get(rd.Reports[0]), m.get(rd.Reports[1])
			row.Values = append(row.Values, [2]float64{a, b})
			if a > 0 && b > 0 {
				row.Ratios = append(row.Ratios, a/b)
			}
		}
		if len(row.Ratios) == 0 {
			continue // not measured (a server without /metrics)
		}
		row.Median = Median(row.Ratios)
		rows = append(rows, row)
	}
	return rows
}
