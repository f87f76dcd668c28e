package kvbench

import (
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// WriteHTML writes dir/index.html, the report with its plots (throughput
// over time, p50 and p99 over time, and each kind's latency by
// percentile), and dir/report.json.
func WriteHTML(dir string, r *Report, res *Result) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.json"))
	if err != nil {
		return err
	}
	if err := r.WriteJSON(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}

	var tput, p50, p99 []xy
	for _, s := range r.Timeline {
		tput = append(tput, xy{s.AtS, s.Rate})
		p50 = append(p50, xy{s.AtS, s.P50})
		p99 = append(p99, xy{s.AtS, s.P99})
	}
	var dist []series
	for i, k := range res.Kinds {
		if k.Hist.Count() == 0 {
			continue
		}
		var pts []xy
		for _, p := range k.Hist.Distribution() {
			if p.Q >= 100 {
				continue // 1/(1-q) has no place for the max
			}
			pts = append(pts, xy{1 / (1 - p.Q/100), ms(p.D)})
		}
		dist = append(dist, series{Name: k.Kind, Color: colors[i%len(colors)], Pts: pts})
	}
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		return err
	}
	page := struct {
		Title   string
		Summary string
		Plots   []template.HTML
	}{
		Title:   fmt.Sprintf("kvbench %s", r.Workload),
		Summary: text.String(),
		Plots: []template.HTML{
			plot("Throughput (requests a second)", "seconds", "requests/s", false, []series{{Name: "throughput", Color: colors[0], Pts: tput}}),
			plot("Latency over time (ms; each interval's requests)", "seconds", "ms", false, []series{{Name: "p50", Color: colors[0], Pts: p50}, {Name: "p99", Color: colors[1], Pts: p99}}),
			plot("Latency by percentile (ms)", "percentile", "ms", true, dist),
		},
	}
	out, err := os.Create(filepath.Join(dir, "index.html"))
	if err != nil {
		return err
	}
	if err := pageTemplate.Execute(out, page); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

var colors = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

type xy struct{ X, Y float64 }

type series struct {
	Name, Color string
	Pts         []xy
}

// plot draws series as an SVG line chart. With logX the x axis is
// 1/(1-q) on a log scale, labelled as percentiles (90, 99, 99.9, ...).
func plot(title, xlabel, ylabel string, logX bool, ss []series) template.HTML {
	const w, h, left, bottom, top, right = 720.0, 300.0, 60.0, 40.0, 30.0, 120.0
	var xmax, ymax float64
	xmin := math.Inf(1)
	for _, s := range ss {
		for _, p := range s.Pts {
			x := p.X
			if logX {
				x = math.Log10(x)
			}
			xmin, xmax, ymax = math.Min(xmin, x), math.Max(xmax, x), math.Max(ymax, p.Y)
		}
	}
	if math.IsInf(xmin, 1) {
		xmin, xmax = 0, 1
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	if ymax <= 0 {
		ymax = 1
	}
	ymax *= 1.05
	sx := func(x float64) float64 {
		if logX {
			x = math.Log10(x)
		}
		return left + (x-xmin)/(xmax-xmin)*(w-left-right)
	}
	sy := func(y float64) float64 { return h - bottom - y/ymax*(h-bottom-top) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" font-family="sans-serif" font-size="11">`, w, h)
	fmt.Fprintf(&b, `<text x="%g" y="16" font-size="13">%s</text>`, left, template.HTMLEscapeString(title))
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#000"/>`, left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#000"/>`, left, top, left, h-bottom)
	for i := 0; i <= 4; i++ {
		y := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="end">%.3g</text>`, left-4, sy(y)+4, y)
		fmt.Fprintf(&b, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#ddd"/>`, left, sy(y), w-right, sy(y))
	}
	if logX {
		for q, lab := 10.0, 90.0; math.Log10(q) <= xmax+1e-9; q, lab = q*10, 100-(100-lab)/10 {
			fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">%s</text>`, sx(q), h-bottom+14, fmt.Sprintf("%.6g", lab))
		}
	} else {
		for i := 0; i <= 4; i++ {
			x := xmin + (xmax-xmin)*float64(i)/4
			fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">%.3g</text>`, left+(x-xmin)/(xmax-xmin)*(w-left-right), h-bottom+14, x)
		}
	}
	fmt.Fprintf(&b, `<text x="%g" y="%g" text-anchor="middle">%s</text>`, (left+w-right)/2, h-6, template.HTMLEscapeString(xlabel))
	fmt.Fprintf(&b, `<text x="12" y="%g" transform="rotate(-90 12 %g)" text-anchor="middle">%s</text>`, (top+h-bottom)/2, (top+h-bottom)/2, template.HTMLEscapeString(ylabel))
	for i, s := range ss {
		var pts strings.Builder
		for _, p := range s.Pts {
			fmt.Fprintf(&pts, "%.1f,%.1f ", sx(p.X), sy(p.Y))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.Color, strings.TrimSpace(pts.String()))
		fmt.Fprintf(&b, `<text x="%g" y="%g" fill="%s">%s</text>`, w-right+8, top+14*float64(i+1), s.Color, template.HTMLEscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

var pageTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;margin:2em} pre{background:#f6f6f6;padding:1em}</style></head>
<body><h1>{{.Title}}</h1>
<pre>{{.Summary}}</pre>
{{range .Plots}}<div>{{.}}</div>
{{end}}</body></html>
`))
