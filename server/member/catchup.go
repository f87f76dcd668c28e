package member

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/raft"
	"github.com/cairn-kv/cairn/wal"
)

// Catching up by snapshot. A follower that needs entries the leader's log
// no longer holds (it was down, or cut off, while the leader compacted)
// gets the leader's page file instead, with raft's MsgSnap:
//
//   - The leader (sendSnapshot) opens a read transaction on the applier's
//     latest commit and streams that state; the snapshot's metadata is
//     made for the transaction's consistent index, so the follower installs
//     exactly the state at the snapshot's index. Writes, and the leader's
//     own log compaction, go on meanwhile. Raft hears how the send ended
//     (ReportSnapshot) and sends again after a failure.
//   - The follower (receiveSnapshot) writes the data beside its page file
//     as <term>-<index>.snap.db, under a temporary name until it is whole,
//     synced and checked (every page; its consistent index is the
//     snapshot's), and only then steps the message: raft replaces the
//     follower's log with the snapshot and hands it out in a Ready.
//   - The persister of that Ready (installSnapshot) applies what was
//     queued, writes the .snap file, then the WAL's installed-snapshot
//     marker with the Ready's records, then has the engine rename the
//     received file over the page file and reload.
//
// A crash between these steps restarts cleanly (Open): a .snap file whose
// WAL marker was never written is an install cut short, dropped with its
// data (dropUnmarkedInstall; the leader sends it again); one whose marker
// was written has its received page file installed if the page file is
// still older.

const (
	receivedSuffix = ".db"  // <term>-<index>.snap.db: a received snapshot's page file
	receivingTmp   = ".tmp" // ... .snap.db.tmp while it arrives
	snapDBSuffix   = snapSuffix + receivedSuffix
)

// receivedName is the file of a received snapshot's page file.
func receivedName(s raft.SnapshotMeta) string { return snapName(s.Term, s.Index) + receivedSuffix }

// sendSnapshot sends msg's follower the snapshot raft asked for, on its
// own goroutine (tracked in done), and tells raft how it ended.
func (m *Member) sendSnapshot(msg raft.Message) {
	defer m.done.Done()
	err := m.streamSnapshot(msg)
	to := fmt.Sprintf("%x", msg.To)
	if err != nil {
		m.log.Warn("failed to send a snapshot", "to", to, "err", err)
		m.metrics.snapSendFailed.WithLabelValues(to).Inc()
	} else {
		m.metrics.snapSent.WithLabelValues(to).Inc()
	}
	m.raftMu.Lock()
	if !m.raftDone {
		m.r.ReportSnapshot(msg.To, err == nil)
		m.advance()
	}
	m.raftMu.Unlock()
	m.applyQueued()
}

// streamSnapshot streams the page file as of the applier's latest commit
// to msg.To, with metadata for its consistent index.
func (m *Member) streamSnapshot(msg raft.Message) error {
	var tx *pagefile.Tx
	if err := m.OnApplier(func() (err error) {
		tx, err = m.eng.SnapshotTx()
		return err
	}); err != nil {
		return err
	}
	defer tx.Rollback()
	index := engine.ConsistentIndexIn(tx)
	m.raftMu.Lock()
	for m.persisting && index > m.r.Applied() {
		m.persistIdle.Wait() // see snapshot: raft learns of what was applied at Advance
	}
	meta, err := m.r.SnapshotAt(index)
	m.raftMu.Unlock()
	if err != nil {
		return err
	}
	msg.Snapshot = &meta
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the send ends when the member stops
		select {
		case <-m.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	size := tx.Size()
	m.log.Info("sending a snapshot", "to", fmt.Sprintf("%x", msg.To), "index", meta.Index, "term", meta.Term, "size", size)
	err = m.tr.SendSnapshot(ctx, msg, func(w io.Writer) error {
		_, err := tx.WriteTo(w)
		return err
	})
	if err == nil {
		m.log.Info("sent a snapshot", "to", fmt.Sprintf("%x", msg.To), "index", meta.Index, "size", size)
	}
	return err
}

// ReceiveSnapshot takes a snapshot the leader sends (see above): its data
// is written and checked, then msg is stepped. One at a time.
func (h peerHandler) ReceiveSnapshot(msg raft.Message, data io.Reader) error {
	return h.m.receiveSnapshot(msg, data)
}

func (m *Member) receiveSnapshot(msg raft.Message, data io.Reader) error {
	s := *msg.Snapshot
	m.receiveMu.Lock()
	defer m.receiveMu.Unlock()
	m.raftMu.Lock()
	stopped, have := m.raftDone, s.Index <= m.r.Committed()
	m.raftMu.Unlock()
	if stopped {
		return errors.New("the member is stopping")
	}
	if have {
		// Raft answers it from the log: the data is not needed.
		if _, err := io.Copy(io.Discard, data); err != nil {
			return err
		}
	} else if err := m.writeReceived(s, data); err != nil {
		m.log.Warn("failed to receive a snapshot", "from", fmt.Sprintf("%x", msg.From), "index", s.Index, "err", err)
		m.metrics.snapReceiveFailed.WithLabelValues(fmt.Sprintf("%x", msg.From)).Inc()
		return err
	}
	m.log.Info("received a snapshot", "from", fmt.Sprintf("%x", msg.From), "index", s.Index, "term", s.Term)
	m.metrics.snapReceived.WithLabelValues(fmt.Sprintf("%x", msg.From)).Inc()
	peerHandler{m}.Process([]raft.Message{msg})
	return nil
}

// writeReceived writes a snapshot's page file to the snap directory
// under a temporary name, syncs and checks it, and renames it into place.
func (m *Member) writeReceived(s raft.SnapshotMeta, data io.Reader) error {
	path := filepath.Join(m.snapDir, receivedName(s))
	tmp := path + receivingTmp
	start := time.Now()
	err := func() error {
		if err := failpoint.Hit("member/receiveSnapshot"); err != nil {
			return err
		}
		f, err := m.fs.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
		if err != nil {
			return err
		}
		_, err = io.CopyBuffer(&fileWriter{f: f, wb: vfs.NewWriteback(f, syncEvery)}, data, make([]byte, 1<<20))
		if err == nil {
			syncStart := time.Now()
			err = f.Sync()
			m.metrics.snapDBFsync.Observe(time.Since(syncStart).Seconds())
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := checkReceived(m.fs, tmp, s); err != nil {
			return err
		}
		if err := m.fs.Rename(tmp, path); err != nil {
			return err
		}
		if err := m.fs.SyncDir(m.snapDir); err != nil {
			return err
		}
		m.metrics.snapDBSave.Observe(time.Since(start).Seconds())
		return nil
	}()
	if err != nil {
		_ = m.fs.Remove(tmp)
	}
	return err
}

// checkReceived opens a received page file and checks it whole: every
// page, and its consistent index is the snapshot's.
func checkReceived(fs vfs.FS, path string, s raft.SnapshotMeta) error {
	db, err := pagefile.Open(path, &pagefile.Options{FS: fs})
	if err != nil {
		return fmt.Errorf("the received page file does not open: %w", err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return fmt.Errorf("the received page file is damaged: %w", err)
	}
	var ci uint64
	if err := db.View(func(tx *pagefile.Tx) error {
		ci = engine.ConsistentIndexIn(tx)
		return nil
	}); err != nil {
		return err
	}
	if ci != s.Index {
		return fmt.Errorf("the received page file holds the state at index %d, its snapshot says %d", ci, s.Index)
	}
	return nil
}

// fileWriter writes a received snapshot's data with its writeback kept
// within two steps of syncEvery (vfs.Writeback): the disk takes the file as
// it comes rather than as one flush of the whole at the end, which would
// hold up every other sync on it (the leader's, on a disk they share, or
// this member's own WAL) for as long, and the receive does not stop for a
// sync at each step.
type fileWriter struct {
	f   vfs.File
	off int64
	wb  *vfs.Writeback
}

const syncEvery = 32 << 20

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	if err == nil {
		err = w.wb.Wrote(w.off)
	}
	return n, err
}

// installSnapshot installs the snapshot s of a Ready and persists the
// Ready's records after it (raftMu released: this Ready is the one in
// flight). The apply role is taken for the whole install, and whatever
// was queued for apply is applied first. Any failure fails the member.
func (m *Member) installSnapshot(s raft.SnapshotMeta, recs []wal.Record) error {
	if !m.takeApply() {
		return errApplyEnded
	}
	if !m.applyAll() {
		return errApplyEnded // the member failed; the role is released
	}
	if err := m.install(s, recs); err != nil {
		// The member fails: nothing is applied after (the role goes).
		m.failApply(err)
		return err
	}
	m.releaseApplyRole()
	if err := removeReceived(m.fs, m.snapDir, ""); err != nil {
		return err
	}
	m.log.Info("installed a snapshot", "index", s.Index, "term", s.Term, "size", m.eng.BackendSize())
	return nil
}

// install writes s's .snap file, then the WAL's installed marker with
// recs, then has the engine take the received page file (apply role
// held).
func (m *Member) install(s raft.SnapshotMeta, recs []wal.Record) error {
	m.metrics.snapshotApplying.Set(1)
	defer m.metrics.snapshotApplying.Set(0)
	if err := m.saveSnap(s); err != nil {
		return fmt.Errorf("writing the snapshot file: %w", err)
	}
	if err := failpoint.Hit("member/installBeforeMarker"); err != nil {
		return err
	}
	marker := wal.SnapshotRecord(wal.Snapshot{Term: s.Term, Index: s.Index, Membership: encodeMembership(s.Voters, s.Learners), Installed: true})
	if err := m.w.Append(append([]wal.Record{marker}, recs...)...); err != nil {
		return err
	}
	if err := failpoint.Hit("member/installBeforePageFile"); err != nil {
		return err
	}
	if err := m.eng.Install(filepath.Join(m.snapDir, receivedName(s)), m.openPageFile); err != nil {
		return err
	}
	m.snapIndex, m.appliedBytes = s.Index, 0
	m.setApplied(s.Index)
	m.followMembers()
	return nil
}

// errApplyEnded: a snapshot is not installed once applying failed (the
// member has failed already) or ended (it stops).
var errApplyEnded = errors.New("applying has ended")

// releaseApplyRole gives up the apply role and has the apply goroutine
// look for more.
func (m *Member) releaseApplyRole() {
	m.applyMu.Lock()
	m.applying = false
	m.applyIdle.Broadcast()
	m.applyMu.Unlock()
	select {
	case m.applyKick <- struct{}{}:
	default:
	}
}

// removeReceived removes the received snapshot files in dir, whole or
// partial, but keep.
func removeReceived(fs vfs.FS, dir, keep string) error {
	names, err := fs.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, n := range names {
		if n != keep && (strings.HasSuffix(n, snapDBSuffix) || strings.HasSuffix(n, snapDBSuffix+receivingTmp)) {
			if err := fs.Remove(filepath.Join(dir, n)); err != nil {
				return err
			}
			removed = true
		}
	}
	if removed {
		return fs.SyncDir(dir)
	}
	return nil
}

// dropUnmarkedInstall removes a .snap file that has no WAL marker, and its
// received page file, if it is one an install left (the page file is
// there); otherwise the missing marker is an error.
func dropUnmarkedInstall(fs vfs.FS, snapDir string, snap raft.SnapshotMeta) (bool, error) {
	received := filepath.Join(snapDir, receivedName(snap))
	if _, err := fs.Stat(received); err != nil {
		return false, nil
	}
	if err := fs.Remove(filepath.Join(snapDir, snapName(snap.Term, snap.Index))); err != nil {
		return false, err
	}
	if err := fs.Remove(received); err != nil {
		return false, err
	}
	return true, fs.SyncDir(snapDir)
}
