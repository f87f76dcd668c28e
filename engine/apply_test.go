package engine

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// logEntry is one raft entry for the store: a transaction, a compaction, or
// nothing for the store (a leader's empty entry, a membership change).
type logEntry struct {
	txn     *TxnRequest
	compact int64 // > 0: a compaction
}

func (s *Store) applyEntry(index uint64, e logEntry) (*TxnResponse, bool, error) {
	switch {
	case e.txn != nil:
		return s.Apply(index, e.txn)
	case e.compact > 0:
		ok, err := s.ApplyCompact(index, e.compact)
		return nil, ok, err
	}
	ok, err := s.ApplyEmpty(index)
	return nil, ok, err
}

// TestApplyOnceAcrossCrashes applies a random log to a store that commits
// by a random batch policy on a fake clock, crashes at random (losing its
// open batch), restarts and replays the log from a random index at or
// below what it made durable, as raft replays from its own snapshot. Every
// entry must take effect exactly once: replayed entries at or below the
// durable index are skipped, the state after each restart is the state
// after that index, and every response and the final state match a store
// that applied the log once and never crashed.
func TestApplyOnceAcrossCrashes(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	dir := t.TempDir()
	refDB, ref := openStore(t, filepath.Join(dir, "ref"))
	defer func() { _ = ref.Close(); _ = refDB.Close() }()

	// The log, and what the reference made of each entry.
	const n = 1200
	entries := make([]logEntry, n+1)
	resps := make([]*TxnResponse, n+1)
	errs := make([]error, n+1)
	revAfter := make([]int64, n+1)
	key := func() []byte { return []byte(fmt.Sprintf("k%d", rng.Intn(8))) }
	for i := 1; i <= n; i++ {
		var e logEntry
		switch r := rng.Intn(20); {
		case r == 0:
			// Sometimes refused: at or below the compaction, or ahead.
			e.compact = ref.CompactRev() - 1 + rng.Int63n(ref.Rev()-ref.CompactRev()+3)
			if e.compact <= 0 {
				e.compact = 1
			}
		case r < 3:
		default:
			req := &TxnRequest{}
			if rng.Intn(2) == 0 {
				req.Compare = []Compare{{Key: key(), Target: CompareVersion, Result: CompareResult(rng.Intn(4)), Version: int64(rng.Intn(3))}}
			}
			for _, branch := range []*[]Op{&req.Success, &req.Failure} {
				for j := 0; j < 1+rng.Intn(3); j++ {
					switch rng.Intn(4) {
					case 0, 1:
						*branch = append(*branch, Op{Type: OpPut, Key: key(), Value: []byte(fmt.Sprint("v", i)), IgnoreLease: rng.Intn(8) == 0})
					case 2:
						*branch = append(*branch, Op{Type: OpDelete, Key: key()})
					case 3:
						*branch = append(*branch, Op{Type: OpRange, Key: []byte("k"), End: []byte("\x00")})
					}
				}
			}
			e.txn = req
		}
		entries[i] = e
		var ok bool
		resps[i], ok, errs[i] = ref.applyEntry(uint64(i), e)
		finishCompaction(t, ref)
		if !ok || (errs[i] != nil && !refusal(errs[i])) {
			t.Fatalf("reference, entry %d: applied %v, %v", i, ok, errs[i])
		}
		revAfter[i] = ref.Rev()
	}

	path := filepath.Join(dir, "member")
	db, s := openStore(t, path)
	defer func() { _ = s.Close(); _ = db.Close() }()
	policy := func() {
		s.SetBatchPolicy(BatchPolicy{Interval: time.Duration(1+rng.Intn(50)) * time.Millisecond, Limit: 1 + rng.Intn(40)})
	}
	policy()
	now := time.Unix(0, 0)
	var crashes, replayed, commits int
	for next := 1; next <= n; {
		for run := 1 + rng.Intn(150); run > 0 && next <= n; run-- {
			resp, ok, err := s.applyEntry(uint64(next), entries[next])
			if !ok {
				t.Fatalf("entry %d above the applied index %d was skipped (%v)", next, s.AppliedIndex(), err)
			}
			if fmt.Sprint(err) != fmt.Sprint(errs[next]) {
				t.Fatalf("entry %d: %v, the reference %v", next, err, errs[next])
			}
			if resp != nil && resps[next] != nil {
				if d := sameResponse(resp, resps[next]); d != "" || resp.Rev != resps[next].Rev {
					t.Fatalf("entry %d: %s (revision %d, want %d)", next, d, resp.Rev, resps[next].Rev)
				}
			}
			if _, err := s.CompactStep(1 + rng.Intn(10)); err != nil {
				t.Fatal(err)
			}
			now = now.Add(time.Duration(rng.Intn(5)) * time.Millisecond)
			if c, err := s.CommitIfDue(now); err != nil {
				t.Fatal(err)
			} else if c {
				commits++
			}
			next++
		}
		if next > n {
			break
		}
		// Crash: the open batch is lost.
		s.batch.Rollback()
		_ = db.Close()
		db, s = openStore(t, path)
		policy()
		crashes++
		durable := s.AppliedIndex()
		if want := revAfter[durable]; durable > 0 && s.Rev() != want {
			t.Fatalf("after a crash durable to entry %d: revision %d, want %d", durable, s.Rev(), want)
		}
		if err := s.Check(); err != nil {
			t.Fatal(err)
		}
		// Raft replays from its snapshot, at or before the store's commit.
		next = 1 + rng.Intn(int(durable)+1)
		for ; next <= int(durable); next++ {
			if _, ok, err := s.applyEntry(uint64(next), entries[next]); ok || err != nil {
				t.Fatalf("replayed entry %d at or below the durable index %d applied again (%v)", next, durable, err)
			}
			replayed++
		}
	}
	finishCompaction(t, s)
	if s.Rev() != ref.Rev() || s.CompactRev() != ref.CompactRev() || s.AppliedIndex() != n {
		t.Fatalf("end: revision %d compacted %d applied %d, want %d, %d, %d", s.Rev(), s.CompactRev(), s.AppliedIndex(), ref.Rev(), ref.CompactRev(), n)
	}
	got, err := s.Range([]byte{0}, []byte{0}, RangeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := ref.Range([]byte{0}, []byte{0}, RangeOptions{})
	if err != nil || !sameKVs(got.KVs, want.KVs) {
		t.Fatalf("end: the state differs from the reference (%v)", err)
	}
	hs, err1 := s.HashKV(0)
	hr, err2 := ref.HashKV(0)
	if err1 != nil || err2 != nil || hs != hr {
		t.Fatalf("end: hash %+v, the reference %+v (%v, %v)", hs, hr, err1, err2)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d entries, %d crashes, %d replayed entries skipped, %d timed or full commits; revision %d compacted %d", n, crashes, replayed, commits, s.Rev(), s.CompactRev())
	if crashes == 0 || replayed == 0 || commits == 0 || ref.CompactRev() == 0 {
		t.Fatal("the run did not crash, replay, commit and compact")
	}
}
