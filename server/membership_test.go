package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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

	select {
	case <-c.servers[gone].Failed():
	case <-ctx.Done():
		t.Fatal("the removed member did not stop")
	}
	require.ErrorIs(t, c.servers[gone].Err(), member.ErrMemberRemoved)
	c.stop(gone)
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
