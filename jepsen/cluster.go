package jepsen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-kv/cairn/internal/testport"
)

// Target is the server under test: cairn, or etcd for comparison, started
// with the same flags (etcd's names, which cairn shares).
type Target struct {
	Name   string // "cairn" or "etcd"
	Binary string
}

// ClusterConfig is a cluster's shape.
type ClusterConfig struct {
	Target  Target
	Members int
	Dir     string // data dirs and logs, one folder per member, kept
	Seed    int64
	// Extra flags every member starts with (a run lowers
	// --snapshot-count so that members catch up by snapshot).
	Flags []string
	// Env is added to every member's environment at every start (the
	// canary tests arm failpoints with CAIRN_FAILPOINTS).
	Env []string
}

// Cluster is a running cluster of real processes on 127.0.0.1, each
// member's peer port behind the harness's proxy (Net).
type Cluster struct {
	cfg   ClusterConfig
	Net   *Net
	token string

	mu      sync.Mutex
	members []*Member
}

// Member is one member's process and addresses. Its data dir changes
// when membership churn replaces it (Gen counts the replacements).
type Member struct {
	Index      int
	Name       string
	ClientURL  string
	PeerURL    string // the proxy's: what the others know it by
	listenPeer string // its own
	Gen        int
	ID         uint64
	Env        []string // extra environment for its next start (failpoints)

	cmd     *exec.Cmd
	done    chan struct{}
	paused  bool
	removed bool // removed by churn, not yet added back
	logf    *os.File
}

// DataDir is where the member's current incarnation keeps its data.
func (m *Member) DataDir(dir string) string {
	return filepath.Join(dir, m.Name, fmt.Sprintf("data.%d", m.Gen))
}

// StartCluster starts every member and waits until each serves and the
// cluster has a leader.
func StartCluster(ctx context.Context, cfg ClusterConfig) (*Cluster, error) {
	ports, err := testport.Pick(3 * cfg.Members)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, Net: NewNet(cfg.Members, cfg.Seed), token: fmt.Sprintf("jepsen-%d", cfg.Seed)}
	var initial []string
	for i := range cfg.Members {
		m := &Member{
			Index:      i,
			Name:       fmt.Sprintf("m%d", i+1),
			ClientURL:  fmt.Sprintf("http://127.0.0.1:%d", ports[3*i]),
			PeerURL:    fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+1]),
			listenPeer: fmt.Sprintf("127.0.0.1:%d", ports[3*i+2]),
		}
		ln, err := net.Listen("tcp", strings.TrimPrefix(m.PeerURL, "http://"))
		if err != nil {
			c.Net.Close()
			return nil, err
		}
		c.Net.Listen(i, ln, m.listenPeer)
		c.members = append(c.members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.members {
		if err := c.start(m, "new", strings.Join(initial, ",")); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitHealthy(ctx, 60*time.Second); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.learnIDs(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Members returns the members.
func (c *Cluster) Members() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Member(nil), c.members...)
}

// Member returns member i.
func (c *Cluster) Member(i int) *Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.members[i]
}

// start starts m's process with the given initial cluster state.
func (c *Cluster) start(m *Member, state, initial string) error {
	dir := filepath.Join(c.cfg.Dir, m.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := []string{
		"--name", m.Name,
		"--data-dir", m.DataDir(c.cfg.Dir),
		"--listen-client-urls", m.ClientURL,
		"--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", "http://" + m.listenPeer,
		"--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", initial,
		"--initial-cluster-token", c.token,
		"--initial-cluster-state", state,
	}
	args = append(args, c.cfg.Flags...)
	cmd := exec.Command(c.cfg.Target.Binary, args...)
	cmd.Env = append(append(os.Environ(), c.cfg.Env...), m.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// A member dies with the harness, even one killed itself (a CI
	// timeout): no process it started is left behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(logf, "=== jepsen: starting %s %s (%s)\n", c.cfg.Target.Binary, strings.Join(args, " "), strings.Join(append(c.cfg.Env, m.Env...), " "))
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.mu.Lock()
	m.cmd, m.done, m.paused, m.logf = cmd, done, false, logf
	c.mu.Unlock()
	return nil
}

// initialCluster is the --initial-cluster of the members as they are now.
func (c *Cluster) initialCluster() string {
	var parts []string
	for _, m := range c.Members() {
		parts = append(parts, m.Name+"="+m.PeerURL)
	}
	return strings.Join(parts, ",")
}

// Running says whether member i's process is running (paused counts).
func (c *Cluster) Running(i int) bool {
	m := c.Member(i)
	c.mu.Lock()
	done := m.done
	c.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Kill stops member i with SIGKILL and waits for it to exit.
func (c *Cluster) Kill(i int) {
	m := c.Member(i)
	c.mu.Lock()
	cmd, done, logf := m.cmd, m.done, m.logf
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	if logf != nil {
		fmt.Fprintf(logf, "=== jepsen: killed\n")
		logf.Close()
	}
	c.mu.Lock()
	m.cmd, m.paused, m.logf = nil, false, nil
	c.mu.Unlock()
}

// Restart starts member i again on its data dir (it must be stopped).
func (c *Cluster) Restart(i int) error {
	m := c.Member(i)
	if c.Running(i) {
		return fmt.Errorf("jepsen: %s is running", m.Name)
	}
	c.Kill(i) // reap a process that exited on its own
	return c.start(m, "existing", c.initialCluster())
}

// Pause stops member i with SIGSTOP; Resume continues it.
func (c *Cluster) Pause(i int) { c.signal(i, syscall.SIGSTOP, true) }

// Resume continues member i after Pause.
func (c *Cluster) Resume(i int) { c.signal(i, syscall.SIGCONT, false) }

func (c *Cluster) signal(i int, sig syscall.Signal, paused bool) {
	m := c.Member(i)
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.cmd != nil {
		_ = m.cmd.Process.Signal(sig)
		m.paused = paused
	}
}

// Stop kills every member and closes the proxies.
func (c *Cluster) Stop() {
	for _, m := range c.Members() {
		if m.paused {
			c.Resume(m.Index)
		}
		c.Kill(m.Index)
	}
	c.Net.Close()
}

// Client returns a client of member i alone; the caller closes it.
func (c *Cluster) Client(i int) (*clientv3.Client, error) {
	return newClient(c.Member(i).ClientURL)
}

func newClient(endpoints ...string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		Logger:               zap.NewNop(),
	})
}

// status asks member i for its status.
func (c *Cluster) status(ctx context.Context, i int) (*clientv3.StatusResponse, error) {
	cl, err := c.Client(i)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return cl.Status(ctx, c.Member(i).ClientURL)
}

// WaitHealthy waits until every running member answers, all with the
// same leader, and a linearizable read succeeds on each.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = c.healthy(ctx); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("jepsen: cluster not healthy after %v: %w", timeout, last)
}

func (c *Cluster) healthy(ctx context.Context) error {
	var lead uint64
	for _, m := range c.Members() {
		if !c.Running(m.Index) {
			continue
		}
		st, err := c.status(ctx, m.Index)
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
		if st.Leader == 0 || lead != 0 && st.Leader != lead {
			return fmt.Errorf("%s: leader %x (others: %x)", m.Name, st.Leader, lead)
		}
		lead = st.Leader
		cl, err := c.Client(m.Index)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = cl.Get(rctx, "health")
		cancel()
		cl.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", m.Name, err)
		}
	}
	return nil
}

// learnIDs asks the cluster for its members and tells the network their
// ids (matched by peer URL).
func (c *Cluster) learnIDs(ctx context.Context) error {
	var resp *clientv3.MemberListResponse
	var err error
	for _, m := range c.Members() {
		if !c.Running(m.Index) {
			continue
		}
		var cl *clientv3.Client
		if cl, err = c.Client(m.Index); err != nil {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err = cl.MemberList(lctx)
		cancel()
		cl.Close()
		if err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	for _, pm := range resp.Members {
		for _, m := range c.Members() {
			for _, u := range pm.PeerURLs {
				if u == m.PeerURL {
					c.mu.Lock()
					m.ID = pm.ID
					c.mu.Unlock()
					c.Net.SetID(pm.ID, m.Index)
				}
			}
		}
	}
	return nil
}

// Leader returns the index of the member the running members agree
// leads, or an error if they do not agree or there is none.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	votes := map[uint64]int{}
	for _, m := range c.Members() {
		if !c.Running(m.Index) || m.paused {
			continue
		}
		if st, err := c.status(ctx, m.Index); err == nil && st.Leader != 0 {
			votes[st.Leader]++
		}
	}
	for id, n := range votes {
		if 2*n > len(c.Members()) {
			for _, m := range c.Members() {
				if m.ID == id {
					return m.Index, nil
				}
			}
		}
	}
	return -1, errors.New("jepsen: no leader that a majority knows")
}

// Replace removes member i from the cluster, stops it, and adds it back
// under a fresh data dir (a new member id), started as joining an
// existing cluster: membership churn. It asks through member via.
func (c *Cluster) Replace(ctx context.Context, i, via int) error {
	m := c.Member(i)
	cl, err := c.Client(via)
	if err != nil {
		return err
	}
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = cl.MemberRemove(rctx, m.ID)
	cancel()
	if err != nil {
		return fmt.Errorf("remove %s: %w", m.Name, err)
	}
	if m.paused {
		c.Resume(i)
	}
	c.Kill(i)
	c.mu.Lock()
	m.removed = true
	c.mu.Unlock()
	return c.addBack(i)
}

// addBack adds removed member i back, on a fresh data dir, and starts
// it. It runs to the end whatever the run's clock says (a cluster left a
// member short would fail the final checks for the harness's doing),
// asking again while the cluster settles: a strict reconfiguration check
// may refuse it a moment after the removal, and an add that timed out
// may have been made (its peer URL is then listed, unstarted).
func (c *Cluster) addBack(i int) error {
	m := c.Member(i)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var id uint64
	var last error
	for id == 0 && ctx.Err() == nil {
		for _, o := range c.Members() {
			if o.Index == i || !c.Running(o.Index) {
				continue
			}
			if id, last = c.addMember(ctx, o.Index, m.PeerURL); id != 0 {
				break
			}
		}
		if id == 0 {
			sleep(ctx, 500*time.Millisecond)
		}
	}
	if id == 0 {
		return fmt.Errorf("add %s back: %w", m.Name, last)
	}
	c.mu.Lock()
	m.Gen++
	m.ID = id
	m.removed = false
	c.mu.Unlock()
	c.Net.SetID(id, i)
	return c.start(m, "existing", c.initialCluster())
}

// addMember adds a member at peerURL through member via, or finds it
// listed already; it returns its id (0 if neither).
func (c *Cluster) addMember(ctx context.Context, via int, peerURL string) (uint64, error) {
	cl, err := c.Client(via)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	added, err := cl.MemberAdd(actx, []string{peerURL})
	if err == nil {
		return added.Member.ID, nil
	}
	list, lerr := cl.MemberList(actx)
	if lerr != nil {
		return 0, err
	}
	for _, pm := range list.Members {
		if len(pm.PeerURLs) == 1 && pm.PeerURLs[0] == peerURL && pm.Name == "" {
			return pm.ID, nil // added (by an add that timed out), not started
		}
	}
	return 0, err
}
