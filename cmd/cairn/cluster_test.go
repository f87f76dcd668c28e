package main

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/testlog"
	"github.com/cairn-kv/cairn/internal/testseed"
)

// procCluster is n cairn processes on 127.0.0.1 bootstrapped together.
type procCluster struct {
	t       *testing.T
	bin     string
	dir     string
	names   []string
	clients []string // client URLs
	peers   []string // peer URLs
	cmds    []*exec.Cmd
	waits   []chan error
	// args are flags every member gets beside the cluster's; env, by
	// member, what the next start of it adds to its environment.
	args []string
	env  map[int][]string
	logs map[int]*testlog.Buffer // each member's log since its last start
}

// buildBinary builds cairn into dir.
func buildBinary(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "cairn")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "build: %s", out)
	return bin
}

func startProcCluster(t *testing.T, n int, args ...string) *procCluster {
	t.Helper()
	dir := t.TempDir()
	c := &procCluster{t: t, bin: buildBinary(t, dir), dir: dir, cmds: make([]*exec.Cmd, n), waits: make([]chan error, n),
		args: args, env: map[int][]string{}, logs: map[int]*testlog.Buffer{}}
	var initial []string
	for i := range n {
		c.names = append(c.names, fmt.Sprintf("m%d", i+1))
		c.clients = append(c.clients, freeURL(t))
		c.peers = append(c.peers, freeURL(t))
		initial = append(initial, c.names[i]+"="+c.peers[i])
	}
	for i := range n {
		c.start(i, strings.Join(initial, ","))
	}
	t.Cleanup(func() {
		for i := range c.cmds {
			c.kill(i)
		}
	})
	return c
}

// start runs member i (again) over its data directory.
func (c *procCluster) start(i int, initial string) {
	c.t.Helper()
	cmd := exec.Command(c.bin, "--name", c.names[i], "--data-dir", filepath.Join(c.dir, c.names[i]),
		"--listen-client-urls", c.clients[i], "--advertise-client-urls", c.clients[i],
		"--listen-peer-urls", c.peers[i], "--initial-advertise-peer-urls", c.peers[i],
		"--initial-cluster", initial, "--initial-cluster-token", "proc-cluster", "--initial-cluster-state", "new",
		"--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "warn")
	cmd.Args = append(cmd.Args, c.args...)
	if env := c.env[i]; env != nil {
		cmd.Env = append(os.Environ(), env...)
		delete(c.env, i)
	}
	c.logs[i] = &testlog.Buffer{}
	cmd.Stderr = io.MultiWriter(os.Stderr, c.logs[i])
	require.NoError(c.t, cmd.Start())
	wait := make(chan error, 1)
	go func() { wait <- cmd.Wait() }()
	c.cmds[i], c.waits[i] = cmd, wait
}

// initial is the --initial-cluster of the members.
func (c *procCluster) initial() string {
	var initial []string
	for i := range c.names {
		initial = append(initial, c.names[i]+"="+c.peers[i])
	}
	return strings.Join(initial, ",")
}

// kill sends SIGKILL to member i and waits for it to end.
func (c *procCluster) kill(i int) {
	if c.cmds[i] == nil {
		return
	}
	_ = c.cmds[i].Process.Signal(syscall.SIGKILL)
	<-c.waits[i]
	c.cmds[i] = nil
}

// leader waits until the running members agree on one leader and returns
// its index (bounded wait).
func (c *procCluster) leader(cl *clientv3.Client) int {
	c.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		leads := map[uint64]int{}
		self := map[uint64]int{}
		ok := true
		for i, u := range c.clients {
			if c.cmds[i] == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cl.Status(ctx, u)
			cancel()
			if err != nil || st.Leader == 0 {
				ok = false
				break
			}
			leads[st.Leader]++
			self[st.Header.MemberId] = i
		}
		if ok && len(leads) == 1 {
			for l := range leads {
				if i, found := self[l]; found {
					return i
				}
			}
		}
	}
	c.t.Fatal("the members did not agree on a leader within 30 s")
	return -1
}

// TestBinaryClusterKillLeader runs three, then five, cairn processes, a write load
// through all of them, and kills the leader with SIGKILL after a number of
// acknowledgements drawn from the seed; the others elect a leader and
// the load goes on; the killed member is restarted. Every acknowledged
// write must then be on every member, and their HashKV agree.
func TestBinaryClusterKillLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) { killLeader(t, n, rng) })
	}
}

func killLeader(t *testing.T, n int, rng *rand.Rand) {
	c := startProcCluster(t, n)
	cl, err := clientv3.New(clientv3.Config{Endpoints: c.clients, DialTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer cl.Close()
	old := c.leader(cl)

	var mu sync.Mutex
	var acked []string
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("g%d/%06d", g, i)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, err := cl.Put(ctx, k, k)
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, k)
					mu.Unlock()
				}
			}
		}()
	}
	killAfter := 100 + rng.Intn(400)
	waitFor := func(n int, what string) {
		for deadline := time.Now().Add(30 * time.Second); count() < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("%s: %d writes acknowledged after 30 s, want %d", what, count(), n)
			}
		}
	}
	waitFor(killAfter, "before the kill")
	c.kill(old)
	at := count()
	t.Logf("killed the leader, member %d, after %d acknowledged writes", old+1, at)
	waitFor(at+200, "after the kill")
	close(stop)
	wg.Wait()

	var initial []string
	for i := range c.names {
		initial = append(initial, c.names[i]+"="+c.peers[i])
	}
	c.start(old, strings.Join(initial, ","))
	c.leader(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rev int64
	for i, u := range c.clients {
		one, err := clientv3.New(clientv3.Config{Endpoints: []string{u}, DialTimeout: 10 * time.Second})
		require.NoError(t, err)
		resp, err := one.Get(ctx, "g", clientv3.WithPrefix())
		one.Close()
		require.NoError(t, err, "member %d", i+1)
		have := map[string]bool{}
		for _, kv := range resp.Kvs {
			have[string(kv.Key)] = string(kv.Key) == string(kv.Value)
		}
		mu.Lock()
		for _, k := range acked {
			require.True(t, have[k], "member %d lacks acknowledged write %s", i+1, k)
		}
		mu.Unlock()
		rev = max(rev, resp.Header.Revision)
	}
	var hashes []uint32
	for _, u := range c.clients {
		h, err := cl.HashKV(ctx, u, rev)
		require.NoError(t, err)
		hashes = append(hashes, h.Hash)
	}
	for i := range hashes {
		require.Equal(t, hashes[0], hashes[i], "HashKV at %d: %x", rev, hashes)
	}

	// A clean stop of every member.
	for i, cmd := range c.cmds {
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		require.NoError(t, <-c.waits[i], "member %d's exit after SIGTERM", i+1)
		c.cmds[i] = nil
	}
}

// TestLocalCluster: `cairn local-cluster` starts the Procfile's three
// members (on ports moved by --base-port), which form one cluster: a write
// through one is read through another and MemberList shows three; SIGTERM
// stops them all and it exits 0.
func TestLocalCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := buildBinary(t, dir)
	base := freeBasePort(t)
	cmd := exec.Command(bin, "local-cluster", "--data-dir", dir, "--base-port", fmt.Sprint(base))
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	wait := make(chan error, 1)
	go func() { wait <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-wait:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-wait
		}
	})
	var endpoints []string
	for _, m := range localMembers {
		endpoints = append(endpoints, fmt.Sprintf("http://127.0.0.1:%d", base+m.client))
	}
	one, err := clientv3.New(clientv3.Config{Endpoints: endpoints[:1], DialTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer one.Close()
	three, err := clientv3.New(clientv3.Config{Endpoints: endpoints[2:], DialTimeout: 10 * time.Second})
	require.NoError(t, err)
	defer three.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = one.Put(ctx, "hello", "cluster")
	require.NoError(t, err)
	resp, err := three.Get(ctx, "hello")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Equal(t, "cluster", string(resp.Kvs[0].Value))
	ml, err := three.MemberList(ctx)
	require.NoError(t, err)
	require.Len(t, ml.Members, 3)
	// HashKV agrees once each member has applied the write (a
	// linearizable read through each makes sure).
	var hashes []uint32
	for _, ep := range endpoints {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 10 * time.Second})
		require.NoError(t, err)
		_, err = c.Get(ctx, "hashkv-probe")
		require.NoError(t, err)
		h, err := c.HashKV(ctx, ep, resp.Header.Revision)
		c.Close()
		require.NoError(t, err)
		hashes = append(hashes, h.Hash)
	}
	require.Equal(t, hashes[0], hashes[1], "HashKV %x", hashes)
	require.Equal(t, hashes[0], hashes[2], "HashKV %x", hashes)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-wait:
		require.NoError(t, err, "local-cluster's exit after SIGTERM")
		wait <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("local-cluster still running 30 s after SIGTERM")
	}
}

// freeBasePort returns a base port whose six local-cluster ports were free
// a moment ago.
func freeBasePort(t *testing.T) int {
	t.Helper()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for range 100 {
		base := 10000 + rng.Intn(15000) // below the ephemeral range (see freeURL)
		var lns []net.Listener
		ok := true
		for _, m := range localMembers {
			for _, p := range []int{base + m.client, base + m.peerPort} {
				ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
				if err != nil {
					ok = false
					break
				}
				lns = append(lns, ln)
			}
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free base port in 100 tries")
	return 0
}
