package server

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/testport"
	"github.com/cairn-kv/cairn/server/member"
)

// memberIDs returns the ids a member list names, and the learners among
// them.
func memberIDs(t *testing.T, cl *clientv3.Client) (ids, learners []uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cl.MemberList(ctx)
	require.NoError(t, err)
	for _, m := range resp.Members {
		ids = append(ids, m.ID)
		if m.IsLearner {
			learners = append(learners, m.ID)
		}
	}
	slices.Sort(ids)
	slices.Sort(learners)
	return ids, learners
}

// waitConnected waits until the leader has been connected to every other
// running member for the strict reconfiguration check's 5 s (a bound on
// the wait, not a timing assertion).
func (c *testCluster) waitConnected(lead int) {
	c.t.Helper()
	ids := c.ids()
	require.Eventually(c.t, func() bool {
		for i, id := range ids {
			if i == lead || c.down[i] {
				continue
			}
			since := c.servers[lead].m.PeerActiveSince(id)
			if since.IsZero() || time.Since(since) < 5*time.Second {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond)
}

// waitRemoved waits for member i, just removed, to stop with etcd's
// message, and marks it down.
func (c *testCluster) waitRemoved(ctx context.Context, i int) {
	c.t.Helper()
	select {
	case <-c.servers[i].Failed():
	case <-ctx.Done():
		c.t.Fatalf("member %d, removed, did not stop", i+1)
	}
	require.ErrorIs(c.t, c.servers[i].Err(), member.ErrMemberRemoved)
	c.stop(i)
}

// unusedPeerURL is a peer URL no member listens on.
func unusedPeerURL(t *testing.T) string {
	return fmt.Sprintf("http://127.0.0.1:%d", testport.Free(t, 1)[0])
}

// TestMembershipRemoveVoter: a voter removed (through a follower, which
// forwards the change to the leader) stops with etcd's message; the rest
// go on serving; its data directory, started again, is refused, and so
// are its connections.
func TestMembershipRemoveVoter(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lead := c.leader()
	c.waitConnected(lead)
	_, err := c.clients[lead].Put(ctx, "before", "1")
	require.NoError(t, err)
	via, gone := (lead+1)%3, (lead+2)%3
	ids := c.ids()
	resp, err := c.clients[via].MemberRemove(ctx, ids[gone])
	require.NoError(t, err)
	require.Len(t, resp.Members, 2)
	require.Equal(t, ids[via], resp.Header.MemberId, "the answer comes from the member asked")

	c.waitRemoved(ctx, gone)
	for i := range 3 {
		if i != gone {
			got, _ := memberIDs(t, c.clients[i])
			require.NotContains(t, got, ids[gone])
			require.Len(t, got, 2)
		}
	}
	_, err = c.clients[via].Put(ctx, "after", "1")
	require.NoError(t, err)

	// Started again over its data directory, it is refused by the others
	// and stops (or refuses at once, had it applied its own removal).
	cfg := DefaultConfig()
	cfg.DataDir = c.dirs[gone]
	cfg.HeartbeatInterval, cfg.ElectionTimeout = 10*time.Millisecond, 100*time.Millisecond
	c.sets[gone](&cfg)
	s, err := Start(cfg)
	if err == nil {
		select {
		case <-s.Failed():
			err = s.Err()
		case <-ctx.Done():
		}
		s.Stop()
	}
	require.ErrorIs(t, err, member.ErrMemberRemoved)
	_, err = c.clients[lead].Put(ctx, "still", "1")
	require.NoError(t, err)
}

// TestMembershipRefusals: every refusal of a membership change, with
// etcd's message, and the changes that are taken (a learner added and
// removed, peer URLs updated) seen in every member's list.
func TestMembershipRefusals(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lead := c.leader()
	c.waitConnected(lead)
	ids := c.ids()
	follower := (lead + 1) % 3
	cl := c.clients[follower]
	peerURL := c.servers[lead].m.Config().InitialAdvertisePeerURLs[0]

	_, err := cl.MemberRemove(ctx, 12345)
	require.ErrorContains(t, err, "etcdserver: member not found")
	_, err = cl.MemberUpdate(ctx, 12345, []string{unusedPeerURL(t)})
	require.ErrorContains(t, err, "etcdserver: member not found")
	_, err = cl.MemberPromote(ctx, 12345)
	require.ErrorContains(t, err, "etcdserver: member not found")
	_, err = cl.MemberPromote(ctx, ids[lead])
	require.ErrorContains(t, err, "etcdserver: can only promote a learner member")
	_, err = cl.MemberAdd(ctx, []string{peerURL})
	require.ErrorContains(t, err, "etcdserver: Peer URLs already exists")
	_, err = cl.MemberUpdate(ctx, ids[follower], []string{peerURL})
	require.ErrorContains(t, err, "etcdserver: Peer URLs already exists")
	// (Past clientv3, which checks URLs itself.)
	raw := pb.NewClusterClient(cl.ActiveConnection())
	for _, bad := range [][]string{nil, {"127.0.0.1:2380"}, {"ftp://127.0.0.1:2380"}, {"http://127.0.0.1"}} {
		_, err = raw.MemberAdd(ctx, &pb.MemberAddRequest{PeerURLs: bad})
		require.ErrorContains(t, err, "etcdserver: given member URLs are invalid", "%q", bad)
	}

	// A learner: listed unstarted (no name), at most one, not promoted
	// before it has caught up (it never started).
	added, err := cl.MemberAddAsLearner(ctx, []string{unusedPeerURL(t)})
	require.NoError(t, err)
	require.True(t, added.Member.IsLearner)
	require.Empty(t, added.Member.Name)
	require.Len(t, added.Members, 4)
	learner := added.Member.ID
	_, err = cl.MemberAddAsLearner(ctx, []string{unusedPeerURL(t)})
	require.ErrorContains(t, err, "etcdserver: too many learner members in cluster")
	_, err = cl.MemberPromote(ctx, learner)
	require.ErrorContains(t, err, "etcdserver: can only promote a learner member which is in sync with leader")
	for i := range 3 {
		require.Eventually(t, func() bool {
			_, ls := memberIDs(t, c.clients[i])
			return slices.Equal(ls, []uint64{learner})
		}, 10*time.Second, 10*time.Millisecond)
	}
	_, err = cl.MemberRemove(ctx, learner)
	require.NoError(t, err)
	_, err = cl.MemberAdd(ctx, []string{unusedPeerURL(t)})
	require.NoError(t, err, "an unstarted voter: three of four started")

	// With three of four voters started, a fifth is taken (three of five
	// is a quorum), a sixth is not.
	fifth, err := cl.MemberAdd(ctx, []string{unusedPeerURL(t)})
	require.NoError(t, err)
	_, err = cl.MemberAdd(ctx, []string{unusedPeerURL(t)})
	require.ErrorContains(t, err, "etcdserver: re-configuration failed due to not enough started members")

	// Peer URLs updated, then back, are seen by every member.
	own := c.servers[follower].m.Config().InitialAdvertisePeerURLs
	moved := []string{unusedPeerURL(t)}
	_, err = cl.MemberUpdate(ctx, fifth.Member.ID, moved)
	require.NoError(t, err)
	for i := range 3 {
		require.Eventually(t, func() bool {
			resp, err := c.clients[i].MemberList(ctx)
			return err == nil && slices.ContainsFunc(resp.Members, func(m *pb.Member) bool {
				return m.ID == fifth.Member.ID && slices.Equal(m.PeerURLs, moved)
			})
		}, 10*time.Second, 10*time.Millisecond)
	}
	_, err = cl.MemberUpdate(ctx, ids[follower], own)
	require.NoError(t, err, "its own URLs again: no change, no refusal")

	// The unstarted voters go (each down: not part of the active quorum).
	resp, err := cl.MemberList(ctx)
	require.NoError(t, err)
	for _, m := range resp.Members {
		if m.Name == "" {
			_, err = cl.MemberRemove(ctx, m.ID)
			require.NoError(t, err)
		}
	}
	got, _ := memberIDs(t, cl)
	require.Equal(t, sortedCopy(ids), got)

	// A voter down: adding one is refused (the leader is connected to
	// two of what would be four), removing the one down is not.
	down := (lead + 2) % 3
	c.stop(down)
	require.Eventually(t, func() bool { return c.servers[lead].m.PeerActiveSince(ids[down]).IsZero() }, 10*time.Second, 10*time.Millisecond)
	_, err = c.clients[lead].MemberAdd(ctx, []string{unusedPeerURL(t)})
	require.ErrorContains(t, err, "etcdserver: unhealthy cluster")
	_, err = c.clients[lead].MemberRemove(ctx, ids[down])
	require.NoError(t, err)
	_, err = c.clients[lead].Put(ctx, "k", "v")
	require.NoError(t, err)
	require.False(t, errors.Is(c.servers[lead].Err(), member.ErrMemberRemoved))
}

func sortedCopy(ids []uint64) []uint64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// join adds a member through the leader's client (a learner if asked) and
// starts it with --initial-cluster-state existing, as the lines etcdctl
// member add prints would; it returns the new member's index.
func (c *testCluster) join(name string, learner bool) int {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ports := testport.Free(c.t, 2)
	peer, client := fmt.Sprintf("http://127.0.0.1:%d", ports[0]), fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	lead := c.leader()
	add := c.clients[lead].MemberAdd
	if learner {
		add = c.clients[lead].MemberAddAsLearner
	}
	resp, err := add(ctx, []string{peer})
	require.NoError(c.t, err)
	// etcdctl's ETCD_INITIAL_CLUSTER: every started member, and this one.
	var initial []member.InitialMember
	for _, m := range resp.Members {
		switch {
		case m.ID == resp.Member.ID:
			initial = append(initial, member.InitialMember{Name: name, PeerURLs: m.PeerURLs})
		case m.Name != "":
			initial = append(initial, member.InitialMember{Name: m.Name, PeerURLs: m.PeerURLs})
		}
	}
	i := len(c.servers)
	c.dirs = append(c.dirs, filepath.Join(filepath.Dir(c.dirs[0]), name))
	c.sets = append(c.sets, func(cfg *Config) {
		cfg.Name = name
		cfg.InitialCluster = initial
		cfg.InitialClusterState = "existing"
		cfg.InitialAdvertisePeerURLs = []string{peer}
		cfg.ListenPeerURLs = []string{peer}
		cfg.InitialClusterToken = "test-cluster"
		cfg.ListenClientURLs = []string{client}
		cfg.AdvertiseClientURLs = cfg.ListenClientURLs
		cfg.Faults = c.faults
		if c.set != nil {
			c.set(cfg)
		}
	})
	s, cl, stop := startMemberWith(c.t, c.dirs[i], c.sets[i])
	c.servers, c.clients, c.stops = append(c.servers, s), append(c.clients, cl), append(c.stops, stop)
	c.t.Cleanup(c.checkHashKV) // before this member's cleanup stops it
	require.Equal(c.t, resp.Member.ID, s.m.ID(), "it takes the id the cluster gave it")
	// Started: it has published its name through the log.
	require.Eventually(c.t, func() bool {
		list, err := c.clients[lead].MemberList(ctx)
		return err == nil && slices.ContainsFunc(list.Members, func(m *pb.Member) bool { return m.ID == resp.Member.ID && m.Name == name })
	}, 20*time.Second, 20*time.Millisecond)
	// Caught up to the leader as of then, its first snapshot installed: a
	// request it proposed before would have had its entry inside that
	// snapshot, applied there but never answered here ("request timed
	// out", as in etcd).
	upTo := c.servers[lead].m.AppliedIndex()
	require.Eventually(c.t, func() bool { return s.m.AppliedIndex() >= upTo }, 20*time.Second, 10*time.Millisecond)
	return i
}

// TestMembershipGrowAndShrink walks etcd's runtime reconfiguration guide
// in process: one member grows to three (a learner added, caught up by
// snapshot, serving serializable reads only, promoted once in sync; then
// a voter), and the first member, leading, removes itself; every write
// acknowledged on the way is on every member at the end (HashKV).
func TestMembershipGrowAndShrink(t *testing.T) {
	c := startCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := range 100 {
		_, err := c.clients[0].Put(ctx, fmt.Sprintf("k%03d", i), "v")
		require.NoError(t, err)
	}

	l := c.join("m2", true)
	require.Eventually(t, func() bool {
		resp, err := c.clients[l].Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 100
	}, 20*time.Second, 20*time.Millisecond, "the learner has the data")
	_, err := c.clients[l].Get(ctx, "k000")
	require.ErrorContains(t, err, "etcdserver: rpc not supported for learner")
	_, err = c.clients[l].Put(ctx, "k", "v")
	require.ErrorContains(t, err, "etcdserver: rpc not supported for learner")
	ids, learners := memberIDs(t, c.clients[l]) // (etcd 3.5 refuses it on a learner)
	require.Len(t, ids, 2)
	require.Equal(t, []uint64{c.servers[l].m.ID()}, learners)
	_, err = c.clients[l].Status(ctx, c.servers[l].ClientURLs()[0])
	require.NoError(t, err)

	// Promoted once in sync (a refusal while behind is etcd's).
	var perr error
	require.Eventually(t, func() bool {
		_, perr = c.clients[0].MemberPromote(ctx, c.servers[l].m.ID())
		return perr == nil || !errors.Is(perr, rpctypes.ErrMemberLearnerNotReady)
	}, 20*time.Second, 50*time.Millisecond)
	require.NoError(t, perr)
	require.Eventually(t, func() bool { return !c.servers[l].m.IsLearner() }, 10*time.Second, 10*time.Millisecond)
	_, err = c.clients[l].Put(ctx, "after-promote", "v")
	require.NoError(t, err)

	c.waitConnected(c.leader())
	v := c.join("m3", false)
	_, err = c.clients[v].Put(ctx, "after-third", "v")
	require.NoError(t, err)
	ids, learners = memberIDs(t, c.clients[v])
	require.Len(t, ids, 3)
	require.Empty(t, learners)

	// The first member, leading, removes itself; the other two go on.
	lead := c.leader()
	c.waitConnected(lead)
	_, err = c.clients[lead].MemberRemove(ctx, c.servers[lead].m.ID())
	require.NoError(t, err)
	c.waitRemoved(ctx, lead)
	rest := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == lead })
	_, err = c.clients[rest[0]].Put(ctx, "after-shrink", "v")
	require.NoError(t, err)
	ids, _ = memberIDs(t, c.clients[rest[1]])
	require.Len(t, ids, 2)
}

// TestMembershipForceNewCluster: with the other two members gone for
// good, the third restarted with --force-new-cluster is a cluster of one
// with every acknowledged write, serves writes, and stays one when
// restarted without the flag.
func TestMembershipForceNewCluster(t *testing.T) {
	c := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lead := c.leader()
	for i := range 50 {
		_, err := c.clients[(lead+i)%3].Put(ctx, fmt.Sprintf("k%02d", i), "v")
		require.NoError(t, err)
	}
	survivor := (lead + 1) % 3
	// The survivor has applied everything: a linearizable read through it.
	_, err := c.clients[survivor].Get(ctx, "k00")
	require.NoError(t, err)
	for i := range 3 {
		c.stop(i)
	}
	set := c.sets[survivor]
	c.sets[survivor] = func(cfg *Config) {
		set(cfg)
		cfg.ForceNewCluster = true
	}
	c.restart(survivor)
	c.sets[survivor] = set

	cl := c.clients[survivor]
	resp, err := cl.Get(ctx, "k", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Equal(t, int64(50), resp.Count, "every acknowledged write")
	ids, _ := memberIDs(t, cl)
	require.Equal(t, []uint64{c.servers[survivor].m.ID()}, ids)
	_, err = cl.Put(ctx, "after", "1")
	require.NoError(t, err)

	c.stop(survivor)
	c.restart(survivor)
	cl = c.clients[survivor]
	_, err = cl.Put(ctx, "after-restart", "1")
	require.NoError(t, err)
	ids, _ = memberIDs(t, cl)
	require.Len(t, ids, 1)
	resp, err = cl.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	require.Equal(t, int64(52), resp.Count)
}

// TestMembershipChurnUnderLoad: while four clients write, members are
// added (as learners), promoted and removed (the oldest first, the leader
// among them) round after round; every acknowledged write is on every
// member at the end, and HashKV agrees. (Strict checks off: the rounds do
// not wait out their 5 s of connection each.)
func TestMembershipChurnUnderLoad(t *testing.T) {
	c := startClusterWith(t, 3, "http", func(cfg *Config) { cfg.NoStrictReconfigCheck = true })
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c.leader()

	var mu sync.Mutex
	live := slices.Clone(c.clients)
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				cl := live[(w+n)%len(live)]
				mu.Unlock()
				key := fmt.Sprintf("w%d-%05d", w, n)
				wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := cl.Put(wctx, key, "v")
				wcancel()
				if err == nil {
					mu.Lock()
					acked[key] = true
					mu.Unlock()
				}
			}
		}()
	}

	oldest := 0
	for round := range 3 {
		i := c.join(fmt.Sprintf("churn%d", round), true)
		id := c.servers[i].m.ID()
		var err error
		require.Eventually(t, func() bool {
			_, err = c.clients[c.leader()].MemberPromote(ctx, id)
			return err == nil || !errors.Is(err, rpctypes.ErrMemberLearnerNotReady)
		}, 30*time.Second, 50*time.Millisecond)
		require.NoError(t, err)
		// (It answers as a voter once it has applied its promotion too.)
		require.Eventually(t, func() bool { return !c.servers[i].m.IsLearner() }, 10*time.Second, 10*time.Millisecond)
		mu.Lock()
		live = append(live, c.clients[i])
		mu.Unlock()

		gone := oldest
		oldest++
		via := c.leader()
		if via == gone {
			via = i
		}
		_, err = c.clients[via].MemberRemove(ctx, c.servers[gone].m.ID())
		require.NoError(t, err, "round %d", round)
		mu.Lock()
		live = slices.DeleteFunc(live, func(cl *clientv3.Client) bool { return cl == c.clients[gone] })
		mu.Unlock()
		c.waitRemoved(ctx, gone)
	}
	close(stop)
	wg.Wait()
	require.NotEmpty(t, acked)

	for i, cl := range c.clients {
		if c.down[i] {
			continue
		}
		resp, err := cl.Get(ctx, "w", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		require.NoError(t, err)
		have := map[string]bool{}
		for _, kv := range resp.Kvs {
			have[string(kv.Key)] = true
		}
		for k := range acked {
			require.True(t, have[k], "member %d lacks acknowledged write %s", i+1, k)
		}
		ids, learners := memberIDs(t, cl)
		require.Len(t, ids, 3)
		require.Empty(t, learners)
	}
	t.Logf("%d writes acknowledged across 3 rounds of churn", len(acked))
}

// TestMembershipLastVoter: the only voter cannot remove itself, with the
// strict check (not enough started members) or without it (raft refuses a
// configuration with no voter: the same answer); the member goes on.
func TestMembershipLastVoter(t *testing.T) {
	for _, strict := range []bool{true, false} {
		t.Run(fmt.Sprint("strict=", strict), func(t *testing.T) {
			c := startClusterWith(t, 1, "http", func(cfg *Config) { cfg.NoStrictReconfigCheck = !strict })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c.leader()
			_, err := c.clients[0].MemberRemove(ctx, c.servers[0].m.ID())
			require.ErrorContains(t, err, "etcdserver: re-configuration failed due to not enough started members")
			_, err = c.clients[0].Put(ctx, "k", "v")
			require.NoError(t, err)
		})
	}
}

// TestMembershipLearnerAutoPromote: with --learner-auto-promote, a learner
// that has caught up becomes a voter with no one asking.
func TestMembershipLearnerAutoPromote(t *testing.T) {
	c := startClusterWith(t, 1, "http", func(cfg *Config) { cfg.LearnerAutoPromote = true })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.clients[0].Put(ctx, "k", "v")
	require.NoError(t, err)
	l := c.join("m2", true)
	require.Eventually(t, func() bool {
		_, learners := memberIDs(t, c.clients[0])
		return len(learners) == 0
	}, 20*time.Second, 50*time.Millisecond, "the learner was not promoted")
	require.Eventually(t, func() bool { return !c.servers[l].m.IsLearner() }, 10*time.Second, 10*time.Millisecond)
	_, err = c.clients[l].Put(ctx, "after", "v")
	require.NoError(t, err)
}
