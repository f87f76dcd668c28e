package member

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/wal"
)

// Check verifies the hand-offs between proposers, raft and apply at one
// instant: a proposer is on its way exactly when proposals are queued;
// entries queued for apply run on, in order, after what was applied; and
// with no one applying and no Ready in flight to the WAL (whose stepping
// meanwhile may commit more), everything raft committed is applied or
// queued.
func (m *Member) Check() error {
	m.raftMu.Lock()
	defer m.raftMu.Unlock()
	m.propMu.Lock()
	queued, proposing := len(m.props), m.proposing
	m.propMu.Unlock()
	if proposing != (queued > 0) {
		return fmt.Errorf("member: %d proposals queued, proposing %v", queued, proposing)
	}
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	applied, committed := m.AppliedIndex(), m.r.Committed()
	if applied > committed {
		return fmt.Errorf("member: applied %d past committed %d", applied, committed)
	}
	last := applied
	for i, e := range m.applyq {
		if e.Index <= applied || i > 0 && e.Index != m.applyq[i-1].Index+1 {
			return fmt.Errorf("member: entry %d queued for apply at %d, after applied %d", e.Index, i, applied)
		}
		last = e.Index
	}
	if !m.applying && !m.applyDead && !m.raftDone && !m.persisting && last != committed {
		return fmt.Errorf("member: applied %d and %d queued, no one applying, committed %d", applied, len(m.applyq), committed)
	}
	if applied >= m.r.LastConfIndex() && !m.applying {
		return m.checkMembership()
	}
	return nil
}

// checkMembership compares raft's configuration with the members the
// engine records, once every change in the log is applied (raftMu and
// applyMu held, no one applying).
func (m *Member) checkMembership() error {
	voters, learners := m.r.Config()
	var ev, el []uint64
	for _, mem := range m.eng.Members() {
		if mem.IsLearner {
			el = append(el, mem.ID)
		} else {
			ev = append(ev, mem.ID)
		}
	}
	if !slices.Equal(voters, ev) || !slices.Equal(learners, el) {
		return fmt.Errorf("member: raft has voters %x and learners %x, the engine %x and %x", voters, learners, ev, el)
	}
	if m.learner.Load() != slices.Contains(el, m.id) {
		return fmt.Errorf("member: learner %v, the engine's learners %x", m.learner.Load(), el)
	}
	return nil
}

// CheckDataDir checks a stopped member's data directory whole: the page
// file (every page) and the engine over it (index against backend), the
// WAL (every record), and that a restart could begin at the newest raft
// snapshot (the page file holds it, the WAL has its marker). A directory
// without a page file has nothing to check.
func CheckDataDir(dir string) error {
	snapDir, walDir := filepath.Join(dir, "member", "snap"), filepath.Join(dir, "member", "wal")
	path := filepath.Join(snapDir, "db")
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	db, err := pagefile.Open(path, nil)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return fmt.Errorf("page file check: %w", err)
	}
	eng, err := engine.Open(db)
	if err != nil {
		return fmt.Errorf("opening the engine: %w", err)
	}
	defer eng.Close()
	if err := eng.Check(); err != nil {
		return fmt.Errorf("engine check: %w", err)
	}
	if err := wal.Verify(walDir, nil); err != nil {
		return fmt.Errorf("WAL check: %w", err)
	}
	snap, err := loadSnap(vfs.Default, snapDir, slog.Default())
	if err != nil {
		return fmt.Errorf("reading the snapshot files: %w", err)
	}
	if snap == nil {
		return nil
	}
	if ci, err := eng.ConsistentIndex(); err != nil || ci < snap.Index {
		return fmt.Errorf("page file consistent index %d (%v), before the snapshot at %d", ci, err, snap.Index)
	}
	w, _, err := wal.Open(walDir, wal.Snapshot{Term: snap.Term, Index: snap.Index}, nil)
	if err != nil {
		return fmt.Errorf("WAL from the snapshot at %d: %w", snap.Index, err)
	}
	return w.Close()
}
