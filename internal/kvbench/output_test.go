package kvbench

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestOutputsParseBack: the JSON report reads back equal; the CSV has the
// header and a row a kind whose numbers are the report's; the text names
// every kind and error; the HTML report holds its three plots, and its
// report.json is the report.
func TestOutputsParseBack(t *testing.T) {
	ep, _ := member(t)
	rep, res := bench(t, ep, "watch", 150, nil)
	rep.ErrorCodes = map[string]uint64{"Unavailable: etcdserver: leader changed": 2}

	var js bytes.Buffer
	require.NoError(t, rep.WriteJSON(&js))
	var back Report
	require.NoError(t, json.Unmarshal(js.Bytes(), &back))
	require.Equal(t, *rep, back)

	var cs bytes.Buffer
	require.NoError(t, rep.WriteCSV(&cs))
	rows, err := csv.NewReader(&cs).ReadAll()
	require.NoError(t, err)
	require.Equal(t, CSVHeader(), rows[0])
	require.Len(t, rows, 1+len(rep.Kinds))
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for i, k := range rep.Kinds {
		row := rows[1+i]
		require.Equal(t, k.Kind, row[col["kind"]])
		require.Equal(t, strconv.FormatUint(k.Count, 10), row[col["count"]])
		for _, c := range latColumns() {
			v, err := strconv.ParseFloat(row[col[c+"_ms"]], 64)
			require.NoError(t, err, "%s %s", k.Kind, c)
			require.Equal(t, k.Lat[c], v, "%s %s", k.Kind, c)
		}
	}

	var txt bytes.Buffer
	require.NoError(t, rep.WriteText(&txt))
	for _, k := range rep.Kinds {
		require.Contains(t, txt.String(), k.Kind)
	}
	require.Contains(t, txt.String(), "2  Unavailable: etcdserver: leader changed")

	dir := filepath.Join(t.TempDir(), "report")
	require.NoError(t, WriteHTML(dir, rep, res))
	page, err := os.ReadFile(filepath.Join(dir, "index.html"))
	require.NoError(t, err)
	require.Equal(t, 3, strings.Count(string(page), "<svg"), "three plots")
	for _, title := range []string{"Throughput", "Latency over time", "Latency by percentile"} {
		require.Contains(t, string(page), title)
	}
	require.GreaterOrEqual(t, strings.Count(string(page), "<polyline"), 1+2+len(rep.Kinds), "a line a series: throughput, p50 and p99, each kind")
	require.NotContains(t, string(page), "NaN")
	saved, err := os.ReadFile(filepath.Join(dir, "report.json"))
	require.NoError(t, err)
	require.JSONEq(t, js.String(), string(saved))
}

// TestProgress: the bar shows the share done (of the total, or of the
// duration) in place; the lines say the same a line at a time.
func TestProgress(t *testing.T) {
	var b bytes.Buffer
	bar, done := ProgressBar(&b)
	bar(Progress{Done: 50, Total: 100, Rate: 1234.4, Errors: 2, Elapsed: 1500 * time.Millisecond})
	require.Equal(t, "\r[===============               ]  50% 50 done, 1234/s, 2 errors, 1.5s  ", b.String())
	b.Reset()
	bar(Progress{Done: 7, Of: 4 * time.Second, Elapsed: time.Second})
	require.True(t, strings.HasPrefix(b.String(), "\r[=======                       ]  25% 7 done"), b.String())
	b.Reset()
	done()
	require.Equal(t, "\n", b.String())
	b.Reset()
	ProgressLines(&b)(Progress{Done: 10, Rate: 5, Elapsed: 2 * time.Second})
	require.Equal(t, "2s: 10 done, 5/s, 0 errors\n", b.String())
}
