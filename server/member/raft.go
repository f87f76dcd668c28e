package member

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-kv/cairn/raft"
	"github.com/cairn-kv/cairn/wal"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// drive is the driver goroutine: it ticks raft, asks it for read indexes
// and records raft snapshots, each under raftMu, and applies what that
// commits. Proposals reach raft through propose.
func (m *Member) drive() {
	defer m.done.Done()
	ticker := time.NewTicker(m.cfg.HeartbeatInterval)
	defer ticker.Stop()
	m.raftMu.Lock()
	if m.r.Lead() == 0 && len(m.eng.Members()) == 1 {
		// The only voter need not wait an election timeout.
		_ = m.r.Campaign()
	}
	// The initial election tick advance (etcd's): once connected to two
	// peers or more, within tickAdvanceWait, the election clock skips to
	// two ticks short of a timeout.
	tickAdvanceUntil := time.Time{}
	if !m.cfg.NoInitialElectionTickAdvance && len(m.eng.Members()) > 1 {
		tickAdvanceUntil = time.Now().Add(tickAdvanceWait)
	}
	m.advance()
	m.raftMu.Unlock()
	m.applyQueued()
	for {
		select {
		case <-m.stopping:
			// Every round ends here, so that reads need not wait on
			// stopping too.
			m.readMu.Lock()
			m.readsDone = true
			if rd := m.nextRead; rd != nil {
				m.nextRead = nil
				rd.finish(0, rpctypes.ErrGRPCStopped)
			}
			m.readMu.Unlock()
			m.raftMu.Lock() // stop has set raftDone, or will
			for ctx, rd := range m.reads {
				rd.finish(0, rpctypes.ErrGRPCStopped)
				delete(m.reads, ctx)
			}
			m.raftMu.Unlock()
			return
		case now := <-ticker.C:
			if now.Sub(m.lastExpire) >= expireEvery {
				m.lastExpire = now
				m.expireProposals(now)
			}
			advanceBy := 0
			if !tickAdvanceUntil.IsZero() {
				if m.activePeers() > 1 {
					advanceBy = m.electionTicks - 2
					tickAdvanceUntil = time.Time{}
				} else if now.After(tickAdvanceUntil) {
					tickAdvanceUntil = time.Time{}
				}
			}
			m.raftMu.Lock()
			if !m.raftDone {
				m.r.Tick()
				if advanceBy > 0 && m.r.Lead() == 0 {
					m.log.Info("initial election tick advance", "ticks", advanceBy)
					for range advanceBy {
						m.r.Tick()
					}
				}
			}
			m.expireReads(now)
		case index := <-m.snapc:
			if err := m.snapshot(index); err != nil {
				m.Fail(err)
			}
			m.raftMu.Lock()
			if m.failed.Load() != nil {
				m.raftDone = true
			}
		case <-m.readKick:
			m.readMu.Lock()
			rd := m.nextRead
			m.nextRead = nil
			m.readMu.Unlock()
			m.raftMu.Lock()
			if rd != nil {
				m.readSeq++
				var ctx [8]byte
				binary.BigEndian.PutUint64(ctx[:], m.readSeq)
				switch {
				case m.raftDone:
					rd.finish(0, rpctypes.ErrGRPCStopped)
				case m.r.ReadIndex(ctx[:]) != nil:
					m.metrics.readIndexFailed.Inc()
					rd.finish(0, rpctypes.ErrGRPCNoLeader)
				default:
					m.reads[ctx] = rd
				}
			}
		}
		m.advance()
		m.raftMu.Unlock()
		m.applyQueued()
	}
}

// tickAdvanceWait bounds the wait for peers before the initial election
// tick advance (etcd waits its peer read timeout, 5 s).
const tickAdvanceWait = 5 * time.Second

// activePeers counts the peers this member's streams are connected to.
func (m *Member) activePeers() int {
	n := 0
	for _, id := range m.tr.PeerIDs() {
		if !m.tr.ActiveSince(id).IsZero() {
			n++
		}
	}
	return n
}

// advance handles raft's Readys until it has none (raftMu held). One
// Ready is handled at a time, by whoever found none in flight: what needs
// no persist is done at once under the lock (committed entries, durable
// already, are queued for apply; read states answered), then the Ready's
// entries and hard state are written to the WAL with raftMu released, so
// that ticks, proposals and (later) peer messages are stepped while the
// fsync runs. Raft is not asked for another Ready until this one is
// advanced: the Readys that pile up meanwhile go to the WAL together, in
// the persister's next turn. A WAL failure fails the member; raft takes
// nothing after it.
func (m *Member) advance() {
	r := m.r
	for !m.raftDone && !m.persisting && r.HasReady() {
		rd := r.Ready()
		if len(rd.CommittedEntries) > 0 {
			m.applyMu.Lock()
			if m.applyq == nil {
				m.applyq, m.applySpare = m.applySpare, nil
			}
			m.applyq = append(m.applyq, rd.CommittedEntries...)
			m.applyMu.Unlock()
		}
		for _, rs := range rd.ReadStates {
			var ctx [8]byte
			copy(ctx[:], rs.RequestCtx)
			if rd, ok := m.reads[ctx]; ok {
				rd.finish(rs.Index, nil)
				delete(m.reads, ctx)
			}
		}
		// A leader's appends go out while its own write is in flight.
		m.send(rd.Messages)
		recs, hs := m.walRecords(&rd)
		if len(recs) > 0 || rd.Snapshot != nil {
			m.persisting = true
			m.raftMu.Unlock()
			var err error
			if rd.Snapshot != nil {
				// The leader's snapshot replaces the log and the state
				// (its page file arrived before raft saw it).
				err = m.installSnapshot(*rd.Snapshot, recs)
			} else {
				err = m.w.Append(recs...)
			}
			clear(recs)
			m.raftMu.Lock()
			m.walRecs = recs[:0]
			m.persisting = false
			m.persistIdle.Broadcast()
			if err != nil {
				if !errors.Is(err, errApplyEnded) {
					m.Fail(err)
				}
				m.raftDone = true
				return
			}
		}
		m.syncedHS = hs
		// Votes and acknowledgements promise what is now durable.
		m.send(rd.MessagesAfterPersist)
		self := m.selfMsgs[:0]
		for _, msgs := range [][]raft.Message{rd.Messages, rd.MessagesAfterPersist} {
			for _, msg := range msgs {
				if msg.To == m.id {
					self = append(self, msg)
				}
			}
		}
		r.Advance(rd)
		for _, msg := range self {
			_ = r.Step(msg)
		}
		clear(self) // they point into raft's log
		m.selfMsgs = self[:0]
		m.term.Store(r.Term())
		m.commit.Store(r.Committed())
		if lead := r.Lead(); lead != m.lead.Load() {
			m.leaderChanged(lead)
		}
		if !m.leading && r.Lead() != 0 {
			m.leading = true
			close(m.readyc)
		}
	}
}

// snapshot records a raft snapshot at index, which the page file holds
// durably: the WAL's marker, then the .snap file (a restart begins at the
// newest file, whose marker is then in the WAL). Then raft drops its log
// but for SnapshotCatchUpEntries before it, holding at most
// snapshotCatchUpBytes, and the WAL segments and .snap files past their
// limits go. raftMu is held only to read the snapshot's
// metadata and to compact raft's log, not across the writes (the WAL
// replays by index, so its marker may follow entries after it).
func (m *Member) snapshot(index uint64) error {
	m.raftMu.Lock()
	// The applier may have applied entries out of a Ready still being
	// persisted; raft learns of them once it is advanced. (Under load
	// another Ready may be in flight by then: waiting for none could wait
	// for ever.)
	for m.persisting && index > m.r.Applied() {
		m.persistIdle.Wait()
	}
	if m.raftDone {
		m.raftMu.Unlock()
		return nil
	}
	s, err := m.r.SnapshotAt(index)
	m.raftMu.Unlock()
	if err != nil {
		return err
	}
	if err := m.w.Append(wal.SnapshotRecord(wal.Snapshot{Term: s.Term, Index: s.Index, Membership: encodeMembership(s.Voters, s.Learners)})); err != nil {
		return err
	}
	if err := m.saveSnap(s); err != nil {
		return fmt.Errorf("writing the snapshot file: %w", err)
	}
	m.raftMu.Lock()
	err = m.r.Compact(m.r.CatchUpFrom(index, m.cfg.SnapshotCatchUpEntries, snapshotCatchUpBytes))
	m.raftMu.Unlock()
	if err != nil {
		return err
	}
	if m.cfg.MaxWALs > 0 {
		if err := m.w.ReleaseTo(index, m.cfg.MaxWALs); err != nil {
			return fmt.Errorf("releasing WAL segments: %w", err)
		}
	}
	if err := purgeSnaps(m.fs, m.snapDir, m.cfg.MaxSnapshots); err != nil {
		return fmt.Errorf("removing old snapshot files: %w", err)
	}
	m.log.Info("saved snapshot", "index", s.Index, "term", s.Term)
	return nil
}

// leaderChanged follows a change of leader (raftMu held): the leader's
// lessor counts expiry (every lease gets an election timeout more, so that
// none expires for time spent choosing a leader); the others' do not; the
// reads waiting for a read index end with "leader changed".
func (m *Member) leaderChanged(lead uint64) {
	was := m.lead.Swap(lead)
	m.leaderChanges.Add(1)
	switch {
	case lead == m.id:
		m.eng.LeasePromote(m.cfg.ElectionTimeout)
	case was == m.id:
		m.eng.LeaseDemote()
	}
	// Reads waiting for a ReadIndex from the old leader would wait out
	// their timeout: they end now with etcd's "leader changed", which
	// clients retry (raftMu held).
	for ctx, rd := range m.reads {
		rd.finish(0, rpctypes.ErrGRPCLeaderChanged)
		delete(m.reads, ctx)
	}
	clear(m.lastHeartbeat) // a new term's heartbeats start afresh
	term := m.term.Load()
	// etcd's raft logs these words; cairn's own line follows.
	switch {
	case was == 0:
		m.log.Info(fmt.Sprintf("raft.node: %x elected leader %x at term %d", m.id, lead, term))
	case lead == 0:
		m.log.Info(fmt.Sprintf("raft.node: %x lost leader %x at term %d", m.id, was, term))
	default:
		m.log.Info(fmt.Sprintf("raft.node: %x changed leader from %x to %x at term %d", m.id, was, lead, term))
	}
	m.log.Info("leader changed", "leader", fmt.Sprintf("%x", lead), "term", term)
}

// walRecords returns the WAL records that make a Ready's entries and hard
// state durable (none if it needs no write), and the hard state they
// leave synced (raftMu held). As in etcd, a change of the commit index
// alone needs no write of its own: it is recorded with the next entries
// or term/vote change (a restart learns commits again from the log), so a
// write costs one fsync, not two. The records go in m.walRecs, which the
// one persister in flight owns until it has written them.
func (m *Member) walRecords(rd *raft.Ready) ([]wal.Record, raft.HardState) {
	if rd.HardState != nil {
		m.hs = *rd.HardState
	}
	if len(rd.Entries) == 0 && m.hs.Term == m.syncedHS.Term && m.hs.Vote == m.syncedHS.Vote {
		return nil, m.syncedHS
	}
	recs := m.walRecs[:0]
	for _, e := range rd.Entries {
		recs = append(recs, wal.EntryRecord(wal.Entry{Term: e.Term, Index: e.Index, Type: uint8(e.Type), Data: e.Data}))
	}
	if m.hs != m.syncedHS {
		recs = append(recs, wal.HardStateRecord(wal.HardState{Term: m.hs.Term, Vote: m.hs.Vote, Commit: m.hs.Commit}))
	}
	return recs, m.hs
}

// send hands the messages to peers to the transport (it never blocks;
// raftMu held); those to this member are stepped after Advance. A
// snapshot goes with its data on a goroutine of its own (sendSnapshot).
func (m *Member) send(msgs []raft.Message) {
	out := m.outMsgs[:0]
	for _, msg := range msgs {
		switch {
		case msg.To == m.id:
		case msg.Type == raft.MsgSnap:
			select {
			case <-m.stopping:
				m.r.ReportSnapshot(msg.To, false)
			default:
				m.done.Add(1)
				go m.sendSnapshot(msg)
			}
		default:
			out = append(out, msg)
		}
	}
	if len(out) > 0 {
		m.heartbeatsOnTime(out)
		// raftMu is held: what could not be queued is reported here.
		for _, id := range m.tr.Send(out) {
			m.r.ReportUnreachable(id)
		}
	}
	clear(out)
	m.outMsgs = out[:0]
}

// heartbeatsOnTime checks, as a leader sends heartbeats, that each
// follower's comes within two heartbeat intervals of the one before, and
// says so as etcd does when not: the leader was held up, most often by a
// slow disk (raftMu held).
func (m *Member) heartbeatsOnTime(msgs []raft.Message) {
	now := time.Now()
	for _, msg := range msgs {
		if msg.Type != raft.MsgHeartbeat {
			continue
		}
		last, seen := m.lastHeartbeat[msg.To]
		m.lastHeartbeat[msg.To] = now
		if !seen {
			continue
		}
		if exceed := now.Sub(last) - 2*m.cfg.HeartbeatInterval; exceed > 0 {
			m.log.Warn("leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk",
				"to", fmt.Sprintf("%x", msg.To), "heartbeat-interval", m.cfg.HeartbeatInterval.String(),
				"expected-duration", (2 * m.cfg.HeartbeatInterval).String(), "exceeded-duration", exceed.String())
			m.metrics.heartbeatSendFailures.Inc()
		}
	}
}

// peerHandler is what the transport delivers to.
type peerHandler struct{ m *Member }

// Process steps messages from a peer, then does what they lead to.
func (h peerHandler) Process(msgs []raft.Message) {
	m := h.m
	m.raftMu.Lock()
	if !m.raftDone {
		for _, msg := range msgs {
			_ = m.r.Step(msg)
		}
		m.advance()
	}
	m.raftMu.Unlock()
	m.applyQueued()
}

// HandleRequest answers a peer's request (handleRequest).
func (h peerHandler) HandleRequest(from uint64, req []byte) ([]byte, error) {
	return h.m.handleRequest(from, req)
}

// IsRemoved says whether id was removed from the cluster.
func (h peerHandler) IsRemoved(id uint64) bool { return h.m.eng.IsRemoved(id) }

// Removed: a peer refused this member as removed from the cluster; it
// stops (stopRemoved).
func (h peerHandler) Removed() { h.m.stopRemoved() }

// MemberList is the members as a member about to join is sent them
// (fetchCluster): the engine's, as JSON.
func (h peerHandler) MemberList() []byte {
	b, _ := json.Marshal(h.m.eng.Members())
	return b
}

// ReportUnreachable tells raft a message to id was dropped.
func (h peerHandler) ReportUnreachable(id uint64) {
	m := h.m
	m.raftMu.Lock()
	if !m.raftDone {
		m.r.ReportUnreachable(id)
	}
	m.raftMu.Unlock()
}

// MoveLeader hands leadership to transferee, a voting member, and waits
// until it leads (etcd's MoveLeader): raft's leadership transfer, which
// catches the transferee up and has it campaign at once. It fails with
// etcd's errors: not the leader, a transferee that is not a voter, or the
// transfer not done by ctx's end or requestTimeout.
func (m *Member) MoveLeader(ctx context.Context, transferee uint64) error {
	if m.Lead() != m.id {
		return rpctypes.ErrGRPCNotLeader
	}
	known := false
	for _, p := range m.eng.Members() {
		if p.ID == transferee && !p.IsLearner {
			known = true
		}
	}
	if !known {
		return rpctypes.ErrGRPCBadLeaderTransferee
	}
	if transferee == m.id {
		return nil
	}
	m.raftMu.Lock()
	if !m.raftDone {
		_ = m.r.TransferLeader(transferee)
		m.advance()
	}
	m.raftMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	tick := time.NewTicker(m.cfg.HeartbeatInterval)
	defer tick.Stop()
	for m.Lead() != transferee {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return errTimeoutLeaderTransfer
		case <-m.stopping:
			return rpctypes.ErrGRPCStopped
		}
	}
	return nil
}

// errTimeoutLeaderTransfer is etcd's answer to a MoveLeader not done in
// time (codes.Unknown: etcd's error map lacks it).
var errTimeoutLeaderTransfer = status.Error(codes.Unknown, "etcdserver: request timed out, leader transfer took too long")
