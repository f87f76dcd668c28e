package raft

import (
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestConfChangeContextRoundTrips(t *testing.T) {
	for _, cc := range []ConfChange{
		{Type: ConfAddVoter, NodeID: 7},
		{Type: ConfUpdate, NodeID: 1 << 60, Context: []byte(`{"peerURLs":["http://a"]}`)},
	} {
		got, err := DecodeConfChange(cc.Encode())
		require.NoError(t, err)
		require.Equal(t, cc, got)
	}
	for _, bad := range [][]byte{nil, {1, 2, 3}, append([]byte{0}, make([]byte, 8)...), append([]byte{byte(ConfUpdate) + 1}, make([]byte, 8)...)} {
		_, err := DecodeConfChange(bad)
		require.Error(t, err, "%x", bad)
	}
}

// ledBy1 is three nodes that have elected node 1.
func ledBy1(t *testing.T) *interactionEnv {
	e := &interactionEnv{t: t, nodes: map[uint64]*simNode{}, isolated: map[uint64]bool{}}
	e.run("add-nodes 3")
	e.run("campaign 1")
	e.run("stabilize")
	return e
}

// TestCheckConfChange: the leader says beforehand what it would refuse
// (a proposal it refuses goes in as an empty entry, which no one waiting
// for it would see).
func TestCheckConfChange(t *testing.T) {
	e := ledBy1(t)
	e.run("add-nodes 1 join")
	lead, follower := e.node("1"), e.node("2")

	require.ErrorIs(t, follower.CheckConfChange(ConfChange{Type: ConfAddLearner, NodeID: 4}), ErrNotLeader)
	require.NoError(t, lead.CheckConfChange(ConfChange{Type: ConfAddLearner, NodeID: 4}))
	require.Error(t, lead.CheckConfChange(ConfChange{Type: ConfAddVoter, NodeID: 2}), "already a voter")
	require.Error(t, lead.CheckConfChange(ConfChange{Type: ConfRemove, NodeID: 9}), "not a member")
	require.Error(t, lead.CheckConfChange(ConfChange{Type: ConfUpdate, NodeID: 9}), "not a member")
	require.NoError(t, lead.CheckConfChange(ConfChange{Type: ConfUpdate, NodeID: 3}))

	// One change at a time: the next is refused until the first commits.
	require.NoError(t, lead.ProposeConfChange(ConfChange{Type: ConfAddLearner, NodeID: 4, Context: []byte("ctx")}))
	require.ErrorIs(t, lead.CheckConfChange(ConfChange{Type: ConfUpdate, NodeID: 3}), ErrConfChangePending)
	voters, learners := lead.Config()
	require.Equal(t, []uint64{1, 2, 3}, voters)
	require.Equal(t, []uint64{4}, learners, "a change counts from when it is in the log")
	require.Equal(t, lead.Status().LastIndex, lead.LastConfIndex())
	e.run("stabilize")
	require.NoError(t, lead.CheckConfChange(ConfChange{Type: ConfUpdate, NodeID: 3}))
	cc, err := DecodeConfChange(lead.log.at(lead.LastConfIndex()).Data)
	require.NoError(t, err)
	require.Equal(t, []byte("ctx"), cc.Context)

	// An update changes no configuration.
	require.NoError(t, lead.ProposeConfChange(ConfChange{Type: ConfUpdate, NodeID: 3}))
	e.run("stabilize")
	voters, learners = lead.Config()
	require.Equal(t, []uint64{1, 2, 3}, voters)
	require.Equal(t, []uint64{4}, learners)
}

// TestJoinGetsSnapshot: a node started to join (no configuration, no
// log) asks the leader's first append for a snapshot, and learns the
// configuration from it, whatever the leader's log still holds.
func TestJoinGetsSnapshot(t *testing.T) {
	e := ledBy1(t)
	e.run("propose 1 a")
	e.run("stabilize")
	lead := e.node("1")

	_, err := New(Config{ID: 4, Join: true, Peers: []uint64{1}, ElectionTick: 10, HeartbeatTick: 1, Rand: rand.New(rand.NewSource(4))})
	require.Error(t, err, "a joining node has no configuration of its own")
	j, err := New(Config{ID: 4, Join: true, ElectionTick: 10, HeartbeatTick: 1, Rand: rand.New(rand.NewSource(4))})
	require.NoError(t, err)
	e.ids = append(e.ids, 4)
	e.nodes[4] = &simNode{id: 4, r: j}
	for range 30 {
		j.Tick() // alone and in no configuration, it never campaigns
	}
	require.Equal(t, StateFollower, j.Status().State)
	require.False(t, j.HasReady() && len(j.Ready().Messages) > 0)

	require.NoError(t, lead.ProposeConfChange(ConfChange{Type: ConfAddLearner, NodeID: 4}))
	out := e.run("stabilize")
	require.Contains(t, out, "1->4 MsgSnap")
	require.NotNil(t, j.Snapshot())
	voters, learners := j.Config()
	require.Equal(t, []uint64{1, 2, 3}, voters)
	require.Equal(t, []uint64{4}, learners)
	require.Equal(t, lead.Status().LastIndex, j.Status().LastIndex)
	require.Equal(t, lead.Committed(), j.Committed())
}

// settleAlone handles r's Readys as a driver would, with every message to
// another node lost; it returns what was committed.
func settleAlone(r *Raft) uint64 {
	for r.HasReady() {
		rd := r.Ready()
		r.Advance(rd)
		for _, msgs := range [][]Message{rd.Messages, rd.MessagesAfterPersist} {
			for _, m := range msgs {
				if m.To == r.id {
					_ = r.Step(m)
				}
			}
		}
	}
	return r.Committed()
}

// TestSingleNodeAddsVoter: a cluster of one commits the addition of a
// second voter by itself (the configuration before the change), so that
// the second can be started from what the first answers; the entries
// after the change wait for the second.
func TestSingleNodeAddsVoter(t *testing.T) {
	r, err := New(Config{ID: 1, Peers: []uint64{1}, ElectionTick: 10, HeartbeatTick: 1, Rand: rand.New(rand.NewSource(1))})
	require.NoError(t, err)
	require.NoError(t, r.Campaign())
	settleAlone(r)
	require.Equal(t, StateLeader, r.Status().State)
	require.NoError(t, r.ProposeConfChange(ConfChange{Type: ConfAddVoter, NodeID: 2}))
	change := r.LastConfIndex()
	require.Equal(t, change, settleAlone(r), "the change commits by the old configuration")
	require.NoError(t, r.Propose([]byte("after")))
	require.Equal(t, change, settleAlone(r), "what follows needs both voters")
	voters, _ := r.Config()
	require.Equal(t, []uint64{1, 2}, voters)
}
