package server

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testlog"
)

// TestClusterPreVote: a member cut off from the others campaigns; with
// pre-vote (--pre-vote, on by default) its campaigns ask first and leave
// its term as it was, so it disturbs no one when it comes back; without,
// each one raises its term.
func TestClusterPreVote(t *testing.T) {
	for _, preVote := range []bool{true, false} {
		t.Run(map[bool]string{true: "pre-vote", false: "no pre-vote"}[preVote], func(t *testing.T) {
			c := startClusterTogether(t, 3, func(cfg *Config) { cfg.NoPreVote = !preVote })
			lead := c.leader()
			f := (lead + 1) % 3
			term := c.servers[f].m.Term()
			c.isolate(f)
			m := c.servers[f].m
			if preVote {
				// Lead and term are published together: once it has lost
				// its leader it is a pre-candidate. Its term is read then
				// (an election among the others just before the cut may
				// have raised it), and its campaigns over the next ten
				// election timeouts must leave it there.
				require.True(t, eventually(func() bool { return m.Lead() == 0 }), "the isolated member does not campaign")
				term = m.Term()
				time.Sleep(10 * c.servers[f].cfg.ElectionTimeout)
				require.Equal(t, term, m.Term(), "a pre-vote campaign raised the term")
			} else {
				require.True(t, eventually(func() bool { return m.Term() > term }), "the isolated member's campaign did not raise its term")
			}
			c.faults.Heal()
			c.leader()
		})
	}
}

// TestInitialElectionTickAdvance: the members of a new cluster, started
// together, advance their election clocks once connected to two peers
// (--initial-election-tick-advance, on by default), and not with the flag
// off. The election timeout is long enough (100 ticks) that no member
// campaigns before the others are up, so with the advance the first
// campaign is an advanced member's. Not every member need log it: one
// that hears of a leader before its second peer connects has no clock to
// advance (the advance is for members with no leader).
func TestInitialElectionTickAdvance(t *testing.T) {
	for _, advance := range []bool{true, false} {
		var logs [3]testlog.Buffer
		c := startClusterTogether(t, 3, func(cfg *Config) {
			cfg.NoInitialElectionTickAdvance = !advance
			cfg.ElectionTimeout = time.Second
			i := int(cfg.Name[1] - '1') // m1, m2, m3
			cfg.Logger = slog.New(slog.NewJSONHandler(&logs[i], nil))
		})
		c.leader()
		advanced := 0
		for i := range logs {
			if strings.Contains(logs[i].String(), `"msg":"initial election tick advance"`) {
				advanced++
			}
		}
		if advance {
			require.Positive(t, advanced, "no member advanced its election clock:\n%s\n%s\n%s", &logs[0], &logs[1], &logs[2])
		} else {
			require.Zero(t, advanced, "a member advanced with the flag off")
		}
	}
}
