package raft

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestIsolatedLeaderReplacedInOneTerm: with PreVote and CheckQuorum, a
// leader cut off both ways is replaced by the two others in the next
// term (one election), and the isolated node, however long it stays
// alone, raises no term: pre-votes it cannot win never become votes.
func TestIsolatedLeaderReplacedInOneTerm(t *testing.T) {
	e := &interactionEnv{t: t, nodes: map[uint64]*simNode{}, isolated: map[uint64]bool{}}
	e.run("add-nodes 3 prevote checkquorum")
	e.run("campaign 1")
	e.run("stabilize")
	require.Equal(t, StateLeader, e.nodes[1].r.Status().State)
	e.run("isolate 1")
	tick := func() {
		for _, id := range e.ids {
			e.nodes[id].r.Tick()
		}
		e.run("stabilize")
	}
	lead := uint64(0)
	for i := 0; i < 200 && lead == 0; i++ {
		tick()
		for _, id := range []uint64{2, 3} {
			if e.nodes[id].r.Status().State == StateLeader {
				lead = id
			}
		}
	}
	require.NotZero(t, lead, "no new leader within 200 ticks")
	require.Equal(t, uint64(2), e.nodes[lead].r.Status().Term, "the new leader's term")
	for range 500 {
		tick()
	}
	require.Equal(t, uint64(1), e.nodes[1].r.Status().Term, "the isolated node's term")
	require.Equal(t, uint64(2), e.nodes[lead].r.Status().Term, "the leader's term, the isolated node still away")
}
