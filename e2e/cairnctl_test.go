package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runBin runs a binary and fails the test if it fails; it returns the
// output.
func runBin(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	require.NoError(t, err, "%s %s: %s", filepath.Base(bin), strings.Join(args, " "), out)
	return string(out)
}

// waitUp waits (20 s at most) until the member answers a status asked
// with flags (with auth on, a user).
func (m *member) waitUp(flags ...string) {
	m.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := m.ctlErr(append(flags, "endpoint", "status")...); err == nil {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("%s not up after 20 s", m.url)
		}
	}
}

// storeView is what clients see of a store, as etcdctl (authenticated as
// root) prints it: the keys at every revision from the compaction on
// (without the header's cluster and member ids and term), a read below
// the compaction, the leases with their TTLs and keys, users, roles and
// the auth state.
func storeView(t *testing.T, m *member, from, to int64) []string {
	t.Helper()
	root := []string{"--user", "root:rootpw"}
	header := regexp.MustCompile(`"cluster_id":\d+,"member_id":\d+,|,"raft_term":\d+`)
	var view []string
	for rev := from; rev <= to; rev++ {
		out := m.ctl(append(root, "get", "", "--prefix", "--rev", fmt.Sprint(rev), "-w", "json")...)
		view = append(view, header.ReplaceAllString(out, ""))
	}
	out, _ := m.ctlErr(append(root, "get", "a", "--rev", fmt.Sprint(from-1))...)
	view = append(view, withoutLogs(out))
	leases := m.ctl(append(root, "lease", "list")...)
	view = append(view, leases)
	for _, id := range regexp.MustCompile(`(?m)^[0-9a-f]{16}$`).FindAllString(leases, -1) {
		ttl := m.ctl(append(root, "lease", "timetolive", id, "--keys")...)
		ttl = regexp.MustCompile(`remaining\(\d+s\)`).ReplaceAllString(ttl, "remaining(...)")
		// (etcd lists a lease's keys in its map's order.)
		ttl = regexp.MustCompile(`attached keys\(\[(.*)\]\)`).ReplaceAllStringFunc(ttl, func(s string) string {
			keys := strings.Fields(strings.TrimSuffix(strings.TrimPrefix(s, "attached keys(["), "])"))
			slices.Sort(keys)
			return "attached keys([" + strings.Join(keys, " ") + "])"
		})
		view = append(view, ttl)
	}
	for _, args := range [][]string{{"user", "list"}, {"user", "get", "alice"}, {"user", "get", "cn"}, {"role", "list"},
		{"role", "get", "reader"}, {"auth", "status"}} {
		view = append(view, m.ctl(append(root, args...)...))
	}
	alice, _ := m.ctlErr("--user", "alice:alicepw", "get", "app/", "--prefix", "--keys-only")
	denied, _ := m.ctlErr("--user", "alice:alicepw", "put", "app/x", "1")
	return append(view, withoutLogs(alice), withoutLogs(denied))
}

// withoutLogs is out without the client library's JSON log lines.
func withoutLogs(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.HasPrefix(l, `{"level":`) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// TestMigrateEtcdRoundTrip: etcd 3.5's store (history past a compaction,
// a txn, a lease with keys, users, roles, auth on) migrated into cairn
// from etcdctl's snapshot serves the same keys at every revision, the same
// leases, users, roles and auth (and migrated from the stopped member's
// data directory it is the same store); migrated back into an etcd
// snapshot, etcdutl restores it and etcd 3.5 serves the same again.
func TestMigrateEtcdRoundTrip(t *testing.T) {
	dir := t.TempDir()
	binaries(t)
	cairnctl := filepath.Join(binDir, "cairnctl")
	etcd := spawnEtcd(t, filepath.Join(dir, "etcd"), freeURL(t, "http"))
	etcd.waitHealthy()
	for i := range 30 {
		etcd.ctl("put", fmt.Sprintf("app/k%02d", i%10), fmt.Sprintf("v%d", i))
	}
	etcd.ctl("del", "app/k0", "--prefix")
	etcd.ctlIn("value(\"app/k05\") = \"v25\"\n\nput app/k05 txn\ndel app/k06\n\n\n", "txn")
	etcd.ctl("compaction", "20")
	id := regexp.MustCompile(`lease ([0-9a-f]+) granted`).FindStringSubmatch(etcd.ctl("lease", "grant", "600"))
	require.NotNil(t, id)
	etcd.ctl("put", "leased/a", "1", "--lease", id[1])
	etcd.ctl("put", "leased/b", "2", "--lease", id[1])
	etcd.ctl("put", "a", "after the compaction")
	etcd.ctl("user", "add", "root:rootpw")
	etcd.ctl("role", "add", "reader")
	etcd.ctl("role", "grant-permission", "reader", "read", "app/", "--prefix")
	etcd.ctl("user", "add", "alice:alicepw")
	etcd.ctl("user", "grant-role", "alice", "reader")
	etcd.ctl("user", "add", "cn", "--no-password")
	etcd.ctl("auth", "enable")
	rev := regexp.MustCompile(`"revision":(\d+)`).FindStringSubmatch(etcd.ctl("--user", "root:rootpw", "get", "a", "-w", "json"))
	last := int64(mustUint(t, rev[1]))
	want := storeView(t, etcd, 20, last)
	snap := filepath.Join(dir, "etcd.db")
	etcd.ctl("--user", "root:rootpw", "snapshot", "save", snap)
	etcd.stop()

	// Into cairn.
	peer, url := freeURL(t, "http"), freeURL(t, "http")
	data := filepath.Join(dir, "cairn")
	out := runBin(t, cairnctl, "migrate", "from-etcd", snap, "--data-dir", data, "--name", "c1",
		"--initial-cluster", "c1="+peer, "--initial-advertise-peer-urls", peer)
	require.Contains(t, out, "1 leases, 3 users, 2 roles")
	runBin(t, cairnctl, "check", "--data-dir", data)
	// From the stopped member's data directory: the same store.
	fromDir := filepath.Join(dir, "cairn-from-dir")
	runBin(t, cairnctl, "migrate", "from-etcd", etcd.dir, "--data-dir", fromDir)
	for _, what := range [][]string{{"keys", "--history"}, {"buckets"}} {
		require.Equal(t, runBin(t, cairnctl, append([]string{"inspect", "--data-dir", data}, what...)...),
			runBin(t, cairnctl, append([]string{"inspect", "--data-dir", fromDir}, what...)...), "inspect %s", what)
	}
	c := spawnCairn(t, data, url, "--name", "c1", "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "c1="+peer)
	c.waitUp("--user", "root:rootpw")
	require.Equal(t, want, storeView(t, c, 20, last), "cairn, migrated from etcd")
	csnap := filepath.Join(dir, "cairn.db.zst")
	runBin(t, cairnctl, "--endpoints", c.url, "--user", "root:rootpw", "snapshot", "save", csnap, "--compress")
	c.stop()

	// Back into etcd, through etcdutl's restore.
	back := filepath.Join(dir, "back.db")
	runBin(t, cairnctl, "migrate", "to-etcd", "--data-dir", data, "--output", back)
	peer2 := freeURL(t, "http")
	data2 := filepath.Join(dir, "etcd2")
	runBin(t, etcdutlBinary(t), "snapshot", "restore", back, "--data-dir", data2, "--name", "default",
		"--initial-cluster", "default="+peer2, "--initial-advertise-peer-urls", peer2)
	etcd2 := spawnEtcdAt(t, data2, freeURL(t, "http"), peer2)
	etcd2.waitUp("--user", "root:rootpw")
	require.Equal(t, want, storeView(t, etcd2, 20, last), "etcd, migrated back from cairn")
	etcd2.stop()

	// The compressed snapshot of cairn migrates too.
	require.Contains(t, runBin(t, cairnctl, "snapshot", "status", csnap), fmt.Sprintf(", %d, ", last))
	require.Contains(t, runBin(t, cairnctl, "migrate", "to-etcd", csnap, "--output", filepath.Join(dir, "back2.db")), "1 leases, 3 users, 2 roles")
}

// TestEtcdctlFormats: the commands in every output format (and --hex),
// and their refusals, with etcdctl then cairnctl, whose output (stdout,
// stderr and exit code) must be etcdctl's.
func TestEtcdctlFormats(t *testing.T) {
	sameOutput(t, freshMember, formatsScenario)
}

func formatsScenario(t *testing.T, m *member) {
	formats := []string{"simple", "json", "fields", "protobuf", "table"}
	each := func(args ...string) {
		for _, w := range formats {
			m.ctlErr(append(args, "-w", w)...)
		}
	}
	each("put", "k", "v")
	each("put", "k", "v2", "--prev-kv")
	m.ctl("put", "k2", "bin\x01ary")
	each("get", "k")
	each("get", "k", "--prefix", "--keys-only")
	each("get", "k", "--prefix", "--count-only")
	each("get", "k", "--print-value-only")
	m.ctlErr("get", "k", "--prefix", "--hex")
	m.ctlErr("get", "k", "--prefix", "--hex", "-w", "json")
	m.ctlErr("get", "k", "--prefix", "--order", "DESCEND", "--sort-by", "VALUE", "--limit", "1")
	each("del", "nokey")
	m.ctlErr("del", "k", "k3")
	for _, w := range formats {
		m.ctlIn("ver(\"k\") > \"0\"\n\nput k3 t\nget k\ndel k2 --prev-kv\n\nput k3 f\n\n", "txn", "-w", w)
	}
	m.ctlIn("value(\"k\") = \"x\"\n\nput k3 t\n\nget k3\n\n", "txn", "-i")
	m.ctlIn("bad compare\n\n", "txn")
	m.ctlIn("ver(\"k\") > \"0\"\n\nupdate k\n\n\n", "txn")
	m.ctlIn("ver(\"k\") > \"0\"\n", "txn")

	id := regexp.MustCompile(`lease ([0-9a-f]+) granted`).FindStringSubmatch(m.ctl("lease", "grant", "100"))
	require.NotNil(t, id)
	for _, w := range []string{"simple", "json", "fields", "table"} {
		m.ctlErr("lease", "list", "-w", w)
		m.ctlErr("lease", "keep-alive", "--once", id[1], "-w", w)
	}
	m.ctlErr("lease", "grant", "x")
	m.ctlErr("lease", "revoke", "zz")
	m.ctlErr("lease", "revoke", id[1], "-w", "fields")
	m.ctlErr("lease", "timetolive", id[1])

	each("member", "list")
	m.ctlErr("member", "list", "-w", "json", "--hex")
	m.ctlErr("member", "remove")
	m.ctlErr("member", "remove", "xyz")
	m.ctlErr("member", "add", "n", "http://127.0.0.1:1")
	m.ctlErr("member", "add", "n")
	m.ctlErr("member", "update", "1234")
	// A learner that never starts. Its id is the server's pick (from the
	// time, as etcd's): the lists that hold it order by id, so they are
	// checked rather than compared.
	out := m.ctl("member", "add", "l1", "--learner", "--peer-urls", "http://127.0.0.1:1")
	learner := regexp.MustCompile(`Member +([0-9a-f]+) added to cluster`).FindStringSubmatch(out)
	require.NotNil(t, learner, out)
	if list := m.ctlQuiet("member", "list"); !strings.Contains(list, learner[1]+", unstarted, , http://127.0.0.1:1, , true") {
		t.Errorf("member list with the learner: %q", list)
	}
	m.ctlErr("member", "update", learner[1], "--peer-urls", "http://127.0.0.1:2")
	m.ctlErr("member", "promote", learner[1])
	m.ctlErr("member", "remove", learner[1], "-w", "json")
	m.ctlErr("member", "add", "l2", "--learner", "--peer-urls", "http://127.0.0.1:3", "-w", "fields")
	for _, w := range []string{"simple", "json", "fields", "table"} {
		m.ctlErr("endpoint", "status", "-w", w)
		m.ctlErr("endpoint", "hashkv", "-w", w)
	}
	m.ctlErr("endpoint", "status", "-w", "protobuf")
	each("alarm", "list")
	m.ctlErr("alarm", "list", "extra")
	each("auth", "status")
	m.ctlErr("compaction")
	m.ctlErr("compaction", "x")
	m.ctlErr("compaction", "2", "-w", "json")
	m.ctlErr("move-leader")
	m.ctlErr("move-leader", "1")
	m.ctlErr("watch")
	m.ctlErr("watch", "k", "--")
	m.ctlErr("watch", "a", "b", "--prefix")
	m.ctlErr("elect")
	m.ctlErr("elect", "e")
	m.ctlErr("elect", "e", "p", "-l")
	m.ctlErr("lock")
	m.ctlErr("snapshot", "save")
	m.ctlErr("make-mirror")
	m.ctlErr("check", "perf", "--load", "huge")
	m.ctlErr("version")

	for _, w := range formats {
		m.ctlErr("role", "add", "r"+w, "-w", w)
		m.ctlErr("role", "grant-permission", "r"+w, "readwrite", "a", "c", "-w", w)
		m.ctlErr("role", "grant-permission", "r"+w, "read", "p/", "--prefix", "-w", w)
		m.ctlErr("role", "grant-permission", "r"+w, "write", "z", "--from-key", "-w", w)
		m.ctlErr("role", "get", "r"+w, "-w", w)
		m.ctlErr("user", "add", "u"+w+":pw", "-w", w)
		m.ctlErr("user", "grant-role", "u"+w, "r"+w, "-w", w)
		m.ctlErr("user", "get", "u"+w, "-w", w)
		m.ctlErr("user", "get", "u"+w, "--detail", "-w", w)
		m.ctlErr("role", "revoke-permission", "r"+w, "a", "c", "-w", w)
		m.ctlErr("user", "revoke-role", "u"+w, "r"+w, "-w", w)
		m.ctlErr("user", "delete", "u"+w, "-w", w)
		m.ctlErr("role", "delete", "r"+w, "-w", w)
	}
	each("user", "list")
	each("role", "list")
	m.ctlErr("role", "grant-permission", "r", "execute", "k")
	m.ctlErr("role", "grant-permission", "r", "read", "a", "b", "--prefix")
	m.ctlErr("user", "add", ":pw")
	m.ctlErr("user", "get", "nobody")
}
