package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/testlog"
	"github.com/cairn-kv/cairn/internal/testport"
	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/server"
	"github.com/cairn-kv/cairn/server/member"
	"github.com/stretchr/testify/require"
)

// TestFlagsAndEnvironment: etcd's flag names, defaults, and ETCD_* /
// CAIRN_* variables for flags not given.
func TestFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{"ETCD_NAME": "from-env", "CAIRN_MAX_TXN_OPS": "7", "ETCD_LISTEN_CLIENT_URLS": "http://127.0.0.1:1,http://127.0.0.1:2",
		"ETCD_ADVERTISE_CLIENT_URLS": "http://127.0.0.1:2379"}
	o, err := parseFlags([]string{"--heartbeat-interval=50", "--election-timeout", "500"}, env, io.Discard)
	require.NoError(t, err)
	cfg := o.cfg
	if cfg.Name != "from-env" || cfg.MaxTxnOps != 7 || cfg.HeartbeatInterval != 50*time.Millisecond || cfg.ElectionTimeout != 500*time.Millisecond ||
		len(cfg.ListenClientURLs) != 2 || cfg.AdvertiseClientURLs[0] != "http://127.0.0.1:2379" {
		t.Fatalf("config %+v", cfg)
	}
	if !slices.Equal(cfg.CORS, []string{"*"}) || !slices.Equal(cfg.HostWhitelist, []string{"*"}) {
		t.Fatalf("default --cors %q, --host-whitelist %q", cfg.CORS, cfg.HostWhitelist)
	}
	o, err = parseFlags([]string{"--cors", "https://a.example, https://b.example,https://a.example", "--host-whitelist="}, nil, io.Discard)
	if err != nil || !slices.Equal(o.cfg.CORS, []string{"https://a.example", "https://b.example"}) || len(o.cfg.HostWhitelist) != 0 {
		t.Fatalf("--cors %q, --host-whitelist %q (%v)", o.cfg.CORS, o.cfg.HostWhitelist, err)
	}
	if _, err := parseFlags([]string{"--no-such-flag"}, nil, io.Discard); err == nil {
		t.Fatal("an unknown flag was accepted")
	}
	if _, err := parseFlags(nil, map[string]string{"ETCD_MAX_TXN_OPS": "x"}, io.Discard); err == nil {
		t.Fatal("a bad environment value was accepted")
	}
}

// TestInitialCluster: etcd's bootstrap flags for a new cluster, of one
// member or several, are accepted and read into the configuration; a
// local name or peer URL missing is refused with etcd's error; joining a
// running cluster (existing) takes the same flags.
func TestInitialCluster(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string // "" if accepted
	}{
		{nil, ""},
		{[]string{"--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:2380", "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-cluster-state", "new"}, ""},
		{[]string{"--name", "m1", "--initial-advertise-peer-urls", "https://10.0.0.1:2380,https://10.0.0.2:2380", "--initial-cluster", "m1=https://10.0.0.2:2380,m1=https://10.0.0.1:2380"}, ""},
		{[]string{"--name", "m1", "--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--initial-cluster", "m1=http://127.0.0.1:2380,m2=http://127.0.0.2:2380,m3=http://127.0.0.3:2380"}, ""},
		{[]string{"--name", "m1", "--initial-cluster", "m2=http://127.0.0.1:2380"}, `couldn't find local name "m1"`},
		{[]string{"--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:9999"}, "missing from --initial-advertise-peer-urls"},
		{[]string{"--initial-cluster", "default"}, "is not name=URL"},
		{[]string{"--name", "m2", "--initial-advertise-peer-urls", "http://127.0.0.2:2380", "--initial-cluster", "m1=http://127.0.0.1:2380,m2=http://127.0.0.2:2380", "--initial-cluster-state", "existing"}, ""},
		{[]string{"--initial-cluster-state", "old"}, `invalid value "old" for flag -initial-cluster-state`},
	} {
		_, err := parseFlags(tc.args, nil, io.Discard)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
		}
	}
	o, err := parseFlags([]string{"--name", "b", "--initial-advertise-peer-urls", "http://127.0.0.2:2380",
		"--initial-cluster", "a=http://127.0.0.1:2380,b=http://127.0.0.2:2380,a=http://127.0.0.9:2380"}, nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []member.InitialMember{{Name: "a", PeerURLs: []string{"http://127.0.0.1:2380", "http://127.0.0.9:2380"}},
		{Name: "b", PeerURLs: []string{"http://127.0.0.2:2380"}}}, o.cfg.InitialCluster)
}

// TestConfigFile: an etcd YAML configuration file sets the flags (TLS
// under client-transport-security), and, as in etcd, the command line and
// the environment are then ignored.
func TestConfigFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "etcd.yaml")
	yaml := `name: from-file
data-dir: /tmp/somewhere
listen-client-urls: http://127.0.0.1:3000,http://127.0.0.1:3001
advertise-client-urls: http://127.0.0.1:3000
heartbeat-interval: 20
election-timeout: 200
quota-backend-bytes: 4294967296
auto-compaction-mode: revision
auto-compaction-retention: "1000"
enable-pprof: true
initial-cluster: from-file=http://127.0.0.1:2380
snapshot-count: 5000
max-wals: 0
experimental-snapshot-catch-up-entries: 77
client-transport-security:
  cert-file: /c.pem
  key-file: /k.pem
  client-cert-auth: true
peer-transport-security:
  cert-file: /pc.pem
  key-file: /pk.pem
  trusted-ca-file: /ca.pem
  client-cert-auth: true
  allowed-cn: member
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ETCD_MAX_TXN_OPS": "7"}
	o, err := parseFlags([]string{"--config-file", path, "--name", "from-flag"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.cfg
	if cfg.Name != "from-file" || cfg.DataDir != "/tmp/somewhere" || len(cfg.ListenClientURLs) != 2 || cfg.HeartbeatInterval != 20*time.Millisecond ||
		cfg.ElectionTimeout != 200*time.Millisecond || cfg.QuotaBackendBytes != 4<<30 || cfg.AutoCompaction.Revisions != 1000 ||
		!cfg.EnablePprof || cfg.CertFile != "/c.pem" || cfg.KeyFile != "/k.pem" || !cfg.ClientCertAuth || cfg.MaxTxnOps != 128 ||
		cfg.SnapshotCount != 5000 || cfg.MaxWALs != 0 || cfg.MaxSnapshots != 5 {
		t.Fatalf("config from file: %+v", cfg)
	}
	require.Equal(t, server.PeerTLS{CertFile: "/pc.pem", KeyFile: "/pk.pem", TrustedCAFile: "/ca.pem", ClientCertAuth: true, AllowedCNs: []string{"member"}}, cfg.PeerTLS)
	require.Equal(t, uint64(77), cfg.SnapshotCatchUpEntries, "the YAML spelling of --experimental-snapshot-catchup-entries")
	o, err = parseFlags([]string{"--peer-auto-tls", "--peer-cert-allowed-hostname", "h.example", "--peer-crl-file", "/crl.pem"}, nil, io.Discard)
	require.NoError(t, err)
	require.Equal(t, server.PeerTLS{AutoTLS: true, AllowedHostnames: []string{"h.example"}, CRLFile: "/crl.pem"}, o.cfg.PeerTLS)
	if err := os.WriteFile(path, []byte("heartbeat-interval: [oops"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseFlags([]string{"--config-file", path}, nil, io.Discard); err == nil {
		t.Fatal("a malformed configuration file was accepted")
	}
}

// TestNotifySystemd: with NOTIFY_SOCKET set, READY=1 reaches it.
func TestNotifySystemd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	if err := notifySystemd(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Fatalf("notify socket got %q %v", buf[:n], err)
	}
}

// TestBinaryServesAndStopsCleanly builds cairn, runs it on 127.0.0.1,
// writes through etcd's client, stops it with SIGTERM (it must exit 0),
// and runs it again over the same data directory: the write is there.
func TestBinaryServesAndStopsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cairn")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	run := func() *exec.Cmd {
		// Snapshots every 50 entries: kills land in them too.
		cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:0",
			"--snapshot-count", "50", "--max-wals", "1", "--max-snapshots", "1")
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
		return cmd
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := run()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "hello", "world"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	cmd = run()
	c, err = clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Get(ctx, "hello")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "world" {
		t.Fatalf("after restart: %+v %v", resp, err)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("second exit: %v", err)
	}
}

// TestKillNineLosesNoAcknowledgedWrite runs a write load from several
// clients against the binary, kills it with SIGKILL in the middle (after a
// random number of acknowledgements, from the seed), restarts it over the
// same data dir, and reads back every write that was acknowledged.
func TestKillNineLosesNoAcknowledgedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	dir := t.TempDir()
	bin := filepath.Join(dir, "cairn")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	const rounds = 3
	var ackedKeys []string // every write acknowledged so far; each key is its value
	for round := 0; round <= rounds; round++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String()
		ln.Close()
		// Snapshots every 50 entries: kills land in them too.
		cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:0",
			"--snapshot-count", "50", "--max-wals", "1", "--max-snapshots", "1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
		if err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatal(err)
		}
		// Every write acknowledged in earlier rounds must still be there.
		checkAcked(t, c, round, ackedKeys)
		if round == rounds {
			c.Close()
			_ = cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
			break
		}
		killAfter := 50 + rng.Intn(400)
		var mu sync.Mutex
		acked := 0
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var wg sync.WaitGroup
		killed := make(chan struct{})
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					key := fmt.Sprintf("r%d/g%d/%06d", round, g, i)
					if _, err := c.Put(ctx, key, key); err != nil {
						return // killed (or out of time)
					}
					mu.Lock()
					ackedKeys = append(ackedKeys, key)
					acked++
					if acked == killAfter {
						_ = cmd.Process.Signal(syscall.SIGKILL)
						close(killed)
					}
					mu.Unlock()
				}
			}()
		}
		select {
		case <-killed:
		case <-ctx.Done():
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
		cancel()
		wg.Wait()
		c.Close()
		t.Logf("round %d: killed after %d acknowledged puts", round, acked)
	}
}

// checkAcked checks that every key of ackedKeys is there, its own value.
func checkAcked(t *testing.T, c *clientv3.Client, round int, ackedKeys []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, "r", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]string{}
	for _, kv := range resp.Kvs {
		have[string(kv.Key)] = string(kv.Value)
	}
	for _, k := range ackedKeys {
		if have[k] != k {
			t.Fatalf("before round %d: acknowledged write %q is lost (have %d keys, %d acknowledged)", round, k, len(have), len(ackedKeys))
		}
	}
}

// TestMemberFailureExits: when the member's storage fails (a WAL write
// here), run stops serving and returns 1 with the reason, so that the
// process exits non-zero; a signal stops it with 0.
func TestMemberFailureExits(t *testing.T) {
	efs := vfs.NewErrorFS(vfs.Default)
	url := freeURL(t)
	args := []string{"--data-dir", filepath.Join(t.TempDir(), "data"), "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:0"}
	var stderr testlog.Buffer
	sig := make(chan os.Signal, 1)
	code := make(chan int, 1)
	go func() {
		code <- run(args, nil, io.Discard, &stderr, sig, func(c *server.Config) { c.FS = efs })
	}()
	t.Cleanup(func() {
		sig <- syscall.SIGTERM // ends run if the test failed before it did
		<-code
	})
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Put(ctx, "k", "v")
	require.NoError(t, err)

	efs.Inject(vfs.FaultWrite, 1, vfs.ErrInjected, true)
	put, cancelPut := context.WithTimeout(ctx, 2*time.Second)
	defer cancelPut()
	_, err = c.Put(put, "k", "v2")
	require.Error(t, err)
	select {
	case got := <-code:
		code <- got // for the cleanup
		require.Equal(t, 1, got, "run's exit code")
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10 s of the member failing")
	}
	require.Contains(t, stderr.String(), "cairn: the member failed: wal: write failed")
}

// freeURL is an http URL on 127.0.0.1 with a port free a moment ago.
func freeURL(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("http://127.0.0.1:%d", testport.Free(t, 1)[0])
}

// TestBinaryFailpoints: CAIRN_FAILPOINTS arms failpoints in the binary,
// as etcd's GOFAIL_FAILPOINTS does: a WAL sync failing at start makes it
// exit 1 with the reason; a spec it cannot read, 2.
func TestBinaryFailpoints(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "cairn")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "build: %s", out)
	url := freeURL(t)
	for _, tc := range []struct {
		spec string
		code int
		says string
	}{
		{"wal/beforeSync=error", 1, "cairn: cannot start"},
		{"wal/beforeSync=later", 2, "CAIRN_FAILPOINTS"},
	} {
		cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--listen-client-urls", url, "--advertise-client-urls", url, "--listen-peer-urls", "http://127.0.0.1:0")
		cmd.Env = append(os.Environ(), "CAIRN_FAILPOINTS="+tc.spec)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("%s: still running after 30 s", tc.spec)
		}
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, tc.spec)
		require.Equal(t, tc.code, exit.ExitCode(), "%s: %s", tc.spec, stderr.String())
		require.Contains(t, stderr.String(), tc.says, tc.spec)
	}
}

// TestReconfigFlags: --strict-reconfig-check (on by default),
// --max-learners (1 by default, at least 1) and --force-new-cluster reach
// the member's configuration.
func TestReconfigFlags(t *testing.T) {
	o, err := parseFlags(nil, nil, io.Discard)
	require.NoError(t, err)
	require.False(t, o.cfg.NoStrictReconfigCheck)
	require.Equal(t, 1, o.cfg.MaxLearners)
	o, err = parseFlags([]string{"--strict-reconfig-check=false", "--max-learners", "3"}, nil, io.Discard)
	require.NoError(t, err)
	require.True(t, o.cfg.NoStrictReconfigCheck)
	require.Equal(t, 3, o.cfg.MaxLearners)
	require.False(t, o.cfg.ForceNewCluster)
	require.False(t, o.cfg.LearnerAutoPromote)
	o, err = parseFlags([]string{"--force-new-cluster", "--learner-auto-promote"}, nil, io.Discard)
	require.NoError(t, err)
	require.True(t, o.cfg.ForceNewCluster)
	require.True(t, o.cfg.LearnerAutoPromote)
	_, err = parseFlags([]string{"--max-learners", "0"}, nil, io.Discard)
	require.ErrorContains(t, err, "--max-learners must be at least 1")
}
