package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"unicode/utf8"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// printer writes responses in the format of --write-out: simple (text),
// json (the response as encoding/json writes it: numbers unquoted, bytes
// in base64), fields ("Name" : value lines), protobuf (the response's
// wire bytes) or table (a few commands).
type printer struct {
	w         io.Writer
	format    string
	hex       bool // keys and values as \x escapes
	valueOnly bool // get --print-value-only
}

func (c *ctl) setPrinter() error {
	switch c.g.output {
	case "simple", "json", "fields", "protobuf", "table":
	default:
		return fail(exitBadFeature, fmt.Errorf("unsupported output format"))
	}
	c.p = &printer{w: c.out, format: c.g.output, hex: c.g.hex}
	return nil
}

// A view is a response as each format shows it. A format whose part is nil
// is not supported by the command (exit 4, after the request was made, as
// with etcdctl).
type view struct {
	msg    any           // json, and protobuf when a proto.Message
	wire   proto.Message // protobuf, when not msg
	noWire bool          // no protobuf (several responses, as endpoint's)
	simple func(p *printer)
	fields func(f *fields)
	table  func() *table
}

// show prints v in the printer's format.
func (p *printer) show(v view) error {
	switch p.format {
	case "simple":
		if v.simple != nil {
			v.simple(p)
			return nil
		}
	case "json":
		if v.msg != nil {
			b, err := json.Marshal(v.msg)
			if err != nil {
				return fail(exitError, err)
			}
			fmt.Fprintln(p.w, string(b))
			return nil
		}
	case "protobuf":
		if (v.msg != nil || v.wire != nil) && !v.noWire {
			m, ok := v.msg.(proto.Message)
			if v.wire != nil {
				m, ok = v.wire, true
			}
			if !ok {
				return fail(exitBadFeature, fmt.Errorf("marshal unsupported for type %T", v.msg))
			}
			b, err := proto.Marshal(m)
			if err != nil {
				return fail(exitError, err)
			}
			_, err = p.w.Write(b)
			return err
		}
	case "fields":
		if v.fields != nil {
			v.fields(&fields{p.w})
			return nil
		}
	case "table":
		if v.table != nil {
			v.table().render(p.w)
			return nil
		}
	}
	return fail(exitBadFeature, fmt.Errorf("%s not supported as output format", p.format))
}

// kv prints a key and its value on a line each (the value only with
// --print-value-only).
func (p *printer) kv(kv *mvccpb.KeyValue) {
	k, v := string(kv.Key), string(kv.Value)
	if p.hex {
		k, v = hexBytes(kv.Key), hexBytes(kv.Value)
	}
	if !p.valueOnly {
		fmt.Fprintln(p.w, k)
	}
	fmt.Fprintln(p.w, v)
}

// hexBytes is b as \x escapes: "\x66\x6f\x6f".
func hexBytes(b []byte) string {
	h := hex.EncodeToString(b)
	var sb strings.Builder
	for i := 0; i < len(h); i += 2 {
		sb.WriteString(`\x`)
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}

// fields writes "Name" : value lines.
type fields struct{ w io.Writer }

// n is a number, a bool or anything printed as Go prints it.
func (f *fields) n(name string, v any) { fmt.Fprintf(f.w, "%q : %v\n", name, v) }

// s is a quoted string.
func (f *fields) s(name, v string) { fmt.Fprintf(f.w, "%q : %q\n", name, v) }

func (f *fields) blank() { fmt.Fprintln(f.w) }

func (f *fields) header(h *pb.ResponseHeader) {
	if h == nil {
		h = &pb.ResponseHeader{}
	}
	f.n("ClusterID", h.ClusterId)
	f.n("MemberID", h.MemberId)
	f.n("Revision", h.Revision)
	f.n("RaftTerm", h.RaftTerm)
}

// kv is a key-value's fields, each name after prefix ("Prev").
func (f *fields) kv(prefix string, kv *mvccpb.KeyValue) {
	f.s(prefix+"Key", string(kv.Key))
	f.n(prefix+"CreateRevision", kv.CreateRevision)
	f.n(prefix+"ModRevision", kv.ModRevision)
	f.n(prefix+"Version", kv.Version)
	f.s(prefix+"Value", string(kv.Value))
	f.n(prefix+"Lease", kv.Lease)
}

// table is an ASCII table: upper-case headers centred, cells right-aligned,
// a cell wider than 30 wrapped at its spaces (into the lines of least
// raggedness), as etcdctl draws them.
type table struct {
	header []string
	rows   [][]string
}

// simple prints each row with its cells joined by ", " (the simple form
// of a command that also has a table).
func (t *table) simple(w io.Writer) {
	for _, row := range t.rows {
		fmt.Fprintln(w, strings.Join(row, ", "))
	}
}

// maxCellWidth is the width a cell's text wraps at.
const maxCellWidth = 30

func (t *table) render(w io.Writer) {
	widths := make([]int, len(t.header))
	cell := func(col int, s string) []string {
		lines := wrapCell(s)
		for _, l := range lines {
			widths[col] = max(widths[col], textWidth(l))
		}
		return lines
	}
	header := make([][]string, len(t.header))
	for i, h := range t.header {
		header[i] = cell(i, h)
	}
	rows := make([][][]string, len(t.rows))
	for r, row := range t.rows {
		for i, s := range row {
			rows[r] = append(rows[r], cell(i, s))
		}
	}
	line := func() {
		var sb strings.Builder
		sb.WriteString("+")
		for _, wd := range widths {
			sb.WriteString(strings.Repeat("-", wd+2) + "+")
		}
		fmt.Fprintln(w, sb.String())
	}
	printRow := func(cells [][]string, format func(s string, width int) string) {
		height := 0
		for _, c := range cells {
			height = max(height, len(c))
		}
		for l := range height {
			var sb strings.Builder
			sb.WriteString("|")
			for i, c := range cells {
				s := "  " // a cell with fewer lines than the row
				if l < len(c) {
					s = c[l]
				}
				sb.WriteString(" " + format(s, widths[i]) + " |")
			}
			fmt.Fprintln(w, sb.String())
		}
	}
	line()
	printRow(header, func(s string, width int) string { return padCenter(strings.ToUpper(s), width) })
	line()
	for _, r := range rows {
		printRow(r, padLeft)
	}
	line()
}

// wrapCell splits s at its newlines and wraps each paragraph wider than
// maxCellWidth (or than its longest word, if longer) at its spaces.
func wrapCell(s string) []string {
	paras := strings.Split(s, "\n")
	limit := 0
	for _, p := range paras {
		limit = max(limit, textWidth(p))
	}
	limit = min(limit, maxCellWidth)
	var out []string
	for i, p := range paras {
		if i > 0 {
			out = append(out, " ")
		}
		out = append(out, wrapWords(strings.Split(p, " "), limit)...)
	}
	return out
}

// wrapWords breaks words into lines at most limit wide (or as wide as the
// widest word), choosing the breaks that minimise the sum of the squares
// of each line's slack but the last's.
func wrapWords(words []string, limit int) []string {
	for _, w := range words {
		limit = max(limit, textWidth(w))
	}
	n := len(words)
	// width(i, j) is words[i..j] joined by single spaces.
	prefix := make([]int, n+1)
	for i, w := range words {
		prefix[i+1] = prefix[i] + textWidth(w)
	}
	width := func(i, j int) int { return prefix[j+1] - prefix[i] + (j - i) }
	const overlong = 100000
	cost := make([]int, n+1)
	next := make([]int, n+1)
	for i := n - 1; i >= 0; i-- {
		if width(i, n-1) <= limit {
			cost[i], next[i] = 0, n
			continue
		}
		cost[i] = math.MaxInt32
		for j := i + 1; j < n; j++ {
			d := limit - width(i, j-1)
			c := d*d + cost[j]
			if width(i, j-1) > limit {
				c += overlong
			}
			if c < cost[i] {
				cost[i], next[i] = c, j
			}
		}
	}
	var lines []string
	for i := 0; i < n; i = next[i] {
		lines = append(lines, strings.Join(words[i:next[i]], " "))
	}
	return lines
}

func textWidth(s string) int { return utf8.RuneCountInString(s) }

// padCenter centres s in width (an odd gap's extra space on the right).
func padCenter(s string, width int) string {
	gap := width - textWidth(s)
	if gap <= 0 {
		return s
	}
	return strings.Repeat(" ", gap/2) + s + strings.Repeat(" ", gap-gap/2)
}

func padLeft(s string, width int) string {
	if gap := width - textWidth(s); gap > 0 {
		return strings.Repeat(" ", gap) + s
	}
	return s
}

// siBytes is n bytes in SI units as etcdctl shows a size: "20 kB",
// "1.5 MB", "9 B".
func siBytes(n uint64) string {
	if n < 10 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}
	e := math.Floor(math.Log(float64(n)) / math.Log(1000))
	val := math.Floor(float64(n)/math.Pow(1000, e)*10+0.5) / 10
	f := "%.0f %s"
	if val < 10 {
		f = "%.1f %s"
	}
	return fmt.Sprintf(f, val, units[int(e)])
}
