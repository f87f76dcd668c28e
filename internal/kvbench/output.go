package kvbench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"
)

// Percentiles are the ones every output reports.
var Percentiles = []float64{50, 90, 99, 99.9}

// Report is a run's result as the outputs write it: times in
// milliseconds, one row a kind of request or event.
type Report struct {
	Workload   string             `json:"workload"`
	Endpoints  []string           `json:"endpoints"`
	Clients    int                `json:"clients"`
	Conns      int                `json:"conns"`
	Rate       float64            `json:"target_rate,omitempty"` // open loop; absent: closed loop
	ElapsedS   float64            `json:"elapsed_s"`
	Requests   uint64             `json:"requests"`
	Errors     uint64             `json:"errors"`
	Throughput float64            `json:"throughput"` // requests a second
	ClientCPU  float64            `json:"client_cpu_us_per_request"`
	ServerCPU  *float64           `json:"server_cpu_us_per_request,omitempty"` // from the servers' /metrics when read (nil when not)
	Lat        map[string]float64 `json:"latency_ms,omitempty"`                // every kind of request together
	Kinds      []KindReport       `json:"kinds"`
	ErrorCodes map[string]uint64  `json:"error_codes,omitempty"`
	Timeline   []SampleReport     `json:"timeline,omitempty"`
}

// KindReport is one kind's row.
type KindReport struct {
	Kind   string             `json:"kind"`
	Event  bool               `json:"event,omitempty"`
	Count  uint64             `json:"count"`
	Errors uint64             `json:"errors"`
	PerSec float64            `json:"per_second"`
	Lat    map[string]float64 `json:"latency_ms,omitempty"` // p50, p90, p99, p99.9, max, mean
}

// SampleReport is one interval of the timeline.
type SampleReport struct {
	AtS    float64 `json:"at_s"`
	Done   uint64  `json:"done"`
	Rate   float64 `json:"rate"`
	Errors uint64  `json:"errors"`
	P50    float64 `json:"p50_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pname names a percentile as the outputs do: p50, p99.9.
func pname(q float64) string { return "p" + strconv.FormatFloat(q, 'f', -1, 64) }

// NewReport makes the report of res.
func NewReport(workload string, endpoints []string, clients, conns int, res *Result, clientCPU time.Duration) *Report {
	r := &Report{Workload: workload, Endpoints: endpoints, Clients: clients, Conns: conns, Rate: res.Rate,
		ElapsedS: res.Elapsed.Seconds(), Requests: res.Requests, Throughput: res.Throughput(), ErrorCodes: res.Errors()}
	for _, c := range r.ErrorCodes {
		r.Errors += c
	}
	if res.Requests > 0 {
		r.ClientCPU = float64(clientCPU) / float64(time.Microsecond) / float64(res.Requests)
	}
	r.Lat = latencies(res.All)
	for _, k := range res.Kinds {
		kr := KindReport{Kind: k.Kind, Event: k.Event, Count: k.Count(), Errors: k.Failed()}
		if res.Elapsed > 0 {
			kr.PerSec = float64(kr.Count) / res.Elapsed.Seconds()
		}
		kr.Lat = latencies(k.Hist)
		r.Kinds = append(r.Kinds, kr)
	}
	for _, s := range res.Timeline {
		r.Timeline = append(r.Timeline, SampleReport{AtS: s.At.Seconds(), Done: s.Done, Rate: s.Rate, Errors: s.Errors,
			P50: ms(s.P50), P99: ms(s.P99), Max: ms(s.Max)})
	}
	return r
}

// latencies returns h's percentiles, max and mean in ms (nil when empty).
func latencies(h *Histogram) map[string]float64 {
	if h == nil || h.Count() == 0 {
		return nil
	}
	lat := map[string]float64{"max": ms(h.Max()), "mean": ms(h.Mean())}
	for _, q := range Percentiles {
		lat[pname(q)] = ms(h.Percentile(q))
	}
	return lat
}

// latColumns are the latency columns of the text and CSV outputs.
func latColumns() []string {
	var cols []string
	for _, q := range Percentiles {
		cols = append(cols, pname(q))
	}
	return append(cols, "max", "mean")
}

// WriteText writes the report for a reader.
func (r *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "\n%s: %d clients over %d connections to %v\n", r.Workload, r.Clients, r.Conns, r.Endpoints)
	fmt.Fprintf(w, "  elapsed     %.3f s\n", r.ElapsedS)
	fmt.Fprintf(w, "  requests    %d (%d failed)\n", r.Requests, r.Errors)
	if r.Rate > 0 {
		fmt.Fprintf(w, "  throughput  %.1f requests/s (open loop at %.0f/s: latency counts from each request's due time)\n", r.Throughput, r.Rate)
	} else {
		fmt.Fprintf(w, "  throughput  %.1f requests/s (closed loop)\n", r.Throughput)
	}
	fmt.Fprintf(w, "  client CPU  %.1f µs a request\n", r.ClientCPU)
	if r.ServerCPU != nil {
		fmt.Fprintf(w, "  server CPU  %.1f µs a request\n", *r.ServerCPU)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "  kind\tcount\tper s\terrors")
	for _, c := range latColumns() {
		fmt.Fprintf(tw, "\t%s ms", c)
	}
	fmt.Fprintln(tw, "\t")
	for _, k := range r.Kinds {
		fmt.Fprintf(tw, "  %s\t%d\t%.1f\t%d", k.Kind, k.Count, k.PerSec, k.Errors)
		for _, c := range latColumns() {
			if v, ok := k.Lat[c]; ok {
				fmt.Fprintf(tw, "\t%.3f", v)
			} else {
				fmt.Fprint(tw, "\t-")
			}
		}
		fmt.Fprintln(tw, "\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.ErrorCodes) > 0 {
		fmt.Fprintln(w, "  errors by code:")
		var codes []string
		for c := range r.ErrorCodes {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		for _, c := range codes {
			fmt.Fprintf(w, "    %8d  %s\n", r.ErrorCodes[c], c)
		}
	}
	return nil
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// CSVHeader is the CSV output's first row.
func CSVHeader() []string {
	h := []string{"workload", "kind", "count", "errors", "per_second", "elapsed_s", "throughput", "client_cpu_us"}
	for _, c := range latColumns() {
		h = append(h, c+"_ms")
	}
	return h
}

// WriteCSV writes a header and a row a kind.
func (r *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader()); err != nil {
		return err
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, k := range r.Kinds {
		row := []string{r.Workload, k.Kind, strconv.FormatUint(k.Count, 10), strconv.FormatUint(k.Errors, 10),
			f(k.PerSec), f(r.ElapsedS), f(r.Throughput), f(r.ClientCPU)}
		for _, c := range latColumns() {
			if v, ok := k.Lat[c]; ok {
				row = append(row, f(v))
			} else {
				row = append(row, "")
			}
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}
