package server

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/testlog"
	"github.com/cairn-kv/cairn/internal/testport"
	"github.com/cairn-kv/cairn/server/member"
	"github.com/cairn-kv/cairn/server/transport"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// testCluster is n members in this process on 127.0.0.1, connected by
// the real transport, each with a client of its own.
type testCluster struct {
	t       *testing.T
	servers []*Server
	clients []*clientv3.Client
	stops   []func()
	faults  *transport.Faults
	// diverged: the test made the members' stores differ on purpose.
	diverged bool
	dirs     []string
	sets     []func(*Config) // each member's configuration, to restart it
	down     map[int]bool    // members stopped by the test
	set      func(*Config)   // what the test changes in every member's configuration (nil: nothing)
	checked  bool            // HashKV compared at the end
}

// startCluster starts n members bootstrapped together with
// --initial-cluster; they stop when the test ends, each checked as a
// single member is (Check, then its data directory whole), after the
// test compared their HashKV.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return startClusterWith(t, n, "http", nil)
}

// startClusterWith is startCluster with peer URLs of scheme and each
// member's configuration changed by set.
func startClusterWith(t *testing.T, n int, scheme string, set func(*Config)) *testCluster {
	t.Helper()
	return startClusterHow(t, n, scheme, set, false)
}

// startClusterTogether is startClusterWith with the members started all
// at once, as a new cluster's are when its machines boot together.
func startClusterTogether(t *testing.T, n int, set func(*Config)) *testCluster {
	t.Helper()
	return startClusterHow(t, n, "http", set, true)
}

func startClusterHow(t *testing.T, n int, scheme string, set func(*Config), together bool) *testCluster {
	t.Helper()
	c := &testCluster{t: t, faults: &transport.Faults{}, down: map[int]bool{}, set: set}
	ports := testport.Free(t, 2*n)
	clientPorts, ports := ports[n:], ports[:n]
	var initial []member.InitialMember
	for i, p := range ports {
		initial = append(initial, member.InitialMember{Name: fmt.Sprintf("m%d", i+1), PeerURLs: []string{fmt.Sprintf("%s://127.0.0.1:%d", scheme, p)}})
	}
	dir := t.TempDir()
	for i := range n {
		c.dirs = append(c.dirs, filepath.Join(dir, initial[i].Name))
		c.sets = append(c.sets, func(cfg *Config) {
			cfg.Name = initial[i].Name
			cfg.InitialCluster = initial
			cfg.InitialAdvertisePeerURLs = initial[i].PeerURLs
			cfg.ListenPeerURLs = initial[i].PeerURLs
			cfg.InitialClusterToken = "test-cluster"
			cfg.ListenClientURLs = []string{fmt.Sprintf("http://127.0.0.1:%d", clientPorts[i])}
			cfg.AdvertiseClientURLs = cfg.ListenClientURLs
			cfg.Faults = c.faults
			if set != nil {
				set(cfg)
			}
		})
	}
	c.servers, c.clients, c.stops = make([]*Server, n), make([]*clientv3.Client, n), make([]func(), n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		if !together {
			s, cl, stop := startMemberWith(t, c.dirs[i], c.sets[i])
			c.servers[i], c.clients[i], c.stops[i] = s, cl, stop
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.servers[i], c.clients[i], errs[i] = openMember(c.dirs[i], c.sets[i])
		}()
	}
	wg.Wait()
	if together {
		for i := range n {
			if errs[i] == nil {
				c.stops[i] = memberCleanup(t, c.dirs[i], c.servers[i], c.clients[i])
			}
		}
		for _, err := range errs {
			require.NoError(t, err)
		}
	}
	t.Cleanup(c.checkHashKV) // runs before the members stop
	return c
}

// stop stops member i (its data directory stays).
func (c *testCluster) stop(i int) {
	c.down[i] = true
	c.stops[i]()
}

// restart starts member i again over its data directory.
func (c *testCluster) restart(i int) {
	c.t.Helper()
	c.servers[i], c.clients[i], c.stops[i] = startMemberWith(c.t, c.dirs[i], c.sets[i])
	delete(c.down, i)
	c.t.Cleanup(c.checkHashKV) // before this member's cleanup stops it
}

// isolate cuts member i off from every other member, both ways, and
// returns the members' ids.
func (c *testCluster) isolate(i int) []uint64 {
	ids := c.ids()
	var rest []uint64
	for j, id := range ids {
		if j != i {
			rest = append(rest, id)
		}
	}
	c.faults.Partition([]uint64{ids[i]}, rest)
	return ids
}

// ids returns the members' ids, by index.
func (c *testCluster) ids() []uint64 {
	var ids []uint64
	for _, s := range c.servers {
		ids = append(ids, s.m.ID())
	}
	return ids
}

// leader waits until every running member knows the same leader, and
// returns its index (a bound on the wait, not a timing assertion).
func (c *testCluster) leader() int {
	c.t.Helper()
	lead := -1
	ok := eventually(func() bool {
		ids := map[uint64]bool{}
		for i, s := range c.servers {
			if !c.down[i] {
				ids[s.m.Lead()] = true
			}
		}
		if len(ids) != 1 || ids[0] {
			return false
		}
		for i, s := range c.servers {
			if !c.down[i] && s.m.Lead() == s.m.ID() {
				lead = i
			}
		}
		return lead >= 0
	})
	require.True(c.t, ok, "the members do not agree on a leader")
	return lead
}

// checkHashKV fails the test if the members' HashKV differ (unless the
// test made them differ on purpose).
func (c *testCluster) checkHashKV() {
	if c.diverged || c.checked {
		return
	}
	c.checked = true
	if err := c.compareHashKV(); err != nil {
		c.t.Error(err)
	}
}

// compareHashKV compares the members' HashKV at one revision, once each
// has applied everything the leader committed.
func (c *testCluster) compareHashKV() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A linearizable read on each makes it apply what was committed.
	var rev int64
	for i, cl := range c.clients {
		if c.down[i] {
			continue
		}
		resp, err := cl.Get(ctx, "hashkv-probe")
		if err != nil {
			return fmt.Errorf("member %d: %w", i+1, err)
		}
		rev = max(rev, resp.Header.Revision)
	}
	var hashes []uint32
	for i, cl := range c.clients {
		if c.down[i] {
			continue
		}
		resp, err := cl.HashKV(ctx, c.servers[i].ClientURLs()[0], rev)
		if err != nil {
			return fmt.Errorf("member %d HashKV: %w", i+1, err)
		}
		hashes = append(hashes, resp.Hash)
	}
	for i := range hashes {
		if hashes[i] != hashes[0] {
			return fmt.Errorf("HashKV at revision %d differs: %x", rev, hashes)
		}
	}
	return nil
}

// TestHashKVCheckCatchesDivergence: a write applied to one member's store
// behind raft's back makes compareHashKV fail (so the check every cluster
// test ends with can fail).
func TestHashKVCheckCatchesDivergence(t *testing.T) {
	c := startCluster(t, 3)
	c.leader()
	_, err := c.clients[0].Put(ctxT(t), "k", "v")
	require.NoError(t, err)
	require.NoError(t, c.compareHashKV())
	c.diverged = true
	e := c.servers[1].m.Engine()
	require.NoError(t, c.servers[1].m.OnApplier(func() error {
		_, _, err := e.Apply(c.servers[1].m.AppliedIndex()+1, &engine.TxnRequest{Success: []engine.Op{{Type: engine.OpPut, Key: []byte("k"), Value: []byte("other")}}})
		return err
	}))
	require.Error(t, c.compareHashKV())
}

// TestClusterReplicates: three and five members elect one leader (each
// reports it in Status), every member takes writes (a follower's go
// through the leader) and serves linearizable reads of them, MemberList
// shows every member's name, peer and client URLs, and HashKV agrees.
func TestClusterReplicates(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := startCluster(t, n)
			lead := c.leader()
			ctx := ctxT(t)
			for i, cl := range c.clients {
				_, err := cl.Put(ctx, fmt.Sprintf("k%d", i), fmt.Sprint(i))
				require.NoError(t, err, "put through member %d", i+1)
			}
			for i, cl := range c.clients {
				for j := range c.clients {
					resp, err := cl.Get(ctx, fmt.Sprintf("k%d", j))
					require.NoError(t, err)
					require.Len(t, resp.Kvs, 1, "member %d reading k%d", i+1, j)
					require.Equal(t, fmt.Sprint(j), string(resp.Kvs[0].Value))
				}
			}
			leaders := 0
			for i, cl := range c.clients {
				st, err := cl.Status(ctx, c.servers[i].ClientURLs()[0])
				require.NoError(t, err)
				require.Equal(t, c.servers[lead].m.ID(), st.Leader, "member %d's leader", i+1)
				require.Equal(t, c.servers[i].m.ID(), st.Header.MemberId)
				if st.Leader == st.Header.MemberId {
					leaders++
				}
			}
			require.Equal(t, 1, leaders)
			require.True(t, eventually(func() bool {
				resp, err := c.clients[(lead+1)%n].MemberList(ctx)
				if err != nil || len(resp.Members) != n {
					return false
				}
				for _, m := range resp.Members {
					if len(m.ClientURLs) == 0 {
						return false
					}
				}
				return true
			}), "MemberList with every member's client URLs")
			resp, err := c.clients[(lead+1)%n].MemberList(ctx)
			require.NoError(t, err)
			var names []string
			for _, m := range resp.Members {
				names = append(names, m.Name)
				i := slices.IndexFunc(c.servers, func(s *Server) bool { return s.m.ID() == m.ID })
				require.GreaterOrEqual(t, i, 0)
				require.Equal(t, c.servers[i].ClientURLs(), m.ClientURLs)
				require.Equal(t, c.servers[i].cfg.InitialAdvertisePeerURLs, m.PeerURLs)
			}
			slices.Sort(names)
			require.Len(t, names, n)
		})
	}
}

// TestClusterMinorityPartition, with three and five members: a leader cut
// off with no other member cannot commit: once it has stepped down, a
// write to it and a linearizable read from it fail with etcd's "no
// leader" (a raw client, so that no retry hides the error), while the
// majority elects a leader and goes on; healed, the old leader converges
// (HashKV at the end).
func TestClusterMinorityPartition(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := startCluster(t, n)
			old := c.leader()
			ctx := ctxT(t)
			_, err := c.clients[old].Put(ctx, "before", "v")
			require.NoError(t, err)

			ids := c.isolate(old)
			require.True(t, eventually(func() bool { return c.servers[old].m.Lead() == 0 }), "the cut-off leader did not step down")
			kv := pb.NewKVClient(rawConn(t, c.servers[old].ClientURLs()[0]))
			_, err = kv.Put(ctx, &pb.PutRequest{Key: []byte("minority"), Value: []byte("v")})
			require.True(t, sameStatus(err, rpctypes.ErrGRPCNoLeader), "put on the minority: %v", err)
			_, err = kv.Range(ctx, &pb.RangeRequest{Key: []byte("before")})
			require.True(t, sameStatus(err, rpctypes.ErrGRPCNoLeader), "linearizable read on the minority: %v", err)
			// A serializable read is served from the member's own state.
			resp, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("before"), Serializable: true})
			require.NoError(t, err)
			require.Len(t, resp.Kvs, 1)

			other := (old + 1) % n
			require.True(t, eventually(func() bool {
				l := c.servers[other].m.Lead()
				return l != 0 && l != ids[old]
			}), "the majority did not elect a leader")
			for i := range 20 {
				_, err := c.clients[other].Put(ctx, fmt.Sprintf("majority%d", i), "v")
				require.NoError(t, err)
			}

			c.faults.Heal()
			c.leader()
			got, err := c.clients[old].Get(ctx, "majority19")
			require.NoError(t, err)
			require.Len(t, got.Kvs, 1, "the old leader after healing")
			got, err = c.clients[other].Get(ctx, "minority")
			require.NoError(t, err)
			require.Empty(t, got.Kvs, "a write refused on the minority was applied")
		})
	}
}

// TestClusterLeaderFailover, with three and five members: under a write
// load through every member, the leader stops; the others elect a new one
// and the load goes on through them; every acknowledged write is then on
// every running member, and on the old leader once it is restarted.
func TestClusterLeaderFailover(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := startCluster(t, n)
			old := c.leader()
			var endpoints []string
			for _, s := range c.servers {
				endpoints = append(endpoints, s.ClientURLs()...)
			}
			cl, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
			require.NoError(t, err)
			defer cl.Close()

			var mu sync.Mutex
			acked := map[string]bool{}
			stopLoad := make(chan struct{})
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 100000; i++ {
						select {
						case <-stopLoad:
							return
						default:
						}
						k := fmt.Sprintf("w%d-%d", w, i)
						ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
						_, err := cl.Put(ctx, k, "v")
						cancel()
						if err == nil {
							mu.Lock()
							acked[k] = true
							mu.Unlock()
						}
					}
				}()
			}
			count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
			require.True(t, eventually(func() bool { return count() >= 200 }))
			c.stop(old)
			before := count()
			newLead := c.leader()
			require.NotEqual(t, old, newLead)
			require.True(t, eventually(func() bool { return count() >= before+200 }), "writes did not go on after the leader stopped")
			close(stopLoad)
			wg.Wait()

			c.restart(old)
			c.leader()
			ctx := ctxT(t)
			for i, s := range c.servers {
				resp, err := c.clients[i].Get(ctx, "w", clientv3.WithPrefix(), clientv3.WithKeysOnly())
				require.NoError(t, err)
				have := map[string]bool{}
				for _, kv := range resp.Kvs {
					have[string(kv.Key)] = true
				}
				mu.Lock()
				for k := range acked {
					require.True(t, have[k], "member %d (%x) lacks acknowledged write %s", i+1, s.m.ID(), k)
				}
				mu.Unlock()
			}
		})
	}
}

// TestClusterMoveLeader: MoveLeader (etcdctl move-leader) on the leader
// hands leadership to the follower named and returns once it leads; on a
// follower it is refused with "not leader", and to an unknown member with
// "bad leader transferee".
func TestClusterMoveLeader(t *testing.T) {
	c := startCluster(t, 3)
	lead := c.leader()
	target := (lead + 1) % 3
	ctx := ctxT(t)
	term := c.servers[lead].m.Term()
	_, err := c.clients[lead].MoveLeader(ctx, c.servers[target].m.ID())
	require.NoError(t, err)
	// The old leader answered once it followed the target, in a later
	// term. (Under a loaded machine the target may lose leadership again
	// soon after, to an election of its own: only then is another leader
	// allowed, in a later term still.)
	transferTerm := c.servers[lead].m.Term()
	require.Greater(t, transferTerm, term)
	if now := c.leader(); now != target {
		require.Greater(t, c.servers[now].m.Term(), transferTerm, "member %d leads in the transfer's term", now+1)
	}
	target = c.leader()
	follower := (target + 1) % 3

	mc := pb.NewMaintenanceClient(rawConn(t, c.servers[follower].ClientURLs()[0]))
	_, err = mc.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: c.servers[follower].m.ID()})
	require.True(t, sameStatus(err, rpctypes.ErrGRPCNotLeader), "move-leader on a follower: %v", err)
	mc = pb.NewMaintenanceClient(rawConn(t, c.servers[target].ClientURLs()[0]))
	_, err = mc.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: 12345})
	require.True(t, sameStatus(err, rpctypes.ErrGRPCBadLeaderTransferee), "move-leader to an unknown member: %v", err)
	_, err = c.clients[0].Put(ctx, "after", "v")
	require.NoError(t, err)
}

// TestClusterLeaseKeepAliveOnFollower: a lease granted and kept alive
// through a follower lives past its TTL (the follower forwards each
// keep-alive to the leader), and its key with it; the lease's time to
// live, asked of the leader, is not past; asked of the follower, it is
// the leader's count.
func TestClusterLeaseKeepAliveOnFollower(t *testing.T) {
	c := startCluster(t, 3)
	lead := c.leader()
	f := (lead + 1) % 3
	ctx := ctxT(t)
	cl := c.clients[f]
	grant, err := cl.Grant(ctx, 2)
	require.NoError(t, err)
	_, err = cl.Put(ctx, "leased", "v", clientv3.WithLease(grant.ID))
	require.NoError(t, err)
	// Keep-alives through the follower for three TTLs (a bound on the
	// loop; the assertion is that the lease is still there after).
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		resp, err := cl.KeepAliveOnce(ctx, grant.ID)
		require.NoError(t, err)
		require.Positive(t, resp.TTL)
	}
	got, err := c.clients[lead].Get(ctx, "leased")
	require.NoError(t, err)
	require.Len(t, got.Kvs, 1, "the key of a lease kept alive through a follower")
	ttl, err := c.clients[lead].TimeToLive(ctx, grant.ID)
	require.NoError(t, err)
	require.Positive(t, ttl.TTL)

	// A follower answers time-to-live from the leader's lessor, which
	// counts down (its own would say the granted 30 s).
	long, err := cl.Grant(ctx, 30)
	require.NoError(t, err)
	_, err = cl.Put(ctx, "long", "v", clientv3.WithLease(long.ID))
	require.NoError(t, err)
	ttl, err = cl.TimeToLive(ctx, long.ID, clientv3.WithAttachedKeys())
	require.NoError(t, err)
	require.Less(t, ttl.TTL, int64(30))
	require.Positive(t, ttl.TTL)
	require.Equal(t, int64(30), ttl.GrantedTTL)
	require.Equal(t, [][]byte{[]byte("long")}, ttl.Keys)
	require.Equal(t, c.servers[f].m.ID(), ttl.ResponseHeader.MemberId)
}

// TestClusterRequireLeaderStreamEnds: a watch whose client requires a
// leader (clientv3.WithRequireLeader's metadata), open on a follower, is
// ended with etcd's "no leader" once the follower, cut off from the
// others, has known no leader for three election timeouts; a watch
// without the metadata stays open.
func TestClusterRequireLeaderStreamEnds(t *testing.T) {
	c := startCluster(t, 3)
	lead := c.leader()
	f := (lead + 1) % 3
	ctx := ctxT(t)
	wc := pb.NewWatchClient(rawConn(t, c.servers[f].ClientURLs()[0]))
	open := func(ctx context.Context) pb.Watch_WatchClient {
		w, err := wc.Watch(ctx)
		require.NoError(t, err)
		require.NoError(t, w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k")}}}))
		resp, err := w.Recv()
		require.NoError(t, err)
		require.True(t, resp.Created)
		return w
	}
	required := open(metadata.AppendToOutgoingContext(ctx, rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader))
	plain := open(ctx)

	c.isolate(f)
	_, err := required.Recv()
	require.True(t, sameStatus(err, rpctypes.ErrGRPCNoLeader), "the watch requiring a leader ended with %v", err)
	c.faults.Heal()
	c.leader()
	_, err = c.clients[lead].Put(ctx, "k", "v")
	require.NoError(t, err)
	resp, err := plain.Recv()
	require.NoError(t, err, "the plain watch")
	require.Len(t, resp.Events, 1)
}

// TestClusterOtherClusterRefused: a member bootstrapped as another
// cluster (its own token) that names a running member's peer URL is
// refused by it, with a log line on both sides; it never has a leader,
// and the cluster goes on serving.
func TestClusterOtherClusterRefused(t *testing.T) {
	clusterLog := &testlog.Buffer{}
	c := startClusterWith(t, 3, "http", func(cfg *Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(clusterLog, nil))
	})
	c.leader()
	target := c.servers[0].m.Config().InitialAdvertisePeerURLs[0]
	own := fmt.Sprintf("http://127.0.0.1:%d", testport.Free(t, 1)[0])
	intruderLog := &testlog.Buffer{}
	intruder, _, _ := startMemberWith(t, t.TempDir(), func(cfg *Config) {
		cfg.Name = "intruder"
		cfg.InitialCluster = []member.InitialMember{{Name: "m1", PeerURLs: []string{target}}, {Name: "intruder", PeerURLs: []string{own}}}
		cfg.InitialAdvertisePeerURLs, cfg.ListenPeerURLs = []string{own}, []string{own}
		cfg.InitialClusterToken = "another-cluster"
		cfg.Logger = slog.New(slog.NewTextHandler(intruderLog, nil))
	})
	require.NotEqual(t, c.servers[0].m.ClusterID(), intruder.m.ClusterID())
	require.True(t, eventually(func() bool {
		return strings.Contains(clusterLog.String(), "refused a peer of another cluster") &&
			strings.Contains(intruderLog.String(), "a peer belongs to another cluster")
	}), "cluster's log:\n%s\nintruder's log:\n%s", clusterLog, intruderLog)
	require.Zero(t, intruder.m.Lead())
	_, err := c.clients[0].Put(ctxT(t), "still", "serving")
	require.NoError(t, err)
}

// TestClusterLeaderChangeKeepsLapsingTTL: a lease whose client stopped
// renewing it keeps counting down across a change of leader: the new
// leader counts from the last checkpoint of its remaining TTL (at most a
// checkpoint interval old), plus the election grace, not from the full
// TTL; a lease kept alive goes on.
func TestClusterLeaderChangeKeepsLapsingTTL(t *testing.T) {
	c := startCluster(t, 3)
	lead := c.leader()
	ctx := ctxT(t)
	const ttl = 9
	lapsing, err := c.clients[lead].Grant(ctx, ttl)
	require.NoError(t, err)
	_, err = c.clients[lead].Put(ctx, "lapsing", "v", clientv3.WithLease(lapsing.ID))
	require.NoError(t, err)
	// Wait until the lease is past two thirds of its TTL and a checkpoint
	// interval more (a bound on the loop; the assertion is below).
	var left int64
	for end := time.Now().Add(time.Minute); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		r, err := c.clients[lead].TimeToLive(ctx, lapsing.ID)
		require.NoError(t, err)
		if left = r.TTL; left <= ttl/3-1 {
			break
		}
	}
	require.LessOrEqual(t, left, int64(ttl/3-1))
	to := c.servers[(lead+1)%3].m.ID()
	_, err = c.clients[lead].MoveLeader(ctx, to)
	require.NoError(t, err)
	require.Equal(t, (lead+1)%3, c.leader())
	r, err := c.clients[(lead+1)%3].TimeToLive(ctx, lapsing.ID)
	require.NoError(t, err)
	// left, plus a second of checkpoint age and the election grace
	// (100 ms here), plus a second of rounding: far below the full TTL.
	require.LessOrEqual(t, r.TTL, left+2, "the new leader restarted the lease's TTL (%d s left before, %d after)", left, r.TTL)
	require.Positive(t, r.TTL)
}
