package e2e

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// A call is one run of the client a scenario made, as the transcript
// keeps it.
type call struct {
	args           []string
	stdin          string
	stdout, stderr string
	exit           int
	background     bool // (stdout: the lines it printed until stopped)
}

// A transcript is every call of a scenario, in order.
type transcript struct {
	mu    sync.Mutex
	calls []call
	norm  *normalizer // of the run's members
}

func (tr *transcript) add(c call) {
	if tr == nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.calls = append(tr.calls, c)
}

// outputs collects a process's stdout and stderr apart, and both in the
// order written.
type outputs struct {
	mu                       sync.Mutex
	stdout, stderr, combined bytes.Buffer
}

type outputWriter struct {
	o   *outputs
	own *bytes.Buffer
}

func (o *outputs) writer(own *bytes.Buffer) io.Writer { return outputWriter{o, own} }

func (w outputWriter) Write(p []byte) (int, error) {
	w.o.mu.Lock()
	defer w.o.mu.Unlock()
	w.own.Write(p)
	return w.o.combined.Write(p)
}

// A scenario drives a fresh member (started by the test) with a client.
type scenario func(t *testing.T, m *member)

// sameOutput runs scenario against a fresh member with etcdctl, then
// against another with cairnctl, each run checking what it checks; then
// it compares the two transcripts call by call: stdout, stderr (less the
// client library's JSON log lines, which carry times) and the exit code,
// once each run's own IDs, URLs, paths and durations are replaced by
// placeholders.
func sameOutput(t *testing.T, start func(t *testing.T) *member, sc scenario) {
	var runs [2]*transcript
	var norms [2]*normalizer
	for i, tool := range []string{"", "cairnctl"} {
		name := "etcdctl"
		if tool != "" {
			name = tool
		}
		ok := t.Run(name, func(t *testing.T) {
			m := start(t)
			m.tool = tool
			norms[i] = newNormalizer(m)
			m.rec = &transcript{norm: norms[i]}
			sc(t, m)
			runs[i] = m.rec
		})
		if !ok {
			return
		}
	}
	a, b := runs[0].calls, runs[1].calls
	for i := range max(len(a), len(b)) {
		if i >= len(a) || i >= len(b) {
			t.Errorf("etcdctl made %d calls, cairnctl %d", len(a), len(b))
			return
		}
		want, got := norms[0].call(a[i]), norms[1].call(b[i])
		if want != got {
			t.Errorf("call %d: cairnctl differs from etcdctl:\n--- etcdctl\n%s\n--- cairnctl\n%s", i, clip(want), clip(got))
		}
	}
}

// normalizer replaces what differs between two runs of a scenario by
// nature: the member's URL, ids (derived from its URLs), lease ids
// (derived from the time), the temporary directory, durations, and the
// client's own version.
type normalizer struct {
	urls    []string          // the members', in the order met
	ids     map[uint64]string // member, cluster and lease ids met,
	order   []uint64          // in this order
	members int
	leaseN  int
}

func newNormalizer(m *member) *normalizer {
	n := &normalizer{ids: map[uint64]string{}}
	n.addMember(m)
	return n
}

// addMember learns a member's URL and ids.
func (n *normalizer) addMember(m *member) {
	n.members++
	n.urls = append(n.urls, m.url)
	status := m.ctlQuiet("endpoint", "status", "-w", "json")
	for _, f := range []struct{ re, name string }{{`"member_id":(\d+)`, "member-id"}, {`"cluster_id":(\d+)`, "cluster-id"}} {
		if v := regexp.MustCompile(f.re).FindStringSubmatch(status); v != nil {
			id, _ := strconv.ParseUint(v[1], 10, 64)
			if n.ids[id] == "" {
				n.ids[id] = fmt.Sprintf("<%s-%d>", f.name, n.members)
				n.order = append(n.order, id)
			}
		}
	}
}

// adopt makes r, a member started during m's scenario, part of it: driven
// by the same client, its calls in the same transcript.
func (m *member) adopt(r *member) *member {
	r.tool = m.tool
	if m.rec != nil {
		m.rec.norm.addMember(r)
		r.rec = m.rec
	}
	return r
}

// leaseRE finds lease ids: as etcdctl prints them, and in lock and
// election keys; addedRE the id of a member added (the server's pick).
var (
	leaseRE  = regexp.MustCompile(`lease ([0-9a-f]{16})\b|/([0-9a-f]{16})\b`)
	addedRE  = regexp.MustCompile(`Member +([0-9a-f]+) added to cluster`)
	paddedRE = regexp.MustCompile(`(Member|cluster) ( *)([0-9a-f]+)`)
	// The members of ETCD_INITIAL_CLUSTER come in id order.
	initialClusterRE = regexp.MustCompile(`ETCD_INITIAL_CLUSTER="([^"]*)"`)
)

var (
	// A hash covers the leases' ids, which differ between runs; the page
	// file's size depends on when the server's batches committed.
	hashRE   = regexp.MustCompile(`"hash":\d+`)
	dbSizeRE = regexp.MustCompile(`"dbSize(InUse)?":\d+`)
	// ... and as endpoint status prints it in its other formats.
	dbSizeFieldRE  = regexp.MustCompile(`"DBSize" : \d+`)
	dbSizeSimpleRE = regexp.MustCompile(`(?m)^(\S+, \S+, [0-9.]+, )\d+(\.\d)? [kMGT]?B, `)
	dbSizeCellRE   = regexp.MustCompile(`\| +\d+(\.\d)? [kMGT]?B \|`)
	tookRE         = regexp.MustCompile(`took = [0-9.]+[µnm]?s|"took":"[0-9.]+[µnm]?s"|\| +[0-9.]+[µnm]?s \|`)
	tmpRE          = regexp.MustCompile(`/[^\s"]*/\d{3}/`)
	versionRE      = regexp.MustCompile(`etcdctl version: \S+`)
)

func (n *normalizer) text(s string) string {
	for _, m := range addedRE.FindAllStringSubmatch(s, -1) {
		id, err := strconv.ParseUint(m[1], 16, 64)
		if err == nil && n.ids[id] == "" {
			n.members++
			n.ids[id] = fmt.Sprintf("<member-id-%d>", n.members)
			n.order = append(n.order, id)
		}
	}
	s = initialClusterRE.ReplaceAllStringFunc(s, func(v string) string {
		parts := strings.Split(initialClusterRE.FindStringSubmatch(v)[1], ",")
		slices.Sort(parts)
		return `ETCD_INITIAL_CLUSTER="` + strings.Join(parts, ",") + `"`
	})
	for _, m := range leaseRE.FindAllStringSubmatch(s, -1) {
		h := m[1] + m[2]
		id, err := strconv.ParseUint(h, 16, 64)
		if err == nil && n.ids[id] == "" {
			n.leaseN++
			n.ids[id] = fmt.Sprintf("<lease-%d>", n.leaseN)
			n.order = append(n.order, id)
		}
	}
	for i, u := range n.urls {
		s = strings.ReplaceAll(s, u, fmt.Sprintf("<url-%d>", i+1))
		s = strings.ReplaceAll(s, strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://"), fmt.Sprintf("<host-%d>", i+1))
	}
	// "Member %16x ... cluster %16x": the ids space-padded to 16, kept as
	// a check (an id of 15 digits and its pad would read as " " and the
	// id elsewhere).
	s = paddedRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := paddedRE.FindStringSubmatch(m)
		id, err := strconv.ParseUint(sub[3], 16, 64)
		if err != nil || n.ids[id] == "" {
			return m
		}
		if len(sub[2])+len(sub[3]) != 16 {
			return sub[1] + " " + n.ids[id] + " (not padded to 16)"
		}
		return sub[1] + " " + n.ids[id]
	})
	for _, id := range n.order {
		name := n.ids[id]
		for _, form := range []string{fmt.Sprintf("%016x", id), fmt.Sprintf("%x", id), fmt.Sprint(id)} {
			s = strings.ReplaceAll(s, form, name)
		}
	}
	s = tookRE.ReplaceAllString(s, "<took>")
	s = hashRE.ReplaceAllString(s, `"hash":<hash>`)
	s = dbSizeRE.ReplaceAllString(s, `"dbSize$1":<size>`)
	s = dbSizeFieldRE.ReplaceAllString(s, `"DBSize" : <size>`)
	s = dbSizeSimpleRE.ReplaceAllString(s, `$1<size>, `)
	s = dbSizeCellRE.ReplaceAllString(s, `| <size> |`)
	s = tmpRE.ReplaceAllString(s, "<tmp>/")
	return versionRE.ReplaceAllString(s, "etcdctl version: <version>")
}

// call is c as compared: its output, stderr without JSON log lines, and
// its exit code.
func (n *normalizer) call(c call) string {
	var stderr []string
	for _, l := range strings.Split(c.stderr, "\n") {
		if !strings.HasPrefix(l, `{"level":`) {
			stderr = append(stderr, l)
		}
	}
	args := n.text(strings.Join(c.args, " "))
	if c.background {
		return fmt.Sprintf("%s (in the background)\nstdout:\n%s", args, n.text(c.stdout))
	}
	return fmt.Sprintf("%s\nstdin:\n%s\nstdout:\n%s\nstderr:\n%s\nexit %d", args, n.text(c.stdin), n.text(c.stdout),
		n.text(strings.Join(stderr, "\n")), c.exit)
}

// clip shortens each line of s to 300 bytes (a call may put a 100 KiB
// value).
func clip(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + fmt.Sprintf("... (%d bytes)", len(l))
		}
	}
	return strings.Join(lines, "\n")
}

// ctlQuiet runs the client without recording the call: for a call whose
// output varies between runs by nature (a poll, a count of puts that
// depends on timing), checked by the scenario instead.
func (m *member) ctlQuiet(args ...string) string {
	out, _ := m.ctlQuietErr(args...)
	return out
}

func (m *member) ctlQuietErr(args ...string) (string, error) {
	rec := m.rec
	m.rec = nil
	defer func() { m.rec = rec }()
	return m.ctlErr(args...)
}

// TestNormalizer: ids in their forms (padded to 16 where etcdctl pads
// them, checked; hex; decimal), a member added, and a lease.
func TestNormalizer(t *testing.T) {
	n := &normalizer{ids: map[uint64]string{0x1234567890abcdef: "<cluster-id-1>"}, order: []uint64{0x1234567890abcdef}}
	got := n.text("Member  fa1b2c3d4e5f607 added to cluster 1234567890abcdef\n" +
		"member update fa1b2c3d4e5f607 --peer-urls x\n" +
		`{"ID":1126377935979542023}` + "\n" +
		"Member fa1b2c3d4e5f607 removed from cluster 1234567890abcdef\n" +
		"lease 0000000000001234 granted with TTL(60s)\nmylock/0000000000001234\n")
	want := "Member <member-id-1> added to cluster <cluster-id-1>\n" +
		"member update <member-id-1> --peer-urls x\n" +
		`{"ID":<member-id-1>}` + "\n" +
		"Member <member-id-1> (not padded to 16) removed from cluster <cluster-id-1>\n" +
		"lease <lease-1> granted with TTL(60s)\nmylock/<lease-1>\n"
	if got != want {
		t.Errorf("normalized:\n%s\nwant:\n%s", got, want)
	}
}
