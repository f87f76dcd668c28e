package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The binaries, built once per run into a temporary directory.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func binaries(t *testing.T) (cairn, etcdctl string) {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "cairn-e2e-")
		if buildErr != nil {
			return
		}
		for _, b := range []struct{ dir, pkg, out string }{
			{"..", "./cmd/cairn", "cairn"},
			{"..", "./cmd/cairnctl", "cairnctl"},
			{".", "go.etcd.io/etcd/etcdctl/v3", "etcdctl"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(binDir, b.out), b.pkg)
			cmd.Dir = b.dir
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("building %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "cairn"), filepath.Join(binDir, "etcdctl")
}

// toolBinary is the client binary a member is driven with: its tool, or
// else cairnctl in a (sub)test named cairnctl (eachTool's), else etcdctl
// v3.5.
func (m *member) toolBinary() string {
	binaries(m.t)
	switch {
	case m.tool != "":
		return filepath.Join(binDir, m.tool)
	case strings.HasSuffix(m.t.Name(), "/cairnctl"):
		return filepath.Join(binDir, "cairnctl")
	}
	return filepath.Join(binDir, "etcdctl")
}

// eachTool runs test with etcdctl, then again with cairnctl, each in a
// subtest named for it: the members it starts are driven with that client.
func eachTool(t *testing.T, test func(t *testing.T)) {
	for _, tool := range []string{"etcdctl", "cairnctl"} {
		if !t.Run(tool, test) {
			return
		}
	}
}

// A built is a binary built once per run into binDir, when a test first
// needs it.
type built struct {
	once sync.Once
	path string
	err  error
}

// get builds pkg (from dir) as binDir/name the first time, and returns its
// path.
func (b *built) get(t *testing.T, name, dir, pkg string) string {
	t.Helper()
	binaries(t)
	b.once.Do(func() {
		b.path = filepath.Join(binDir, name)
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("building %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// etcd35 is etcd 3.5 (the bench/etcd35 module's), for tests that hold
// cairn's answers against etcd's; etcdutl35 etcd 3.5's etcdutl (this
// module's), for the restore of a snapshot cairnctl writes for etcd.
var etcd35, etcdutl35 built

func etcdBinary(t *testing.T) string {
	return etcd35.get(t, "etcd", filepath.Join("..", "bench", "etcd35"), "go.etcd.io/etcd/server/v3")
}

func etcdutlBinary(t *testing.T) string {
	return etcdutl35.get(t, "etcdutl", ".", "go.etcd.io/etcd/etcdutl/v3")
}

// spawnEtcd starts etcd 3.5 as a member of its own on url.
func spawnEtcd(t *testing.T, dataDir, url string, extra ...string) *member {
	t.Helper()
	return spawnEtcdAt(t, dataDir, url, freeURL(t, "http"), extra...)
}

// spawnEtcdAt starts etcd 3.5 as member "default" of its own, serving
// clients on url and peers on peer.
func spawnEtcdAt(t *testing.T, dataDir, url, peer string, extra ...string) *member {
	t.Helper()
	m := &member{t: t, url: url, done: make(chan struct{}), dir: dataDir, bin: etcdBinary(t), extra: extra}
	m.spawn(append([]string{"--data-dir", dataDir, "--listen-client-urls", url, "--advertise-client-urls", url,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "default=" + peer}, extra...))
	return m
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// member is a cairn process on 127.0.0.1.
type member struct {
	t    *testing.T
	url  string
	cmd  *exec.Cmd
	done chan struct{}
	// How it was started (restart): its data directory, environment and
	// flags.
	dir   string
	env   []string
	extra []string
	bin   string // the server's binary: cairn's when empty
	// The client the test drives it with: etcdctl when empty, or
	// "cairnctl"; and where its calls are recorded (if anywhere).
	tool string
	rec  *transcript
}

// freeURL is a URL on 127.0.0.1 with a port free a moment ago, below the
// kernel's ephemeral range (32768 up): a port the kernel hands out on its
// own (a client's local port, a :0 listener) is never one of these, so it
// stays free until the member binds it. (The main module's
// internal/testport does the same; this module cannot import it.)
func freeURL(t *testing.T, scheme string) string {
	t.Helper()
	freePorts.Lock()
	defer freePorts.Unlock()
	if freePorts.given == nil {
		freePorts.given = map[int]bool{}
		freePorts.rng = rand.New(rand.NewSource(time.Now().UnixNano()))
	}
	for range 1000 {
		p := 10000 + freePorts.rng.Intn(22000)
		if freePorts.given[p] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		freePorts.given[p] = true
		return fmt.Sprintf("%s://127.0.0.1:%d", scheme, p)
	}
	t.Fatal("no free port below 32000 on 127.0.0.1")
	return ""
}

// freePorts are the ports freeURL handed out in this process.
var freePorts struct {
	sync.Mutex
	given map[int]bool
	rng   *rand.Rand
}

// startCairn runs cairn over dataDir with extra flags, and waits (at most
// 20 s) until etcdctl finds it healthy. It is stopped with SIGTERM when
// the test ends.
func startCairn(t *testing.T, dataDir string, extra ...string) *member {
	t.Helper()
	scheme := "http"
	for _, f := range extra {
		if f == "--auto-tls" {
			scheme = "https"
		}
	}
	m := spawnCairn(t, dataDir, freeURL(t, scheme), append([]string{"--listen-peer-urls", "http://127.0.0.1:0"}, extra...)...)
	m.waitHealthy()
	return m
}

// spawnCairn starts cairn over dataDir serving clients at url, with extra
// flags; it is stopped with SIGTERM when the test ends.
func spawnCairn(t *testing.T, dataDir, url string, extra ...string) *member {
	t.Helper()
	return spawnCairnEnv(t, dataDir, url, nil, extra...)
}

// spawnCairnEnv is spawnCairn with env added to the process's environment.
func spawnCairnEnv(t *testing.T, dataDir, url string, env []string, extra ...string) *member {
	t.Helper()
	m := &member{t: t, url: url, done: make(chan struct{}), dir: dataDir, env: env, extra: extra}
	m.spawn(append([]string{"--data-dir", dataDir, "--listen-client-urls", m.url, "--advertise-client-urls", m.url}, extra...))
	return m
}

// spawn starts the cairn binary with exactly args; it is stopped with
// SIGTERM when the test ends, its log printed if the test failed.
func (m *member) spawn(args []string) {
	t := m.t
	t.Helper()
	bin := m.bin
	if bin == "" {
		bin, _ = binaries(t)
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.Env = append(os.Environ(), m.env...)
	logPath := filepath.Join(t.TempDir(), "cairn.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = m.cmd.Wait(); logf.Close(); close(m.done) }()
	t.Cleanup(func() {
		m.stop()
		if t.Failed() {
			logTail(t, args, logPath)
		}
	})
}

// logTail prints the last lines of a member's log, so that a failure
// seen only in CI says what the members did.
func logTail(t *testing.T, args []string, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Logf("log of cairn %s: %v", strings.Join(args, " "), err)
		return
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	lines = lines[max(0, len(lines)-40):]
	t.Logf("log of cairn %s (last %d lines):\n%s", strings.Join(args, " "), len(lines), strings.Join(lines, "\n"))
}

// waitHealthy waits (at most 20 s) until etcdctl finds the member healthy.
func (m *member) waitHealthy() {
	m.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := m.ctlErr("endpoint", "health")
		if err == nil && strings.Contains(out, "is healthy") {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("cairn not healthy after 20 s: %s %v", out, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startCairnCluster runs n cairn members bootstrapped together and waits
// until each is healthy.
func startCairnCluster(t *testing.T, n int) []*member {
	t.Helper()
	dir := t.TempDir()
	var peers, initial []string
	for i := range n {
		peers = append(peers, freeURL(t, "http"))
		initial = append(initial, fmt.Sprintf("m%d=%s", i+1, peers[i]))
	}
	var ms []*member
	for i := range n {
		ms = append(ms, spawnCairn(t, filepath.Join(dir, fmt.Sprintf("m%d", i+1)), freeURL(t, "http"),
			"--name", fmt.Sprintf("m%d", i+1), "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-token", "e2e-cluster"))
	}
	for _, m := range ms {
		m.waitHealthy()
	}
	return ms
}

func (m *member) stop() {
	select {
	case <-m.done:
		return
	default:
	}
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.done
		m.t.Errorf("cairn did not stop within 20 s of SIGTERM")
	}
	// (etcd ends by raising the signal again.)
	if code := m.cmd.ProcessState.ExitCode(); code != 0 && m.bin == "" {
		m.t.Errorf("cairn exited %d after SIGTERM", code)
	}
}

// ctlErr runs etcdctl against the member (30 s at most) and returns its
// output (stdout and stderr).
func (m *member) ctlErr(args ...string) (string, error) {
	return m.ctlIn("", args...)
}

func (m *member) ctlIn(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--endpoints", m.url, "--dial-timeout", "5s"}, args...)
	if strings.HasPrefix(m.url, "https") && !slices.Contains(args, "--cacert") {
		full = append([]string{"--insecure-transport=false", "--insecure-skip-tls-verify"}, full...)
	}
	cmd := exec.CommandContext(ctx, m.toolBinary(), full...)
	cmd.Stdin = strings.NewReader(stdin)
	var out outputs
	cmd.Stdout, cmd.Stderr = out.writer(&out.stdout), out.writer(&out.stderr)
	err := cmd.Run()
	m.rec.add(call{args: args, stdin: stdin, stdout: out.stdout.String(), stderr: out.stderr.String(), exit: cmd.ProcessState.ExitCode()})
	return out.combined.String(), err
}

// ctl runs etcdctl and fails the test if it fails.
func (m *member) ctl(args ...string) string {
	m.t.Helper()
	out, err := m.ctlErr(args...)
	if err != nil {
		m.t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// expect runs etcdctl and checks that its output holds every want.
func (m *member) expect(args []string, want ...string) string {
	m.t.Helper()
	out, _ := m.ctlErr(args...)
	for _, w := range want {
		if !strings.Contains(out, w) {
			m.t.Errorf("etcdctl %s: output %q lacks %q", strings.Join(args, " "), out, w)
		}
	}
	return out
}

// background runs etcdctl until the test stops it, handing its output
// lines to a channel.
func (m *member) background(args ...string) (lines chan string, stop func()) {
	m.t.Helper()
	cmd := exec.Command(m.toolBinary(), append([]string{"--endpoints", m.url}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	lines = make(chan string, 1000)
	var mu sync.Mutex
	var seen []string // every line, for the transcript
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			seen = append(seen, sc.Text())
			mu.Unlock()
			lines <- sc.Text()
		}
		close(lines)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			<-done
			mu.Lock()
			defer mu.Unlock()
			m.rec.add(call{args: args, background: true, stdout: strings.Join(seen, "\n")})
		})
	}
	m.t.Cleanup(stop)
	return lines, stop
}

// waitLine reads lines until one equals want (10 s at most).
func waitLine(t *testing.T, lines chan string, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before %q; saw %q", want, seen)
			}
			if l == want {
				return
			}
			seen = append(seen, l)
		case <-timeout:
			t.Fatalf("no line %q in 10 s; saw %q", want, seen)
		}
	}
}

// freshMember starts a member of its own for a scenario.
func freshMember(t *testing.T) *member { return startCairn(t, filepath.Join(t.TempDir(), "data")) }

// TestEtcdctlKV: put, get (with options and JSON), delete, txn, watch
// from history, compaction and its errors, as the user guide runs them;
// with etcdctl, then with cairnctl, whose output must be etcdctl's.
func TestEtcdctlKV(t *testing.T) {
	sameOutput(t, freshMember, kvScenario)
}

// kvScenario is TestEtcdctlKV's walk through the KV commands, against m
// (fresh: the revisions it checks count from 1).
func kvScenario(t *testing.T, m *member) {
	m.expect([]string{"put", "foo", "bar"}, "OK")
	m.expect([]string{"put", "foo1", "bar1"}, "OK")
	m.expect([]string{"get", "foo"}, "foo\nbar\n")
	m.expect([]string{"get", "foo", "--prefix", "--keys-only"}, "foo\n\nfoo1\n")
	m.expect([]string{"get", "foo", "-w", "json"}, `"count":1`, `"revision":3`)
	m.expect([]string{"put", "foo1", "new", "--prev-kv"}, "OK", "foo1\nbar1")
	m.expect([]string{"get", "foo", "--from-key", "--limit", "1", "--order", "DESCEND", "--sort-by", "KEY"}, "foo1\nnew")
	m.expect([]string{"get", "foo1", "--rev", "3"}, "foo1\nbar1")
	m.expect([]string{"get", "foo", "--rev", "100000"}, "Error: etcdserver: mvcc: required revision is a future revision")
	m.expect([]string{"del", "foo1", "--prev-kv"}, "1\nfoo1\nnew")
	out, err := m.ctlIn("mod(\"foo\") > \"0\"\n\nput foo txn-yes\n\nput foo txn-no\n\n", "txn")
	if err != nil || !strings.Contains(out, "SUCCESS") {
		t.Fatalf("txn: %v %s", err, out)
	}
	m.expect([]string{"get", "foo", "--print-value-only"}, "txn-yes")

	// Watch from history, then live.
	lines, stop := m.background("watch", "foo", "--rev", "2")
	waitLine(t, lines, "bar")
	waitLine(t, lines, "txn-yes")
	m.ctl("put", "foo", "live")
	waitLine(t, lines, "live")
	stop()

	m.expect([]string{"compaction", "5"}, "compacted revision 5")
	m.expect([]string{"get", "foo", "--rev", "3"}, "Error: etcdserver: mvcc: required revision has been compacted")
	m.expect([]string{"watch", "foo", "--rev", "2"}, "watch was canceled (etcdserver: mvcc: required revision has been compacted)")
}

// TestEtcdctlLease: grant (the least TTL), attach, time-to-live with
// keys, keep-alive, list, revoke; a lease's expiry deletes its key; an
// unknown lease is etcd's error. With etcdctl, then cairnctl.
func TestEtcdctlLease(t *testing.T) {
	sameOutput(t, freshMember, leaseScenario)
}

func leaseScenario(t *testing.T, m *member) {
	out := m.ctl("lease", "grant", "600")
	id := regexp.MustCompile(`lease ([0-9a-f]+) granted with TTL\(600s\)`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("lease grant: %q", out)
	}
	m.expect([]string{"put", "leased", "v", "--lease", id[1]}, "OK")
	m.expect([]string{"lease", "timetolive", id[1], "--keys"}, "granted with TTL(600s)", "attached keys([leased])")
	m.expect([]string{"lease", "list"}, "found 1 leases", id[1])
	m.expect([]string{"lease", "keep-alive", "--once", id[1]}, fmt.Sprintf("lease %s keepalived with TTL(600)", id[1]))
	m.expect([]string{"lease", "revoke", id[1]}, fmt.Sprintf("lease %s revoked", id[1]))
	if out := m.ctl("get", "leased"); out != "" {
		t.Fatalf("a revoked lease's key: %q", out)
	}
	m.expect([]string{"lease", "revoke", "1234"}, "Error: failed to revoke lease (etcdserver: requested lease not found)")
	m.expect([]string{"lease", "timetolive", "1234"}, "lease 0000000000001234 already expired")

	// The least TTL is 2 s with the default 1 s election timeout.
	out = m.ctl("lease", "grant", "1")
	short := regexp.MustCompile(`lease ([0-9a-f]+) granted with TTL\(2s\)`).FindStringSubmatch(out)
	if short == nil {
		t.Fatalf("lease grant 1: %q", out)
	}
	m.ctl("put", "short", "v", "--lease", short[1])
	deadline := time.Now().Add(15 * time.Second)
	// (The polls are not in the transcript: their number is the clock's.)
	for m.ctlQuiet("get", "short") != "" {
		if time.Now().After(deadline) {
			t.Fatal("the key of a 2 s lease is still there after 15 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	m.expect([]string{"lease", "timetolive", short[1]}, "already expired")
}

// TestEtcdctlLockElectMaintenance: lock and elect (etcdctl's recipes over
// KV, lease and watch), member list, endpoint status/health/hashkv,
// defrag, alarms, snapshot save and a restore with cairn. With etcdctl,
// then cairnctl.
func TestEtcdctlLockElectMaintenance(t *testing.T) {
	sameOutput(t, freshMember, maintenanceScenario)
}

func maintenanceScenario(t *testing.T, m *member) {
	dir := t.TempDir()
	m.expect([]string{"lock", "mylock", "--", "echo", "under the lock"}, "under the lock")

	leader, stopLeader := m.background("elect", "myelection", "alice")
	waitLine(t, leader, "alice")
	observer, stopObserver := m.background("elect", "-l", "myelection")
	waitLine(t, observer, "alice")
	stopLeader()
	stopObserver()

	m.expect([]string{"member", "list"}, ", started, default, ")
	m.expect([]string{"endpoint", "status", "-w", "json"}, `"version":"3.5.17"`, `"leader":`)
	m.expect([]string{"endpoint", "health"}, "is healthy")
	m.expect([]string{"endpoint", "hashkv", "-w", "json"}, `"hash":`)
	m.expect([]string{"defrag"}, "Finished defragmenting etcd member[")
	if out := m.ctl("alarm", "list"); out != "" {
		t.Fatalf("alarm list: %q", out)
	}
	m.ctl("put", "kept", "in the snapshot")
	snap := filepath.Join(dir, "snap.db")
	m.expect([]string{"snapshot", "save", snap}, "Snapshot saved at "+snap)
	m.stop()

	cairn, _ := binaries(t)
	restored := filepath.Join(dir, "restored")
	out, err := exec.Command(cairn, "snapshot", "restore", snap, "--data-dir", restored, "--name", "restored").CombinedOutput()
	if err != nil {
		t.Fatalf("cairn snapshot restore: %v %s", err, out)
	}
	r := m.adopt(startCairn(t, restored, "--name", "restored"))
	r.expect([]string{"get", "kept", "--print-value-only"}, "in the snapshot")
	r.expect([]string{"member", "list"}, ", started, restored, ")
}

// TestEtcdctlAuth: etcdctl's auth walkthrough: root, enable, a user with
// a read-only role, refusals with etcd's messages, disable. With etcdctl,
// then cairnctl.
func TestEtcdctlAuth(t *testing.T) {
	sameOutput(t, freshMember, authScenario)
}

// authScenario is TestEtcdctlAuth's walkthrough, against m.
func authScenario(t *testing.T, m *member) {
	m.ctl("put", "foo", "bar")
	m.expect([]string{"user", "add", "root:rootpw"}, "User root created")
	m.expect([]string{"auth", "enable"}, "Authentication Enabled")
	m.expect([]string{"get", "foo"}, "Error: etcdserver: user name is empty")
	m.expect([]string{"--user", "root:wrong", "get", "foo"}, "authentication failed, invalid user ID or password")
	root := []string{"--user", "root:rootpw"}
	m.expect(append(root, "get", "foo"), "foo\nbar")
	m.expect(append(root, "role", "add", "reader"), "Role reader created")
	m.expect(append(root, "role", "grant-permission", "reader", "read", "foo"), "Role reader updated")
	m.expect(append(root, "user", "add", "alice:alicepw"), "User alice created")
	m.expect(append(root, "user", "grant-role", "alice", "reader"), "Role reader is granted to user alice")
	m.expect(append(root, "user", "get", "alice"), "Roles: reader")
	m.expect(append(root, "role", "get", "reader"), "KV Read:", "\tfoo")
	alice := []string{"--user", "alice:alicepw"}
	m.expect(append(alice, "get", "foo"), "foo\nbar")
	m.expect(append(alice, "put", "foo", "x"), "Error: etcdserver: permission denied")
	m.expect(append(alice, "user", "list"), "Error: etcdserver: permission denied")
	m.expect(append(root, "auth", "disable"), "Authentication Disabled")
	m.expect([]string{"put", "foo", "open"}, "OK")
}

// TestEtcdctlTLSAndQuota: https with --auto-tls; past the quota writes
// fail with NOSPACE until compaction, defragmentation and alarm disarm.
// With etcdctl, then cairnctl.
func TestEtcdctlTLSAndQuota(t *testing.T) {
	sameOutput(t, func(t *testing.T) *member {
		return startCairn(t, filepath.Join(t.TempDir(), "data"), "--auto-tls", "--quota-backend-bytes", "1048576")
	}, tlsQuotaScenario)
}

func tlsQuotaScenario(t *testing.T, m *member) {
	m.expect([]string{"put", "tls", "ok"}, "OK")
	value := strings.Repeat("v", 100<<10) // one argument holds at most 128 KiB
	// How many puts fit, and so the revisions and sizes after them, vary
	// with the server's timing: those calls are checked, not compared.
	var out string
	for i := 0; i < 40; i++ {
		var err error
		if out, err = m.ctlQuietErr("put", fmt.Sprint("big", i), value); err != nil {
			break
		}
	}
	if !strings.Contains(out, "etcdserver: mvcc: database space exceeded") {
		t.Fatalf("puts past the quota: last output %q", out)
	}
	m.expect([]string{"put", "refused", value}, "etcdserver: mvcc: database space exceeded")
	m.expect([]string{"alarm", "list"}, "alarm:NOSPACE")
	if out := m.ctlQuiet("endpoint", "status"); !strings.Contains(out, "alarm:NOSPACE") {
		t.Errorf("endpoint status during NOSPACE: %q", out)
	}
	m.ctlQuiet("del", "big", "--prefix")
	rev := regexp.MustCompile(`"revision":(\d+)`).FindStringSubmatch(m.ctlQuiet("get", "tls", "-w", "json"))
	if rev == nil {
		t.Fatal("no revision in get -w json")
	}
	if out, _ := m.ctlQuietErr("compaction", rev[1], "--physical"); !strings.Contains(out, "compacted revision "+rev[1]) {
		t.Errorf("compaction %s --physical: %q", rev[1], out)
	}
	m.expect([]string{"defrag"}, "Finished defragmenting")
	m.expect([]string{"alarm", "disarm"}, "alarm:NOSPACE")
	m.expect([]string{"put", "after", "ok"}, "OK")
}

// TestEtcdctlCluster: the KV and auth walkthroughs through a follower of
// a three-member cluster, then what etcdctl shows of a cluster: member
// list with every member started and its client URL, endpoint status over
// --cluster with exactly one leader, equal hashes, lock and elect through
// different members, and move-leader.
// With etcdctl, then cairnctl.
func TestEtcdctlCluster(t *testing.T) { eachTool(t, testEtcdctlCluster) }

func testEtcdctlCluster(t *testing.T) {
	ms := startCairnCluster(t, 3)
	all := &member{t: t, url: strings.Join([]string{ms[0].url, ms[1].url, ms[2].url}, ",")}
	status := all.ctl("endpoint", "status", "-w", "json")
	lead := regexp.MustCompile(`"leader":(\d+)`).FindStringSubmatch(status)
	if lead == nil {
		t.Fatalf("endpoint status: %q", status)
	}
	follower := -1
	for i, m := range ms {
		if id := regexp.MustCompile(`"member_id":(\d+)`).FindStringSubmatch(m.ctl("endpoint", "status", "-w", "json")); id != nil && id[1] != lead[1] && follower < 0 {
			follower = i
		}
	}
	if follower < 0 {
		t.Fatalf("no follower in %q", status)
	}
	kvScenario(t, ms[follower])
	authScenario(t, ms[follower])

	table := all.ctl("member", "list", "-w", "table")
	for i, m := range ms {
		if !strings.Contains(table, fmt.Sprintf("| started |   m%d |", i+1)) && !strings.Contains(table, fmt.Sprintf("| started | m%d |", i+1)) {
			t.Errorf("member list lacks m%d started:\n%s", i+1, table)
		}
		if !strings.Contains(table, m.url) {
			t.Errorf("member list lacks m%d's client URL %s:\n%s", i+1, m.url, table)
		}
	}
	st := all.ctl("endpoint", "status", "--cluster", "-w", "table")
	if n := strings.Count(st, "|      true |"); n != 1 {
		t.Errorf("endpoint status --cluster shows %d leaders:\n%s", n, st)
	}
	checkHashKV(t, ms)

	leader, stopLeader := ms[0].background("elect", "myelection", "alice")
	waitLine(t, leader, "alice")
	observer, stopObserver := ms[2].background("elect", "-l", "myelection")
	waitLine(t, observer, "alice")
	stopLeader()
	stopObserver()
	ms[1].expect([]string{"lock", "mylock", "--", "echo", "under the lock"}, "under the lock")

	var leaderURL, target string
	for _, m := range ms {
		id := regexp.MustCompile(`"member_id":(\d+)`).FindStringSubmatch(m.ctl("endpoint", "status", "-w", "json"))
		if id[1] == lead[1] {
			leaderURL = m.url
		} else if target == "" {
			target = id[1]
		}
	}
	hex := fmt.Sprintf("%x", mustUint(t, target))
	(&member{t: t, url: leaderURL}).expect([]string{"move-leader", hex}, "Leadership transferred from")
	if after := regexp.MustCompile(`"leader":(\d+)`).FindStringSubmatch(all.ctl("endpoint", "status", "-w", "json")); after == nil || after[1] != target {
		t.Errorf("leader after move-leader: %v, want %s", after, target)
	}
}

// ctlSettled runs a membership change with etcdctl, again while it is
// refused as "unhealthy cluster" (the leader counts a peer connected once
// it has been for 5 s; a refused change changes nothing), for 30 s at
// most, and fails the test if it fails otherwise.
func (m *member) ctlSettled(args ...string) string {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := m.ctlErr(args...)
		if err == nil {
			return out
		}
		if !strings.Contains(out, "unhealthy cluster") || time.Now().After(deadline) {
			m.t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// addMember runs etcdctl member add NAME (with flags) on m and starts
// the new member from the lines it prints, as its environment, as etcd's
// runtime reconfiguration guide does; before it starts, member list shows
// it unstarted (if the cluster still has a quorum of running voters: as
// in etcd, a cluster of one that added a voter serves no linearizable read,
// and etcdctl's member list is one, until the second runs).
func addMember(t *testing.T, m *member, dir, name string, flags ...string) *member {
	t.Helper()
	peer := freeURL(t, "http")
	out := m.ctlSettled(append([]string{"member", "add", name, "--peer-urls", peer}, flags...)...)
	var env []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "ETCD_") {
			k, v, _ := strings.Cut(line, "=")
			env = append(env, k+"="+strings.Trim(v, `"`))
		}
	}
	for _, want := range []string{"ETCD_NAME=" + name, "ETCD_INITIAL_ADVERTISE_PEER_URLS=" + peer, "ETCD_INITIAL_CLUSTER_STATE=existing"} {
		if !slices.Contains(env, want) {
			t.Fatalf("member add printed %q, lacking %s", out, want)
		}
	}
	id := regexp.MustCompile(`Member +([0-9a-f]+) added to cluster`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("member add printed %q", out)
	}
	if strings.Count(out, "=http") > 2 || slices.Contains(flags, "--learner") {
		if list := m.ctl("member", "list"); !strings.Contains(list, id[1]+", unstarted, , "+peer) {
			t.Errorf("member list before %s starts: %q", name, list)
		}
	}
	n := spawnCairnEnv(t, filepath.Join(dir, name), freeURL(t, "http"), env, "--listen-peer-urls", peer)
	if !slices.Contains(flags, "--learner") {
		n.waitHealthy()
		return n
	}
	// A learner refuses the linearizable read endpoint health makes (as
	// etcd's does): it is up once it answers a status.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := n.ctlErr("endpoint", "status"); err == nil {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("learner %s not up after 20 s", name)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEtcdctlMembership walks etcd's runtime reconfiguration guide with
// etcdctl and the binary: one member grows to three (a voter, then a
// learner that catches up and is promoted), a failed member is replaced
// (stopped, removed, then added again at a fresh data directory), and every
// member's hash agrees at the end.
// With etcdctl, then cairnctl.
func TestEtcdctlMembership(t *testing.T) { eachTool(t, testEtcdctlMembership) }

func testEtcdctlMembership(t *testing.T) {
	dir := t.TempDir()
	ms := startCairnCluster(t, 1)
	ms[0].ctl("put", "before", "1")
	ms = append(ms, addMember(t, ms[0], dir, "m2"))
	ms[1].expect([]string{"get", "before"}, "before", "1")

	l := addMember(t, ms[0], dir, "m3", "--learner")
	ms = append(ms, l)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		// Serializable, from its own state: once the snapshot is in.
		if out, _ := l.ctlErr("get", "before", "--consistency=s", "--print-value-only"); strings.TrimSpace(out) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the learner did not catch up within 20 s")
		}
	}
	l.expect([]string{"put", "k", "v"}, "rpc not supported for learner")
	l.expect([]string{"member", "list"}, ", m3, ", ", true") // (etcd 3.5 refuses it on a learner)
	id := regexp.MustCompile(`"member_id":(\d+)`).FindStringSubmatch(l.ctl("endpoint", "status", "-w", "json"))
	hex := fmt.Sprintf("%x", mustUint(t, id[1]))
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := ms[0].ctlErr("member", "promote", hex)
		if err == nil {
			if !strings.Contains(out, "promoted") {
				t.Errorf("member promote: %q", out)
			}
			break
		}
		if !strings.Contains(out, "in sync with leader") || time.Now().After(deadline) {
			t.Fatalf("member promote: %v %q", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The promoted member serves writes once it has applied its promotion
	// (as in etcd, the leader answers first): until then it refuses them
	// as a learner's.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, err := l.ctlErr("put", "after-promote", "1")
		if err == nil {
			break
		}
		if !strings.Contains(out, "rpc not supported for learner") || time.Now().After(deadline) {
			t.Fatalf("put through the promoted member: %v %q", err, out)
		}
	}
	if list := ms[0].ctl("member", "list"); strings.Count(list, ", started, ") != 3 || strings.Contains(list, "true") {
		t.Errorf("member list after the promotion: %q", list)
	}

	// Replace m2, failed (stopped): removed, then added again on a fresh
	// data directory.
	failed := ms[1].memberHexID()
	ms[1].stop()
	if out := ms[0].ctlSettled("member", "remove", failed); !strings.Contains(out, "removed from cluster") {
		t.Errorf("member remove: %q", out)
	}
	ms[1] = addMember(t, ms[0], dir, "m2b")
	ms[1].ctl("put", "after-replace", "1")

	checkHashKV(t, ms)
}

// memberHexID is the member's id as etcdctl member commands take it.
func (m *member) memberHexID() string {
	m.t.Helper()
	id := regexp.MustCompile(`"member_id":(\d+)`).FindStringSubmatch(m.ctl("endpoint", "status", "-w", "json"))
	if id == nil {
		m.t.Fatal("no member_id in endpoint status")
	}
	return fmt.Sprintf("%x", mustUint(m.t, id[1]))
}

// TestEtcdctlMembershipGrowShrink: one member grows to three and five,
// shrinks to three (its first member among those removed), each refusal
// etcdctl can meet says what etcd says (not found, not a learner, URL in
// use, too many learners, learner not in sync, unhealthy cluster, the
// last voter), and when the three left are gone, one of them started with
// --force-new-cluster is a cluster of one with every acknowledged write.
// With etcdctl, then cairnctl.
func TestEtcdctlMembershipGrowShrink(t *testing.T) { eachTool(t, testEtcdctlMembershipGrowShrink) }

func testEtcdctlMembershipGrowShrink(t *testing.T) {
	dir := t.TempDir()
	ms := startCairnCluster(t, 1)
	puts := 0
	put := func(m *member) {
		// A put through a member whose leader has just removed itself may
		// have gone to that leader and be lost (a timeout, as in etcd):
		// the same put again is harmless.
		args := []string{"put", fmt.Sprintf("k%03d", puts), "v"}
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			out, err := m.ctlErr(args...)
			if err == nil {
				break
			}
			if !strings.Contains(out, "context deadline exceeded") && !strings.Contains(out, "request timed out") || time.Now().After(deadline) {
				t.Fatalf("etcdctl %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		puts++
	}
	put(ms[0])
	for i := 2; i <= 5; i++ {
		ms = append(ms, addMember(t, ms[0], dir, fmt.Sprintf("m%d", i)))
		put(ms[len(ms)-1])
	}
	if list := ms[0].ctl("member", "list"); strings.Count(list, ", started, ") != 5 {
		t.Fatalf("member list of five: %q", list)
	}

	ms[2].expect([]string{"member", "remove", "1234"}, "etcdserver: member not found")
	ms[2].expect([]string{"member", "promote", ms[1].memberHexID()}, "etcdserver: can only promote a learner member")
	// (m1's: an id from URLs and the second could be m4's own again.)
	ms[2].expect([]string{"member", "add", "x", "--peer-urls", ms[0].extra[3]}, "etcdserver: Peer URLs already exists")
	ms[2].expect([]string{"member", "update", "1234", "--peer-urls", freeURL(t, "http")}, "etcdserver: member not found")
	// A learner added (never started): a second is one past
	// --max-learners, and it cannot be promoted before it has caught up.
	out := ms[2].ctlSettled("member", "add", "l1", "--learner", "--peer-urls", freeURL(t, "http"))
	learner := regexp.MustCompile(`Member +([0-9a-f]+) added to cluster`).FindStringSubmatch(out)
	if learner == nil {
		t.Fatalf("member add --learner printed %q", out)
	}
	ms[2].expect([]string{"member", "add", "l2", "--learner", "--peer-urls", freeURL(t, "http")}, "etcdserver: too many learner members in cluster")
	ms[2].expect([]string{"member", "promote", learner[1]}, "etcdserver: can only promote a learner member which is in sync with leader")
	ms[2].ctl("member", "remove", learner[1])

	for _, gone := range []int{0, 4} {
		id := ms[gone].memberHexID()
		if out := ms[2].ctlSettled("member", "remove", id); !strings.Contains(out, "removed from cluster") {
			t.Errorf("member remove %s: %q", id, out)
		}
		select {
		case <-ms[gone].done:
		case <-time.After(20 * time.Second):
			t.Fatalf("member %d did not exit once removed", gone+1)
		}
	}
	rest := []*member{ms[1], ms[2], ms[3]}
	put(rest[0])
	if list := rest[1].ctl("member", "list"); strings.Count(list, ", started, ") != 3 {
		t.Errorf("member list of three: %q", list)
	}

	checkHashKV(t, rest)

	// A voter down: adding one is refused, as the leader is not connected
	// to every voter (--strict-reconfig-check).
	rest[2].stop()
	for _, m := range rest[:2] {
		for deadline := time.Now().Add(20 * time.Second); m.activePeers() != 1; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s still counts %d active peers 20 s after one of its two stopped", m.url, m.activePeers())
			}
		}
	}
	put(rest[0]) // (a leader, should the stopped member have been it)
	rest[0].expect([]string{"member", "add", "x", "--peer-urls", freeURL(t, "http")}, "etcdserver: unhealthy cluster")

	// The three go for good; one comes back alone.
	for _, m := range rest {
		m.stop()
	}
	back := spawnCairnEnv(t, rest[1].dir, rest[1].url, rest[1].env, append(slices.Clone(rest[1].extra), "--force-new-cluster")...)
	back.waitHealthy()
	if out := back.ctl("get", "k", "--prefix", "--count-only", "-w", "fields"); !strings.Contains(out, fmt.Sprintf(`"Count" : %d`, puts)) {
		t.Errorf("after --force-new-cluster, %d writes expected: %q", puts, out)
	}
	if list := back.ctl("member", "list"); strings.Count(list, ", started, ") != 1 {
		t.Errorf("member list after --force-new-cluster: %q", list)
	}
	back.ctl("put", "after", "1")
	back.expect([]string{"member", "remove", back.memberHexID()}, "etcdserver: re-configuration failed due to not enough started members")
}

// activePeers is the number of peers m counts as active
// (etcd_network_active_peers on its /metrics).
func (m *member) activePeers() int {
	m.t.Helper()
	resp, err := http.Get(m.url + "/metrics")
	if err != nil {
		m.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		m.t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "etcd_network_active_peers{") && strings.HasSuffix(line, " 1") {
			n++
		}
	}
	return n
}

// checkHashKV compares the members' hashes (endpoint hashkv --cluster) at
// one revision, once every member has applied it (a linearizable read
// through each).
func checkHashKV(t *testing.T, ms []*member) {
	t.Helper()
	var urls []string
	for _, m := range ms {
		urls = append(urls, m.url)
	}
	all := &member{t: t, url: strings.Join(urls, ",")}
	rev := regexp.MustCompile(`"revision":(\d+)`).FindStringSubmatch(all.ctl("get", "hashkv-probe", "-w", "json"))
	if rev == nil {
		t.Fatal("no revision in get -w json")
	}
	for _, m := range ms {
		m.ctl("get", "hashkv-probe")
	}
	out := all.ctl("endpoint", "hashkv", "--cluster", "--rev", rev[1], "-w", "json")
	hashes := regexp.MustCompile(`"hash":(\d+)`).FindAllStringSubmatch(out, -1)
	if len(hashes) != len(ms) || slices.ContainsFunc(hashes, func(h []string) bool { return h[1] != hashes[0][1] }) {
		t.Errorf("endpoint hashkv --cluster --rev %s: %v\n%s", rev[1], hashes, out)
	}
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
