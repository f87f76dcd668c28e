package engine

import (
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/cairn-kv/cairn/pagefile"
)

func hasPut(req *TxnRequest) bool {
	for _, op := range req.Success {
		if op.Type == OpPut {
			return true
		}
	}
	return false
}

// TestHashKVAgreesAcrossMembers feeds three stores one random history and
// hashes them at random revisions: a commits after every transaction and
// compaction, b rarely commits (so it hashes from its open batch's buffer
// and a page file that still holds what compaction dropped) and restarts,
// and c has one value changed at a known revision. a and b must agree at
// every revision; c must agree below its change and differ from it on
// while the compaction is below it;
// the hash must change with every revision that wrote.
func TestHashKVAgreesAcrossMembers(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	dir := t.TempDir()
	type member struct {
		path string
		db   *pagefile.DB
		s    *Store
	}
	open := func(name string) *member {
		m := &member{path: filepath.Join(dir, name)}
		m.db, m.s = openStore(t, m.path)
		grantLeases(t, m.s, 1)
		return m
	}
	a, b, c := open("a"), open("b"), open("c")
	defer func() {
		for _, m := range []*member{a, b, c} {
			_ = m.s.Close()
			_ = m.db.Close()
		}
	}()
	const steps = 600
	changeAt := int64(150 + rng.Intn(300)) // c's write at this revision differs
	rev, compacted := int64(1), int64(0)   // a fresh store is at revision 1, as etcd's is
	var checks, restarts int
	for step := 0; step < steps; step++ {
		// One transaction: puts and deletes on a few keys.
		req := &TxnRequest{Compare: nil}
		written := map[string]bool{}
		for i := 0; i < 1+rng.Intn(3); i++ {
			k := fmt.Sprintf("k%d", rng.Intn(10))
			if written[k] {
				continue
			}
			written[k] = true
			if rng.Intn(4) == 0 {
				req.Success = append(req.Success, Op{Type: OpDelete, Key: []byte(k)})
			} else {
				req.Success = append(req.Success, Op{Type: OpPut, Key: []byte(k), Value: []byte(fmt.Sprint("v", step)), Lease: int64(rng.Intn(2))})
			}
		}
		if rev+1 == changeAt && !hasPut(req) {
			changeAt++ // c's change needs a put to change
		}
		var wrote bool
		for _, m := range []*member{a, b, c} {
			r := req
			if m == c && rev+1 == changeAt {
				// Same keys, another value: the same shape of history.
				r = &TxnRequest{}
				for _, op := range req.Success {
					if op.Type == OpPut {
						op.Value = []byte("changed")
					}
					r.Success = append(r.Success, op)
				}
			}
			if _, err := m.s.Txn(r); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			wrote = m.s.Rev() > rev
		}
		if wrote {
			rev++
		}
		if err := a.s.Commit(); err != nil {
			t.Fatal(err)
		}
		if rng.Intn(5) == 0 {
			if err := c.s.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		// b deletes what compaction dropped a little at a time.
		if _, err := b.s.CompactStep(1 + rng.Intn(5)); err != nil {
			t.Fatal(err)
		}
		switch x := rng.Intn(100); {
		case x < 2 && rev > compacted: // compact all three
			compacted += 1 + rng.Int63n(rev-compacted)
			for _, m := range []*member{a, b, c} {
				if err := m.s.Compact(compacted); err != nil {
					t.Fatal(err)
				}
			}
			finishCompaction(t, a.s)
			if err := a.s.Commit(); err != nil {
				t.Fatal(err)
			}
		case x < 4: // restart b from its page file
			if err := b.s.Close(); err != nil {
				t.Fatal(err)
			}
			_ = b.db.Close()
			b.db, b.s = openStore(t, b.path)
			restarts++
		case x < 30: // hash
			at := compacted + rng.Int63n(rev-compacted+1)
			if rng.Intn(5) == 0 {
				at = 0
			}
			want := at
			if at == 0 {
				want = rev
			}
			ha, err := a.s.HashKV(at)
			if err != nil {
				t.Fatal(err)
			}
			hb, err := b.s.HashKV(at)
			if err != nil {
				t.Fatal(err)
			}
			hc, err := c.s.HashKV(at)
			if err != nil {
				t.Fatal(err)
			}
			if ha.HashRev != want || ha.CompactRev != compacted {
				t.Fatalf("step %d: hashed revision %d compacted %d, want %d and %d", step, ha.HashRev, ha.CompactRev, want, compacted)
			}
			if ha != hb {
				t.Fatalf("step %d: members with one history differ at revision %d: %+v and %+v", step, at, ha, hb)
			}
			// Once compaction passes the change, the changed value may be
			// gone from what is hashed; until then it must count.
			if (want < changeAt && ha != hc) || (want >= changeAt && compacted < changeAt && ha == hc) {
				t.Fatalf("step %d: at revision %d (history differs from %d): %+v against %+v", step, want, changeAt, ha, hc)
			}
			if want > compacted && want > 1 {
				before, err := a.s.HashKV(want - 1)
				if err != nil {
					t.Fatal(err)
				}
				if before.Hash == ha.Hash {
					t.Fatalf("step %d: revisions %d and %d hash alike", step, want-1, want)
				}
			}
			checks++
		}
	}
	if _, err := a.s.HashKV(rev + 1); !errors.Is(err, ErrFutureRev) {
		t.Fatalf("hash of a future revision: %v", err)
	}
	if compacted > 1 {
		if _, err := a.s.HashKV(compacted - 1); !errors.Is(err, ErrCompacted) {
			t.Fatalf("hash below the compaction: %v", err)
		}
	}
	t.Logf("revision %d compacted %d, c differs from %d: %d hash checks, %d restarts", rev, compacted, changeAt, checks, restarts)
	if checks == 0 || restarts == 0 || compacted == 0 || rev < changeAt {
		t.Fatal("the run did not hash, restart, compact and pass the changed revision")
	}
	for _, m := range []*member{a, b, c} {
		finishCompaction(t, m.s)
		if err := m.s.Check(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHashKVBatchCommittedMidway commits the open batch to the page file
// after HashKV took the buffer and before it reads the file, as a commit
// racing the hash can: the writes then sit in both, and count once.
func TestHashKVBatchCommittedMidway(t *testing.T) {
	db, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer func() { _ = s.Close(); _ = db.Close() }()
	for i := 0; i < 50; i++ {
		if _, err := s.Txn(&TxnRequest{Success: []Op{{Type: OpPut, Key: []byte(fmt.Sprintf("k%d", i%7)), Value: []byte(fmt.Sprint(i))}}}); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 {
			if err := s.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.Txn(&TxnRequest{Success: []Op{{Type: OpDelete, Key: []byte("k3")}}}); err != nil {
		t.Fatal(err)
	}
	want, err := s.HashKV(0)
	if err != nil {
		t.Fatal(err)
	}
	committed := false
	failpoint.Enable("engine/hashBeforeFile", func() error {
		// What commit does before it swaps the buffer (which waits for
		// the lock HashKV holds).
		if err := s.batch.Commit(); err != nil {
			return err
		}
		var err error
		s.batch, err = s.db.Begin(true)
		committed = true
		return err
	})
	got, err := s.HashKV(0)
	failpoint.Disable("engine/hashBeforeFile")
	if err != nil || !committed {
		t.Fatalf("hash with the batch committed midway: %v (committed %v)", err, committed)
	}
	if got != want {
		t.Fatalf("the batch committed midway changed the hash: %+v, want %+v", got, want)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
