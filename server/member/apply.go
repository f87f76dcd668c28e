package member

import (
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cairn-kv/cairn/raft"
)

// applierTask is work that must run on the apply goroutine, between
// entries: it is the engine's only writer (a snapshot's commit, a
// defragmentation, a backend hash).
type applierTask struct {
	f    func() error
	done chan error
}

// applyLoop is the apply goroutine. It takes the apply role when kicked,
// for a task, on its ticks and at the end: then it applies everything
// queued, commits the engine's batch when due, goes on with a compaction's
// deletions and records a raft snapshot when one is due. At the end it
// keeps the role, so nothing is applied after the engine's last commit.
func (m *Member) applyLoop() {
	defer m.done.Done()
	ticker := time.NewTicker(10 * time.Millisecond)
	defer ticker.Stop()
	for {
		var task *applierTask
		select {
		case <-m.stopping:
			if m.takeApply() && m.applyAll() {
				if err := m.eng.Commit(); err != nil {
					m.Fail(err)
				}
			}
			// Nothing is applied after the last commit: whoever waits
			// for the role gives up.
			m.applyMu.Lock()
			m.applyDead = true
			m.applyIdle.Broadcast()
			m.applyMu.Unlock()
			return
		case <-m.applyKick:
		case t := <-m.taskc:
			task = &t
		case <-ticker.C:
		}
		if !m.takeApply() {
			// Applying failed: the member only waits to stop.
			if task != nil {
				task.done <- rpctypes.ErrGRPCStopped
			}
			<-m.stopping
			return
		}
		if task != nil {
			task.done <- task.f()
		}
		for m.applyAll() && m.housekeeping() && !m.releaseApply() {
		}
	}
}

// applyQueued applies the entries queued for apply, on the caller's
// goroutine, if no one holds the apply role. It applies one batch: if more
// was queued meanwhile, or the engine has housekeeping due, it kicks the
// apply goroutine to go on rather than keep its caller from answering.
func (m *Member) applyQueued() {
	m.applyMu.Lock()
	if m.applying || m.applyDead || len(m.applyq) == 0 {
		m.applyMu.Unlock()
		return
	}
	m.applying = true
	ents := m.applyq
	m.applyq = nil
	m.applyMu.Unlock()
	if !m.applyEntries(ents) {
		return
	}
	more := m.eng.HousekeepingDue() || m.snapshotDue()
	m.applyMu.Lock()
	more = more || len(m.applyq) > 0
	m.applying = false
	m.applyIdle.Broadcast()
	m.applyMu.Unlock()
	if more {
		select {
		case m.applyKick <- struct{}{}:
		default: // a kick is waiting already
		}
	}
}

// takeApply waits for the apply role and takes it (the apply goroutine,
// or a snapshot's install). It returns false, not taking it, once applying
// has failed or ended.
func (m *Member) takeApply() bool {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	for m.applying && !m.applyDead {
		m.applyIdle.Wait()
	}
	if m.applyDead {
		return false
	}
	m.applying = true
	return true
}

// releaseApply gives up the apply role, unless entries were queued since
// its holder last looked: then it keeps it and returns false.
func (m *Member) releaseApply() bool {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	if len(m.applyq) > 0 {
		return false
	}
	m.applying = false
	m.applyIdle.Broadcast()
	return true
}

// applyAll applies everything queued, recording raft snapshots as they
// fall due (apply role held). It returns false when applying failed.
func (m *Member) applyAll() bool {
	for {
		if m.snapshotDue() {
			if err := m.snapshotAt(m.AppliedIndex()); err != nil {
				m.failApply(err)
				return false
			}
		}
		m.applyMu.Lock()
		ents := m.applyq
		m.applyq = nil
		m.applyMu.Unlock()
		if len(ents) == 0 {
			return true
		}
		if !m.applyEntries(ents) {
			return false
		}
	}
}

// applyEntries applies ents in order and hands their slice back for reuse
// (apply role held). It returns false when applying failed.
func (m *Member) applyEntries(ents []raft.Entry) bool {
	for _, e := range ents {
		if err := m.applyEntry(e); err != nil {
			m.failApply(err)
			return false
		}
		m.appliedBytes += len(e.Data)
	}
	m.setApplied(ents[len(ents)-1].Index)
	clear(ents)
	m.applyMu.Lock()
	m.applySpare = ents[:0]
	m.applyMu.Unlock()
	return true
}

// failApply fails the member: nothing is applied after err. The role is
// released so that the apply goroutine is not left waiting for it.
func (m *Member) failApply(err error) {
	m.Fail(err)
	m.applyMu.Lock()
	m.applyDead = true
	m.applying = false
	m.applyIdle.Broadcast()
	m.applyMu.Unlock()
}

func (m *Member) snapshotDue() bool {
	return m.cfg.SnapshotCount > 0 && (m.AppliedIndex()-m.snapIndex >= m.cfg.SnapshotCount || m.appliedBytes >= m.cfg.SnapshotBytes)
}

// housekeeping commits the engine's batch when due and goes on with a
// compaction's deletions (apply role held). It returns false when the
// store failed.
func (m *Member) housekeeping() bool {
	start := time.Now()
	committed, err := m.eng.CommitIfDue(start)
	if err != nil {
		m.failApply(err)
		return false
	}
	if committed {
		m.metrics.backendCommit.Observe(time.Since(start).Seconds())
	}
	if !m.eng.Compacting() {
		m.answerCompactions()
		return true
	}
	if start.Before(m.nextCompactStep) {
		return true // a compaction's steps are spaced out
	}
	if m.compactStart.IsZero() {
		m.compactStart = start
	}
	indexing := m.eng.CompactingIndex()
	done, err := m.eng.CompactStep(m.cfg.CompactionBatchLimit)
	if err != nil {
		m.failApply(err)
		return false
	}
	if indexing {
		m.metrics.indexCompactPause.Observe(ms(time.Since(start)))
	} else {
		m.metrics.compactPause.Observe(ms(time.Since(start)))
	}
	if !done {
		m.nextCompactStep = start.Add(m.cfg.CompactionSleepInterval)
		return true
	}
	took := time.Since(m.compactStart)
	m.log.Info("finished scheduled compaction", "compact-revision", m.eng.CompactRev(), "took", took.String())
	m.metrics.compactTotal.Observe(ms(took))
	m.metrics.compactLast.Set(float64(time.Now().Unix()))
	m.compactStart = time.Time{}
	m.answerCompactions()
	return true
}

// answerCompactions answers the physical compactions waiting for their
// deletions, which are done (apply role held).
func (m *Member) answerCompactions() {
	for _, ch := range m.compactWaiters {
		ch <- applyResult{resp: &pb.CompactionResponse{Header: m.Header(m.eng.Rev())}}
	}
	m.compactWaiters = nil
}

// snapshotAt makes the engine durable at index (its consistent index with
// it) and hands the index to the driver to record a raft snapshot there.
// Only the newest index waits: one the driver has not taken yet is
// replaced (the driver may itself be waiting to hand over entries).
func (m *Member) snapshotAt(index uint64) error {
	start := time.Now()
	if err := m.eng.Commit(); err != nil {
		return err
	}
	m.metrics.backendCommit.Observe(time.Since(start).Seconds())
	m.snapIndex, m.appliedBytes = index, 0
	for {
		select {
		case m.snapc <- index:
			return nil
		default:
		}
		select {
		case <-m.snapc:
		default:
		}
	}
}

// onApplier runs f on the apply goroutine and returns its error.
func (m *Member) OnApplier(f func() error) error {
	t := applierTask{f: f, done: make(chan error, 1)}
	select {
	case m.taskc <- t:
	case <-m.stopping:
		return rpctypes.ErrGRPCStopped
	}
	select {
	case err := <-t.done:
		return err
	case <-m.stopping:
		return rpctypes.ErrGRPCStopped
	}
}

func (e errStoreFailed) Error() string { return e.err.Error() }
