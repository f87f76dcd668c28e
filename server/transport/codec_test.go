package transport

import (
	"math/rand"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/cairn-kv/cairn/raft"
)

// randomMessage is a message with every field set at random, entries and
// a snapshot sometimes.
func randomMessage(rng *rand.Rand) raft.Message {
	m := raft.Message{
		Type: raft.MessageType(1 + rng.Intn(17)), From: rng.Uint64(), To: rng.Uint64(), Term: rng.Uint64(),
		LogTerm: rng.Uint64(), Index: rng.Uint64(), Commit: rng.Uint64(), Reject: rng.Intn(2) == 0,
		RejectHint: rng.Uint64(), Context: rng.Uint64(),
	}
	for range rng.Intn(4) * rng.Intn(4) {
		e := raft.Entry{Term: rng.Uint64(), Index: rng.Uint64(), Type: raft.EntryType(rng.Intn(2))}
		if n := rng.Intn(3) * rng.Intn(100); n > 0 {
			e.Data = make([]byte, n)
			rng.Read(e.Data)
		}
		m.Entries = append(m.Entries, e)
	}
	if rng.Intn(5) == 0 {
		s := &raft.SnapshotMeta{Index: rng.Uint64(), Term: rng.Uint64()}
		for range rng.Intn(6) {
			s.Voters = append(s.Voters, rng.Uint64())
		}
		for range rng.Intn(3) {
			s.Learners = append(s.Learners, rng.Uint64())
		}
		m.Snapshot = s
	}
	return m
}

// TestBatchRoundTrip: random batches decode to what was encoded, at the
// size encodedSize says; every proper prefix of one is refused, and so is
// a batch with bytes after it.
func TestBatchRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	for range 300 {
		msgs := make([]raft.Message, rng.Intn(5))
		size := 4
		for i := range msgs {
			msgs[i] = randomMessage(rng)
			size += encodedSize(&msgs[i])
		}
		b := encodeBatch(nil, msgs)
		require.Len(t, b, size)
		got, err := decodeBatch(b)
		require.NoError(t, err)
		require.Equal(t, msgs, got)
		for _, cut := range []int{0, 1, len(b) / 2, len(b) - 1} {
			if cut < len(b) {
				_, err := decodeBatch(b[:cut])
				require.Error(t, err, "a batch cut to %d of %d bytes", cut, len(b))
			}
		}
		_, err = decodeBatch(append(b, 0))
		require.Error(t, err, "a batch with a byte after it")
	}
}

// TestDecodeRefusesHugeCounts: a count that the rest of the frame could
// not hold is refused before anything is allocated for it.
func TestDecodeRefusesHugeCounts(t *testing.T) {
	b := encodeBatch(nil, []raft.Message{{Type: raft.MsgApp, Entries: []raft.Entry{{Index: 1}}}})
	b[4+messageHeaderSize-4] = 0xff // the entry count's high byte
	b[4+messageHeaderSize-1] = 0x7f
	_, err := decodeBatch(b)
	require.Error(t, err)
	_, err = decodeBatch([]byte{0xff, 0xff, 0xff, 0x7f})
	require.Error(t, err)
}

// FuzzDecodeBatch: any bytes decode to an error or to messages that encode
// back to the same bytes; nothing panics.
func FuzzDecodeBatch(f *testing.F) {
	rng := rand.New(rand.NewSource(1))
	for range 8 {
		msgs := []raft.Message{randomMessage(rng), randomMessage(rng)}
		f.Add(encodeBatch(nil, msgs))
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := decodeBatch(b)
		if err != nil {
			return
		}
		require.Equal(t, b, encodeBatch(nil, msgs))
	})
}
