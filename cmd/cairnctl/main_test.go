package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testmember"
)

// ctlResult is one run of cairnctl.
type ctlResult struct {
	out, err string
	code     int
}

// ctlIn runs cairnctl in this process with stdin and args.
func ctlIn(stdin string, args ...string) ctlResult {
	var out, errw bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errw)
	return ctlResult{out.String(), errw.String(), code}
}

// ctlAt runs cairnctl against endpoint ep and fails the test unless it
// exits 0.
func ctlAt(t *testing.T, ep string, args ...string) string {
	t.Helper()
	r := ctlIn("", append([]string{"--endpoints", ep}, args...)...)
	require.Equal(t, 0, r.code, "cairnctl %s: %s", strings.Join(args, " "), r.err)
	return r.out
}

// TestClientCommands runs the client commands against a member and checks
// their output in each format, and their refusals' messages and exit
// codes (etcdctl's).
func TestClientCommands(t *testing.T) {
	ep := testmember.Start(t, nil).ClientURLs()[0]
	ctl := func(args ...string) string { return ctlAt(t, ep, args...) }
	refused := func(code int, msg string, args ...string) {
		t.Helper()
		r := ctlIn("", append([]string{"--endpoints", ep}, args...)...)
		assert.Equal(t, code, r.code, "cairnctl %s: %q %q", strings.Join(args, " "), r.out, r.err)
		assert.Contains(t, r.err, "Error: "+msg, "cairnctl %s", strings.Join(args, " "))
	}

	require.Equal(t, "OK\n", ctl("put", "foo", "bar"))
	require.Equal(t, "OK\nfoo\nbar\n", ctl("put", "foo", "bar2", "--prev-kv"))
	require.Equal(t, "foo\nbar2\n", ctl("get", "foo"))
	require.Equal(t, "bar2\n", ctl("get", "foo", "--print-value-only"))
	require.Equal(t, `\x66\x6f\x6f`+"\n"+`\x62\x61\x72\x32`+"\n", ctl("get", "foo", "--hex"))
	require.Equal(t, "", ctl("get", "nokey"))
	var rng struct {
		Header struct{ Revision int64 } `json:"header"`
		Kvs    []struct {
			Key     []byte `json:"key"`
			Version int64  `json:"version"`
		} `json:"kvs"`
		Count int64 `json:"count"`
	}
	require.NoError(t, json.Unmarshal([]byte(ctl("get", "foo", "-w", "json")), &rng))
	require.Equal(t, int64(3), rng.Header.Revision)
	require.Equal(t, "foo", string(rng.Kvs[0].Key))
	require.Equal(t, int64(2), rng.Kvs[0].Version)
	fields := ctl("get", "foo", "-w", "fields")
	for _, want := range []string{`"Revision" : 3`, `"Key" : "foo"`, `"Version" : 2`, `"Value" : "bar2"`, `"More" : false`, `"Count" : 1`} {
		require.Contains(t, fields, want+"\n")
	}
	require.Contains(t, ctl("get", "foo", "--count-only", "-w", "fields"), `"Count" : 1`)
	require.NotEmpty(t, ctl("get", "foo", "-w", "protobuf"))
	require.Equal(t, "1\nfoo\nbar2\n", ctl("del", "foo", "--prev-kv"))

	refused(exitBadArgs, "--count-only is only for `--write-out=fields`", "get", "foo", "--count-only")
	refused(exitBadFeature, "table not supported as output format", "get", "foo", "-w", "table")
	refused(exitBadFeature, "unsupported output format", "get", "foo", "-w", "xml")
	refused(exitBadArgs, "get command needs one argument as key and an optional argument as range_end", "get")
	refused(exitBadFeature, `unknown consistency flag "x"`, "get", "foo", "--consistency", "x")
	refused(exitBadArgs, "bad lease ID (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex", "put", "k", "v", "--lease", "zz")
	refused(exitError, "etcdserver: mvcc: required revision is a future revision", "get", "foo", "--rev", "100")
	refused(exitError, "unknown flag: --nope", "get", "--nope")

	// A txn from its input: compares, then the requests for success and
	// for failure, each part ended by an empty line.
	txn := ctlIn("value(\"k\") = \"none\"\n\nput k yes\n\nput k no\nget k\n\n", "--endpoints", ep, "txn")
	require.Equal(t, 0, txn.code, txn.err)
	require.Equal(t, "FAILURE\n\nOK\n\nk\nno\n", txn.out)
	txn = ctlIn("mod(\"k\") > \"0\"\n\ndel k\n\n\n", "--endpoints", ep, "txn", "-w", "json")
	require.Equal(t, 0, txn.code, txn.err)
	require.Contains(t, txn.out, `"succeeded":true`)
	bad := ctlIn("nonsense\n\n", "--endpoints", ep, "txn")
	require.Equal(t, exitInvalidInput, bad.code)
	require.Contains(t, bad.err, "Error: malformed comparison: nonsense")

	// A lease granted, attached, kept alive and revoked.
	id := regexp.MustCompile(`^lease ([0-9a-f]{16}) granted with TTL\(60s\)\n$`).FindStringSubmatch(ctl("lease", "grant", "60"))
	require.NotNil(t, id)
	ctl("put", "leased", "v", "--lease", id[1])
	require.Regexp(t, `^lease `+id[1]+` granted with TTL\(60s\), remaining\(\d+s\), attached keys\(\[leased\]\)\n$`, ctl("lease", "timetolive", id[1], "--keys"))
	require.Equal(t, "found 1 leases\n"+id[1]+"\n", ctl("lease", "list"))
	require.Equal(t, "lease "+id[1]+" keepalived with TTL(60)\n", ctl("lease", "keep-alive", "--once", id[1]))
	require.Equal(t, "lease "+id[1]+" revoked\n", ctl("lease", "revoke", id[1]))
	require.Equal(t, "lease "+id[1]+" already expired\n", ctl("lease", "timetolive", id[1]))
	refused(exitError, "failed to revoke lease (etcdserver: requested lease not found)", "lease", "revoke", id[1])

	// Cluster and maintenance.
	list := ctl("member", "list")
	require.Regexp(t, `^[0-9a-f]+, started, default, http://127.0.0.1:\d+, http://127.0.0.1:\d+, false\n$`, list)
	table := ctl("member", "list", "-w", "table")
	require.Contains(t, table, "|        ID        | STATUS  |  NAME   |")
	require.Regexp(t, `^`+regexp.QuoteMeta(ep)+`, [0-9a-f]+, 3\.5\.17, \d+ kB, true, false, \d+, \d+, \d+, \n$`, ctl("endpoint", "status"))
	require.Regexp(t, `^`+regexp.QuoteMeta(ep)+` is healthy: successfully committed proposal: took = `, ctl("endpoint", "health"))
	require.Regexp(t, `^\[\{"Endpoint":"`+regexp.QuoteMeta(ep)+`","HashKV":\{"header":\{.*\},"hash":\d+\}\}\]\n$`, ctl("endpoint", "hashkv", "-w", "json"))
	require.Equal(t, "", ctl("alarm", "list"))
	require.Equal(t, "Finished defragmenting etcd member["+ep+"]\n", ctl("defrag"))
	require.Equal(t, "Authentication Status: false\nAuthRevision: 1\n", ctl("auth", "status"))
	require.Equal(t, "etcdctl version: 3.5.17\nAPI version: 3.5\n", ctl("version"))
	refused(exitBadFeature, "fields not supported as output format", "auth", "status", "-w", "fields")

	// Users and roles, then auth on and off.
	require.Equal(t, "Role r created\n", ctl("role", "add", "r"))
	require.Equal(t, "Role r updated\n", ctl("role", "grant-permission", "r", "readwrite", "/app/", "--prefix"))
	require.Equal(t, "Role r\nKV Read:\n\t[/app/, /app0) (prefix /app/)\nKV Write:\n\t[/app/, /app0) (prefix /app/)\n", ctl("role", "get", "r"))
	require.Equal(t, "User u created\n", ctl("user", "add", "u:pw"))
	require.Equal(t, "Role r is granted to user u\n", ctl("user", "grant-role", "u", "r"))
	require.Equal(t, "User: u\nRoles: r\n", ctl("user", "get", "u"))
	require.Equal(t, "User root created\n", ctl("user", "add", "root", "--new-user-password", "rootpw"))
	require.Equal(t, "Authentication Enabled\n", ctl("auth", "enable"))
	refused(exitError, "etcdserver: user name is empty", "get", "foo")
	refused(exitBadConnection, "etcdserver: authentication failed, invalid user ID or password", "--user", "u:wrong", "get", "x")
	require.Equal(t, "OK\n", ctl("--user", "u:pw", "put", "/app/x", "1"))
	refused(exitError, "etcdserver: permission denied", "--user", "u:pw", "put", "/other", "1")
	require.Equal(t, "Authentication Disabled\n", ctl("--user", "root:rootpw", "auth", "disable"))
}

// TestEnvironment: ETCDCTL_ variables stand for the global flags; one
// given as a flag too is refused.
func TestEnvironment(t *testing.T) {
	ep := testmember.Start(t, nil).ClientURLs()[0]
	t.Setenv("ETCDCTL_ENDPOINTS", ep)
	t.Setenv("ETCDCTL_WRITE_OUT", "json")
	r := ctlIn("", "put", "k", "v")
	require.Equal(t, 0, r.code, r.err)
	require.Contains(t, r.out, `"header":{`)
	r = ctlIn("", "--endpoints", ep, "get", "k")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.err, `conflicting environment variable "ETCDCTL_ENDPOINTS" is shadowed by corresponding command-line flag`)
}

// TestWatch: a watch from history prints its events until the input
// ends (interactive) or the watch is cancelled as compacted (exit 5).
func TestWatch(t *testing.T) {
	ep := testmember.Start(t, nil).ClientURLs()[0]
	ctlAt(t, ep, "put", "w", "1")
	ctlAt(t, ep, "put", "w", "2")
	ctlAt(t, ep, "del", "w")
	ctlAt(t, ep, "compaction", "3")
	r := ctlIn("", "--endpoints", ep, "watch", "w", "--rev", "2")
	require.Equal(t, exitInterrupted, r.code)
	require.Equal(t, "watch was canceled (etcdserver: mvcc: required revision has been compacted)\nError: watch is canceled by the server\n", r.err)
	r = ctlIn("", "--endpoints", ep, "watch")
	require.Equal(t, exitBadArgs, r.code)
	require.Contains(t, r.err, "Error: bad number of arguments")
	r = ctlIn("", "--endpoints", ep, "watch", "w", "--")
	require.Equal(t, exitBadArgs, r.code)
	require.Contains(t, r.err, "found separator --, but no commands")
	// Interactive: a watch from revision 3 on, then the input ends.
	r = ctlIn("watch w --rev 3 --prev-kv\n", "--endpoints", ep, "watch", "-i")
	require.Equal(t, exitInvalidInput, r.code)
	require.Contains(t, r.err, "Error: error reading watch request line: EOF")
}

func TestTable(t *testing.T) {
	tb := &table{header: []string{"endpoint", "ID", "version", "db size", "is leader", "is learner", "raft term",
		"raft index", "raft applied index", "errors"},
		rows: [][]string{{"127.0.0.1:42379", "667880157b8812c8", "3.5.17", "20 kB", "true", "false", "2", "32", "32", ""}}}
	var b bytes.Buffer
	tb.render(&b)
	// etcdctl's, from its v3.5.17 (../shared/docs/compat.md, §5.4).
	want := `+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
|    ENDPOINT     |        ID        | VERSION | DB SIZE | IS LEADER | IS LEARNER | RAFT TERM | RAFT INDEX | RAFT APPLIED INDEX | ERRORS |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
| 127.0.0.1:42379 | 667880157b8812c8 |  3.5.17 |   20 kB |      true |      false |         2 |         32 |                 32 |        |
+-----------------+------------------+---------+---------+-----------+------------+-----------+------------+--------------------+--------+
`
	require.Equal(t, want, b.String())

	// A cell wider than 30 wraps at spaces into the least ragged lines;
	// a word wider stays whole.
	require.Equal(t, []string{"memberID:8211f1d0f64f3269", "alarm:NOSPACE"}, wrapCell("memberID:8211f1d0f64f3269 alarm:NOSPACE"))
	require.Equal(t, []string{"aaaa bbbb cccc dddd eeee ffff", "gggg"}, wrapCell("aaaa bbbb cccc dddd eeee ffff gggg"))
	long := strings.Repeat("x", 40)
	require.Equal(t, []string{long, "y"}, wrapCell(long+" y"))
}

func TestSIBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 9: "9 B", 10: "10 B", 999: "999 B", 1000: "1.0 kB", 20480: "20 kB",
		221184: "221 kB", 1500000: "1.5 MB", 57344: "57 kB", 1 << 30: "1.1 GB"} {
		assert.Equal(t, want, siBytes(n), "%d", n)
	}
}

func TestArgify(t *testing.T) {
	require.Equal(t, []string{"put", "k", "a value", "single quoted"}, argify(`put k "a value" 'single quoted'`))
	require.Equal(t, []string{"put", "k", "tab\there"}, argify(`put k "tab\there"`))
	cmp, err := parseCompare(`mod("k") > "5"`)
	require.NoError(t, err)
	require.NotNil(t, cmp)
	_, err = parseCompare(`size("k") > "5"`)
	require.ErrorContains(t, err, "unknown target size")
	_, err = parseCompare(`mod("k") > "x"`)
	require.ErrorContains(t, err, "invalid txn compare request")
}

// TestMakeMirror: the keys under the prefix are copied to the destination
// under its prefix, then each change as it comes, until the run ends.
func TestMakeMirror(t *testing.T) {
	src := testmember.Start(t, nil)
	dst := testmember.Start(t, nil).ClientURLs()[0]
	sep := src.ClientURLs()[0]
	ctlAt(t, sep, "put", "p/a", "1")
	ctlAt(t, sep, "put", "q/other", "x")
	done := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		var out, errw bytes.Buffer
		done <- runContext(ctx, []string{"--endpoints", sep, "make-mirror", "--prefix", "p/", "--dest-prefix", "m/", dst},
			strings.NewReader(""), &out, &errw)
	}()
	waitFor(t, func() bool { return ctlAt(t, dst, "get", "m/a", "--print-value-only") == "1\n" })
	ctlAt(t, sep, "put", "p/b", "2")
	ctlAt(t, sep, "del", "p/a")
	waitFor(t, func() bool { return ctlAt(t, dst, "get", "m/", "--prefix", "--keys-only") == "m/b\n\n" })
	require.Equal(t, "", ctlAt(t, dst, "get", "q/", "--prefix"), "only the prefix")
	cancel()
	select {
	case code := <-done:
		require.Equal(t, exitError, code)
	case <-time.After(30 * time.Second):
		t.Fatal("make-mirror still running 30 s after its run ended")
	}
}

// waitFor polls cond (every 50 ms, 10 s at most).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not so after 10 s")
		}
	}
}

// TestCheck: check perf puts at its load's rate for --duration and
// reports throughput, the slowest request and the deviation, then PASS
// or FAIL, leaving no key behind; check datascale reports the memory its
// puts took; both refuse a prefix that has keys.
func TestCheck(t *testing.T) {
	ep := testmember.Start(t, nil).ClientURLs()[0]
	r := ctlIn("", "--endpoints", ep, "check", "perf", "--duration", "2s", "--auto-compact")
	require.Contains(t, []int{0, exitError}, r.code, r.err)
	require.Regexp(t, `(?s)^Compacting with revision \d+\nCompacted with revision \d+\n(PASS|FAIL): Throughput (is|too low:) \d+ writes/s\n.*Slowest request.*\n.*Stddev.*\n(PASS|FAIL)\n$`, r.out)
	require.Equal(t, "", ctlAt(t, ep, "get", "/etcdctl-check-perf/", "--prefix", "--keys-only"))
	r = ctlIn("", "--endpoints", ep, "check", "datascale")
	require.Equal(t, 0, r.code, r.out+r.err)
	require.Regexp(t, `(?s)^Start data scale check for work load \[10000 key-value pairs, 1024 bytes per key-value, 50 concurrent clients\]\.\nPASS: Approximate system memory used : -?\d+\.\d\d MB\.\n$`, r.out)
	require.Equal(t, "", ctlAt(t, ep, "get", "/etcdctl-check-datascale/", "--prefix", "--keys-only"))
	ctlAt(t, ep, "put", "/etcdctl-check-perf/x", "1")
	r = ctlIn("", "--endpoints", ep, "check", "perf")
	require.Equal(t, exitInvalidInput, r.code)
	require.Contains(t, r.err, `Error: prefix "/etcdctl-check-perf/" has keys. Delete with 'etcdctl del --prefix /etcdctl-check-perf/' first`)
}
