package jepsen

import (
	"fmt"
	"html/template"
	"math"
	"os"
	"sort"
	"strings"
)

// The report is one HTML page with no scripts: the verdict, each
// checker's result, the fault timeline, and two plots in the manner of
// Jepsen's performance graphs, each with the nemesis windows shaded:
// every operation's latency over time (log scale, by outcome), and
// throughput per second of each workload's successful operations.

const (
	plotW, plotH = 960.0, 300.0
	padL, padB   = 60.0, 30.0
	padT, padR   = 10.0, 150.0
)

var statusColor = map[Status]string{StatusOK: "#1f77b4", StatusFail: "#d62728", StatusUnknown: "#ff7f0e"}

var workloadColors = []string{"#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"}

type plot struct {
	Title string
	SVG   template.HTML
}

func writeReport(path string, out *Outcome, h *History) error {
	ops := h.Ops()
	end := h.Now()
	for _, op := range ops {
		end = max(end, op.Return)
	}
	plots := []plot{
		{"Latency over time (log scale): ok, fail, unknown", template.HTML(latencyPlot(ops, out.Faults, end))},
		{"Throughput: successful operations per second", template.HTML(throughputPlot(ops, out.Faults, end))},
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return reportPage.Execute(f, map[string]any{"Out": out, "Plots": plots, "Verdict": Verdict(out)})
}

// Verdict is a run's one line: valid or not, and why.
func Verdict(out *Outcome) string {
	var bad []string
	ops := 0
	for _, r := range out.Results {
		ops += r.Ops
		if !r.Valid {
			bad = append(bad, fmt.Sprintf("%s (%d anomalies)", r.Workload, len(r.Anomalies)))
		}
	}
	bad = append(bad, out.Problems...)
	if len(bad) == 0 {
		return fmt.Sprintf("valid: %s, %d members, %s, nemeses %s, %d operations, no anomalies (seed %d)",
			out.Target, out.Members, out.Time, strings.Join(out.Nemeses, ","), ops, out.Seed)
	}
	return fmt.Sprintf("INVALID: %s (seed %d, %s)", strings.Join(bad, "; "), out.Seed, out.Dir)
}

// frame draws the axes and shades the faults; x maps ns to pixels.
func frame(b *strings.Builder, faults []Fault, end int64) func(int64) float64 {
	x := func(t int64) float64 { return padL + float64(t)/float64(max(end, 1))*(plotW-padL-padR) }
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`, plotW, plotH)
	for _, f := range faults {
		x0, x1 := x(f.Start), x(f.End)
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#f4c7c3" opacity="0.5"><title>%s: %s</title></rect>`,
			x0, padT, math.Max(x1-x0, 1), plotH-padT-padB, template.HTMLEscapeString(f.Nemesis), template.HTMLEscapeString(f.What))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#a33">%s</text>`, x0+2, padT+10, template.HTMLEscapeString(f.Nemesis))
	}
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, padL, plotH-padB, plotW-padR, plotH-padB)
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, padL, padT, padL, plotH-padB)
	secs := float64(end) / 1e9
	step := math.Max(1, math.Round(secs/10))
	for s := 0.0; s <= secs; s += step {
		fmt.Fprintf(b, `<text x="%.1f" y="%.0f" text-anchor="middle">%.0fs</text>`, x(int64(s*1e9)), plotH-padB+15, s)
	}
	return x
}

func latencyPlot(ops []Op, faults []Fault, end int64) string {
	var b strings.Builder
	x := frame(&b, faults, end)
	const lo, hi = 1e-4, 10.0 // seconds
	y := func(sec float64) float64 {
		sec = math.Min(math.Max(sec, lo), hi)
		return plotH - padB - (math.Log10(sec)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*(plotH-padT-padB)
	}
	for _, t := range []float64{1e-3, 1e-2, 1e-1, 1, 10} {
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%gs</text>`,
			padL, y(t), plotW-padR, y(t), padL-4, y(t)+4, t)
	}
	for _, op := range ops {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="1.3" fill="%s" opacity="0.6"/>`, x(op.Call), y(float64(op.Return-op.Call)/1e9), statusColor[op.Status])
	}
	ly := padT + 10.0
	for _, s := range []Status{StatusOK, StatusFail, StatusUnknown} {
		fmt.Fprintf(&b, `<circle cx="%.0f" cy="%.0f" r="4" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`, plotW-padR+15, ly, statusColor[s], plotW-padR+25, ly+4, s)
		ly += 16
	}
	b.WriteString(`</svg>`)
	return b.String()
}

func throughputPlot(ops []Op, faults []Fault, end int64) string {
	var b strings.Builder
	x := frame(&b, faults, end)
	secs := int(end/1e9) + 1
	perF := map[string][]int{}
	for _, op := range ops {
		if op.Status != StatusOK {
			continue
		}
		if perF[op.F] == nil {
			perF[op.F] = make([]int, secs)
		}
		if s := int(op.Return / 1e9); s < secs {
			perF[op.F][s]++
		}
	}
	peak := 1
	var fs []string
	for f, counts := range perF {
		fs = append(fs, f)
		for _, c := range counts {
			peak = max(peak, c)
		}
	}
	sort.Strings(fs)
	y := func(v int) float64 { return plotH - padB - float64(v)/float64(peak)*(plotH-padT-padB) }
	for _, v := range []int{0, peak / 2, peak} {
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%d/s</text>`,
			padL, y(v), plotW-padR, y(v), padL-4, y(v)+4, v)
	}
	for i, f := range fs {
		var pts []string
		for s, c := range perF[f] {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(int64(s)*1e9+5e8), y(c)))
		}
		color := workloadColors[i%len(workloadColors)]
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="1.5"/>`, strings.Join(pts, " "), color)
		ly := padT + 10 + float64(i)*16
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="3"/><text x="%.0f" y="%.0f">%s</text>`,
			plotW-padR+8, ly, plotW-padR+20, ly, color, plotW-padR+25, ly+4, template.HTMLEscapeString(f))
	}
	b.WriteString(`</svg>`)
	return b.String()
}

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"secs": func(ns int64) string { return fmt.Sprintf("%.2f s", float64(ns)/1e9) },
}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>jepsen: {{.Out.Target}} seed {{.Out.Seed}}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.bad{color:#b00;font-weight:bold}.good{color:#070;font-weight:bold}</style></head><body>
<h1>{{.Out.Target}}, {{.Out.Members}} members, {{.Out.Time}}</h1>
<p class="{{if .Out.Valid}}good{{else}}bad{{end}}">{{.Verdict}}</p>
<p>Seed {{.Out.Seed}}; nemeses {{range .Out.Nemeses}}{{.}} {{end}}; the run's folder: {{.Out.Dir}} (history.jsonl, timeline.json, results.json, each member's data dir and log).</p>
{{range .Out.Problems}}<p class="bad">{{.}}</p>{{end}}
<h2>Checkers</h2>
<table><tr><th>checker</th><th>valid</th><th>ops</th><th>ok</th><th>fail</th><th>unknown</th><th>anomalies</th><th>stats</th></tr>
{{range .Out.Results}}<tr><td>{{.Workload}}</td><td class="{{if .Valid}}good{{else}}bad{{end}}">{{.Valid}}</td><td>{{.Ops}}</td><td>{{.OK}}</td><td>{{.Fail}}</td><td>{{.Unknown}}</td>
<td>{{range .Anomalies}}{{.}}<br>{{end}}</td><td>{{range $k, $v := .Stats}}{{$k}}: {{$v}}<br>{{end}}</td></tr>
{{end}}</table>
{{range .Plots}}<h2>{{.Title}}</h2>{{.SVG}}{{end}}
<h2>Faults</h2>
<table><tr><th>nemesis</th><th>start</th><th>end</th><th>what</th><th>error</th></tr>
{{range .Out.Faults}}<tr><td>{{.Nemesis}}</td><td>{{secs .Start}}</td><td>{{secs .End}}</td><td>{{.What}}</td><td>{{.Err}}</td></tr>
{{end}}</table>
</body></html>
`))
