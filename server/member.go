package server

import (
	"context"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/raft"
	"github.com/cairn-kv/cairn/server/auth"
	"github.com/cairn-kv/cairn/wal"
)

// member is one member's state machine on raft. The raft core belongs to
// whoever holds raftMu, which persists each Ready to the WAL before acting
// on it: the driver goroutine for ticks, reads and snapshots, or a
// proposer that found no one taking proposals to raft (propose). Committed
// entries are applied to the engine in order by whoever holds the apply
// role: the proposer that persisted them, for one batch, or the apply
// goroutine, which also commits the engine's batches and runs the tasks
// that must not race an apply. A request alone on an idle member is thus
// proposed, made durable, applied and answered on its own goroutine; under
// load, proposals queued while one batch is made durable go to the WAL
// together with the next.
//
// Entries hold etcd's InternalRaftRequest, protobuf-encoded, whose header
// carries the id the proposer waits on; an empty entry is a leader's no-op.
type member struct {
	cfg       Config
	log       *slog.Logger
	id        uint64
	clusterID uint64

	w   *wal.WAL
	eng *engine.Store

	// The raft core and the driver's state, for whoever holds raftMu.
	raftMu sync.Mutex
	r      *raft.Raft
	// read rounds waiting for their ReadIndex, by request context.
	reads   map[[8]byte]*readRound
	readSeq uint64
	// raftDone is set once the member stops or its WAL failed: raft takes
	// nothing more.
	raftDone bool
	// leading is set once the member first knows a leader (readyc closed).
	leading bool

	// Proposals wait in props for the next proposer to take them to raft;
	// proposing says one has undertaken to (propose). propSpare is the
	// previous batch's slice, kept for reuse.
	propMu    sync.Mutex
	props     []proposal
	proposing bool
	propSpare []proposal

	// Committed entries wait in applyq, in log order, for the holder of the
	// apply role (applying). A proposer applies one batch, then kicks the
	// apply goroutine (applyKick) when more is left; applyDead is set once
	// applying failed.
	applyMu    sync.Mutex
	applyIdle  sync.Cond // signalled when the role is released
	applyq     []raft.Entry
	applySpare []raft.Entry
	applying   bool
	applyDead  bool
	applyKick  chan struct{}

	// Driver inputs. Linearizable reads join nextRead, the round the next
	// ReadIndex serves (as etcd's share one), and kick the driver with
	// readKick; the driver takes the round and starts its ReadIndex.
	readMu    sync.Mutex
	nextRead  *readRound
	readJoins uint64 // reads that joined a round, ever
	readsDone bool   // set by the driver as it stops: no round is taken after
	readKick  chan struct{}
	// taskc carries work that must run on the apply goroutine.
	taskc chan applierTask
	// snapc carries the index of a raft snapshot, durable in the page
	// file, from the applier to the driver; snapIndex is the last one
	// (applier only).
	snapc     chan uint64
	snapIndex uint64
	snapDir   string

	tokens auth.Provider

	// What the driver last saw of raft, for Status and the metrics.
	term   atomic.Uint64
	lead   atomic.Uint64
	commit atomic.Uint64

	leaderChanges atomic.Uint64

	// hs is raft's latest hard state, syncedHS the one last written
	// (driver only).
	hs, syncedHS raft.HardState
	// Scratch for advance and persist, kept between Readys (raftMu): the
	// messages to step back in and the records of a WAL write.
	selfMsgs []raft.Message
	walRecs  []wal.Record

	metrics *metrics
	// Ids for requests and leases, as etcd's generator makes them: the
	// member id's low 16 bits, then a counter started from the clock.
	idPrefix uint64
	idSuffix atomic.Uint64

	// Proposals waiting for their entries to apply, by request id. The
	// driver fails the ones past their deadline (expire) on its ticks, so
	// a proposal needs no timer of its own.
	waitMu     sync.Mutex
	waiters    map[uint64]waiter
	lastExpire time.Time // driver only
	// resultChans keeps the channels of answered proposals for reuse.
	resultChans sync.Pool

	appliedMu sync.Mutex
	applied   uint64
	appliedCh chan struct{} // closed (and replaced) when applied advances

	// physical compactions waiting for the backend's deletions.
	compactWaiters []chan applyResult

	readyc   chan struct{} // closed once the member first knows a leader
	stopping chan struct{} // closed when the member begins to stop
	done     sync.WaitGroup
	failed   atomic.Pointer[error] // the first fatal error
}

type proposal struct {
	id   uint64
	data []byte
}

// readRound is one ReadIndex shared by the linearizable reads that joined
// it before the driver took it: done is closed once index (the commit
// index the reads must see applied) or err is set.
type readRound struct {
	done     chan struct{}
	deadline time.Time // the first read's: past it the round times out
	index    uint64
	err      error
}

func (r *readRound) finish(index uint64, err error) {
	r.index, r.err = index, err
	close(r.done)
}

type waiter struct {
	ch       chan applyResult
	deadline time.Time
	// req is the request as proposed: apply on this member takes it
	// with the waiter rather than decoding the entry again.
	req *pb.InternalRaftRequest
}

type applyResult struct {
	resp proto.Message
	err  error
}

// requestTimeout bounds how long a request waits for its entry to apply.
// It goes out as etcd's "request timed out" (codes.Unavailable), never as
// DeadlineExceeded, which a client would take as its own deadline.
const requestTimeout = 7 * time.Second

// expireEvery is how often the driver looks for requests past their
// deadline: a request times out between requestTimeout and that plus
// expireEvery and a tick.
const expireEvery = 100 * time.Millisecond

// maxApplyLag is how far apply may fall behind commit before proposals
// are refused with "too many requests", etcd's 5,000 entries.
const maxApplyLag = 5000

// memberIDs derives the member and cluster ids as etcd does: the member's
// from its peer URLs and the cluster token, the cluster's from its
// members'.
func memberIDs(peerURLs []string, token string) (member, cluster uint64) {
	urls := slices.Clone(peerURLs)
	slices.Sort(urls)
	sum := sha1.Sum([]byte(strings.Join(urls, "") + token))
	member = binary.BigEndian.Uint64(sum[:8])
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], member)
	sum = sha1.Sum(b[:])
	return member, binary.BigEndian.Uint64(sum[:8])
}

func openMember(cfg Config, log *slog.Logger) (*member, error) {
	memberDir := filepath.Join(cfg.DataDir, "member")
	walDir := cfg.WALDir
	if walDir == "" {
		walDir = filepath.Join(memberDir, "wal")
	}
	snapDir := filepath.Join(memberDir, "snap")
	for _, d := range []string{walDir, snapDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	m := &member{cfg: cfg, log: log,
		readKick: make(chan struct{}, 1), taskc: make(chan applierTask), applyKick: make(chan struct{}, 1), snapc: make(chan uint64, 1), snapDir: snapDir,
		reads:   map[[8]byte]*readRound{},
		waiters: map[uint64]waiter{}, appliedCh: make(chan struct{}), readyc: make(chan struct{}), stopping: make(chan struct{})}
	m.applyIdle.L = &m.applyMu
	m.metrics = newMetrics(m)
	var err error
	if m.tokens, err = auth.New(cfg.AuthToken, cfg.AuthTokenTTL, log); err != nil {
		return nil, err
	}
	snap, err := loadSnap(snapDir, log)
	if err != nil {
		return nil, fmt.Errorf("reading the snapshots in %s: %w", snapDir, err)
	}
	var from wal.Snapshot
	if snap != nil {
		from = wal.Snapshot{Term: snap.Term, Index: snap.Index}
	}
	w, st, err := wal.Open(walDir, from, &wal.Options{SegmentSize: cfg.walSegmentSize, OnSync: func(d time.Duration) { m.metrics.walFsync.Observe(d.Seconds()) }})
	if err != nil {
		return nil, fmt.Errorf("opening the WAL in %s: %w", walDir, err)
	}
	m.w = w
	if len(st.Metadata) == 16 {
		m.id, m.clusterID = binary.LittleEndian.Uint64(st.Metadata), binary.LittleEndian.Uint64(st.Metadata[8:])
	} else {
		m.id, m.clusterID = memberIDs(cfg.InitialAdvertisePeerURLs, cfg.InitialClusterToken)
		md := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, m.id), m.clusterID)
		if err := w.Append(wal.MetadataRecord(md)); err != nil {
			w.Close()
			return nil, err
		}
	}
	db, err := pagefile.Open(filepath.Join(snapDir, "db"), nil)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening the page file: %w", err)
	}
	m.eng, err = engine.Open(db)
	if err != nil {
		db.Close()
		w.Close()
		return nil, fmt.Errorf("opening the engine: %w", err)
	}
	ci, err := m.eng.ConsistentIndex()
	if err != nil {
		m.closeStorage()
		return nil, err
	}
	if d := m.eng.Downgrade(); d.Enabled {
		// etcd 3.5 would start only a member of the target version.
		m.log.Warn("a downgrade is enabled; no cairn release speaks its target version, so this member serves on", "target-version", d.TargetVersion)
	}
	if len(m.eng.Members()) == 0 {
		// A new cluster of one: the member records itself.
		err := m.eng.AddMember(engine.Member{ID: m.id, Name: cfg.Name, PeerURLs: cfg.InitialAdvertisePeerURLs}, 1)
		if err == nil {
			err = m.eng.Commit()
		}
		if err != nil {
			m.closeStorage()
			return nil, err
		}
	}
	m.applied = ci
	if snap != nil {
		if ci < snap.Index {
			m.closeStorage()
			return nil, fmt.Errorf("the page file has applied index %d, before the snapshot at %d", ci, snap.Index)
		}
		m.snapIndex = snap.Index
	}
	// etcd's least lease TTL: one and a half election timeouts, in whole
	// seconds, so that a lease outlives a leader election.
	m.eng.SetMinLeaseTTL(int64(math.Ceil((3 * cfg.ElectionTimeout / 2).Seconds())))
	m.idPrefix = m.id << 48
	m.idSuffix.Store(uint64(time.Now().UnixMilli()) & (1<<40 - 1) << 8)

	ents := make([]raft.Entry, len(st.Entries))
	for i, e := range st.Entries {
		ents[i] = raft.Entry{Term: e.Term, Index: e.Index, Type: raft.EntryType(e.Type), Data: e.Data}
	}
	hs := raft.HardState{Term: st.HardState.Term, Vote: st.HardState.Vote, Commit: st.HardState.Commit}
	if ci > hs.Commit {
		// A commit index alone is written without a sync (as etcd's WAL
		// does), so the WAL may know less than was applied; what was applied
		// was committed, and its entries are durable.
		last := m.snapIndex
		if len(ents) > 0 {
			last = ents[len(ents)-1].Index
		}
		if last < ci {
			m.closeStorage()
			return nil, fmt.Errorf("the page file has applied index %d, past the WAL's last entry", ci)
		}
		hs.Commit = ci
	}
	m.hs, m.syncedHS = hs, hs
	electionTicks := max(int(cfg.ElectionTimeout/cfg.HeartbeatInterval), 2)
	r, err := raft.New(raft.Config{
		ID: m.id, Peers: []uint64{m.id}, ElectionTick: electionTicks, HeartbeatTick: 1,
		Rand: rand.New(rand.NewSource(time.Now().UnixNano())), PreVote: true, CheckQuorum: true,
		HardState: hs, Entries: ents, Applied: ci, Snapshot: snap,
	})
	if err != nil {
		m.closeStorage()
		return nil, err
	}
	m.r = r
	m.done.Add(4)
	go m.drive()
	go m.applyLoop()
	go m.leaseLoop()
	go m.progressLoop(cfg.WatchProgressNotifyInterval)
	if cfg.AutoCompaction.Mode != "" {
		m.done.Add(1)
		go m.autoCompactLoop(cfg.AutoCompaction)
	}
	return m, nil
}

func (m *member) closeStorage() {
	db := m.eng.Backend() // replaced by each defragmentation
	_ = m.eng.Close()
	_ = db.Close()
	_ = m.w.Close()
}

// stop ends the driver and the applier (the applier first finishes what
// it was handed) and closes the storage.
func (m *member) stop() {
	close(m.stopping)
	m.raftMu.Lock() // a proposer persisting finishes first
	m.raftDone = true
	m.raftMu.Unlock()
	m.done.Wait()
	m.closeStorage()
}

func (m *member) fail(err error) {
	if m.failed.CompareAndSwap(nil, &err) {
		m.log.Error("member failed; it stops serving writes", "err", err)
	}
}

// drive is the driver goroutine: it ticks raft, asks it for read indexes
// and records raft snapshots, each under raftMu, and applies what that
// commits. Proposals reach raft through propose.
func (m *member) drive() {
	defer m.done.Done()
	ticker := time.NewTicker(m.cfg.HeartbeatInterval)
	defer ticker.Stop()
	m.raftMu.Lock()
	// The only voter need not wait an election timeout.
	_ = m.r.Campaign()
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
			m.raftMu.Lock()
			if !m.raftDone {
				m.r.Tick()
			}
			m.expireReads(now)
		case index := <-m.snapc:
			m.raftMu.Lock()
			if !m.raftDone {
				if err := m.snapshot(index); err != nil {
					m.fail(err)
					m.raftDone = true
				}
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

// advance handles raft's Readys until it has none (raftMu held): their
// entries and hard state durable in the WAL first, then committed entries
// queued for apply, read indexes answered and messages to itself stepped.
// A WAL failure fails the member; raft takes nothing after it.
func (m *member) advance() {
	r := m.r
	for !m.raftDone && r.HasReady() {
		rd := r.Ready()
		if err := m.persist(&rd); err != nil {
			m.fail(err)
			m.raftDone = true
			return
		}
		// One member: every message is to itself (none go out yet).
		self := m.selfMsgs[:0]
		for _, msgs := range [][]raft.Message{rd.Messages, rd.MessagesAfterPersist} {
			for _, msg := range msgs {
				if msg.To == m.id {
					self = append(self, msg)
				}
			}
		}
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
// up to snapshotCatchUpEntries before it, and the WAL segments and .snap
// files past their limits go.
func (m *member) snapshot(index uint64) error {
	r := m.r
	s, err := r.SnapshotAt(index)
	if err != nil {
		return err
	}
	if err := m.w.Append(wal.SnapshotRecord(wal.Snapshot{Term: s.Term, Index: s.Index, Membership: encodeMembership(s.Voters, s.Learners)})); err != nil {
		return err
	}
	if err := writeSnap(m.snapDir, s); err != nil {
		return fmt.Errorf("writing the snapshot file: %w", err)
	}
	if index > snapshotCatchUpEntries {
		if err := r.Compact(index - snapshotCatchUpEntries); err != nil {
			return err
		}
	}
	if m.cfg.MaxWALs > 0 {
		if err := m.w.ReleaseTo(index, m.cfg.MaxWALs); err != nil {
			return fmt.Errorf("releasing WAL segments: %w", err)
		}
	}
	if err := purgeSnaps(m.snapDir, m.cfg.MaxSnapshots); err != nil {
		return fmt.Errorf("removing old snapshot files: %w", err)
	}
	m.log.Info("saved snapshot", "index", s.Index, "term", s.Term)
	return nil
}

// leaderChanged follows a change of leader: the leader's lessor counts
// expiry (every lease gets an election timeout more, so that none expires
// for time spent choosing a leader); the others' do not.
func (m *member) leaderChanged(lead uint64) {
	was := m.lead.Swap(lead)
	m.leaderChanges.Add(1)
	switch {
	case lead == m.id:
		m.eng.LeasePromote(m.cfg.ElectionTimeout)
	case was == m.id:
		m.eng.LeaseDemote()
	}
	m.log.Info("leader changed", "leader", fmt.Sprintf("%x", lead), "term", m.term.Load())
}

// persist makes a Ready's entries and hard state durable before anything
// acts on them. As in etcd, a change of the commit index alone needs no
// write of its own: it is recorded with the next entries or term/vote
// change (a restart learns commits again from the log), so a write costs
// one fsync, not two.
func (m *member) persist(rd *raft.Ready) error {
	if rd.HardState != nil {
		m.hs = *rd.HardState
	}
	mustSync := len(rd.Entries) > 0 || m.hs.Term != m.syncedHS.Term || m.hs.Vote != m.syncedHS.Vote
	if !mustSync {
		return nil
	}
	recs := m.walRecs[:0] // Append keeps none of them once it returns
	for _, e := range rd.Entries {
		recs = append(recs, wal.EntryRecord(wal.Entry{Term: e.Term, Index: e.Index, Type: uint8(e.Type), Data: e.Data}))
	}
	if m.hs != m.syncedHS {
		recs = append(recs, wal.HardStateRecord(wal.HardState{Term: m.hs.Term, Vote: m.hs.Vote, Commit: m.hs.Commit}))
	}
	err := m.w.Append(recs...)
	clear(recs)
	m.walRecs = recs[:0]
	if err != nil {
		return err
	}
	m.syncedHS = m.hs
	return nil
}

func (m *member) appliedIndex() uint64 {
	m.appliedMu.Lock()
	defer m.appliedMu.Unlock()
	return m.applied
}

func (m *member) setApplied(index uint64) {
	m.appliedMu.Lock()
	m.applied = index
	close(m.appliedCh)
	m.appliedCh = make(chan struct{})
	m.appliedMu.Unlock()
}

// waitApplied returns once index is applied.
func (m *member) waitApplied(ctx context.Context, index uint64) error {
	for {
		m.appliedMu.Lock()
		applied, ch := m.applied, m.appliedCh
		m.appliedMu.Unlock()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-m.stopping:
			return rpctypes.ErrGRPCStopped
		}
	}
}

// nextID returns a fresh id for a request or a lease.
func (m *member) nextID() uint64 {
	return m.idPrefix | m.idSuffix.Add(1)&(1<<48-1)
}

func (m *member) header(rev int64) *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: m.clusterID, MemberId: m.id, Revision: rev, RaftTerm: m.term.Load()}
}

func (m *member) register(id uint64, req *pb.InternalRaftRequest) chan applyResult {
	ch, _ := m.resultChans.Get().(chan applyResult)
	if ch == nil {
		ch = make(chan applyResult, 1)
	}
	w := waiter{ch: ch, deadline: time.Now().Add(requestTimeout), req: req}
	m.waitMu.Lock()
	m.waiters[id] = w
	m.waitMu.Unlock()
	return ch
}

// take removes and returns the waiter of request id (zero if none).
func (m *member) take(id uint64) waiter {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	w := m.waiters[id]
	delete(m.waiters, id)
	return w
}

// expireProposals answers the proposals waiting past their deadline with
// etcd's "request timed out"; their entries may still apply.
func (m *member) expireProposals(now time.Time) {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	for id, w := range m.waiters {
		if now.After(w.deadline) {
			delete(m.waiters, id)
			w.ch <- applyResult{err: rpctypes.ErrGRPCTimeout}
			m.metrics.proposalsFailed.Inc()
		}
	}
}

// expireReads answers the reads waiting for their ReadIndex past their
// deadline with "request timed out" (raftMu held).
func (m *member) expireReads(now time.Time) {
	for ctx, rd := range m.reads {
		if now.After(rd.deadline) {
			delete(m.reads, ctx)
			rd.finish(0, rpctypes.ErrGRPCTimeout)
		}
	}
}

func (m *member) trigger(id uint64, res applyResult) {
	if ch := m.take(id).ch; ch != nil {
		ch <- res
	}
}

// propose sends a request through raft and waits for its result.
func (m *member) propose(ctx context.Context, req *pb.InternalRaftRequest) (proto.Message, error) {
	if m.failed.Load() != nil {
		return nil, rpctypes.ErrGRPCStopped
	}
	if m.commit.Load() > m.appliedIndex()+maxApplyLag {
		return nil, rpctypes.ErrGRPCRequestTooManyRequests
	}
	c, err := m.authenticate(ctx)
	if err != nil {
		return nil, err
	}
	id := m.nextID()
	req.Header = &pb.RequestHeader{ID: id, Username: c.Name, AuthRevision: c.Rev}
	data, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	if len(data) > m.cfg.MaxRequestBytes {
		return nil, rpctypes.ErrGRPCRequestTooLarge
	}
	ch := m.register(id, req)
	m.propMu.Lock()
	m.props = append(m.props, proposal{id: id, data: data})
	first := !m.proposing
	m.proposing = true
	m.propMu.Unlock()
	if first {
		m.proposeQueued()
	}
	var res applyResult
	select {
	case res = <-ch: // answered at apply (above, if this proposer applied), or at the deadline
	case <-ctx.Done():
		m.take(id) // the channel may yet be answered: not reused
		return nil, ctx.Err()
	case <-m.stopping:
		m.take(id)
		return nil, rpctypes.ErrGRPCStopped
	}
	// Whoever answered took the waiter out first: no one else has ch.
	m.resultChans.Put(ch)
	return res.resp, res.err
}

// proposeQueued takes every queued proposal to raft, makes them durable
// with one WAL write and applies what commits, on the caller's goroutine.
// It waits for raftMu, held meanwhile by whoever is persisting the batch
// before: proposals queued until it has the lock go with this batch, the
// ones after with the next caller's.
func (m *member) proposeQueued() {
	m.raftMu.Lock()
	m.propMu.Lock()
	props := m.props
	m.props, m.propSpare = m.propSpare, nil
	m.proposing = false
	m.propMu.Unlock()
	for _, p := range props {
		switch {
		case m.raftDone:
			m.trigger(p.id, applyResult{err: rpctypes.ErrGRPCStopped})
		case m.r.Propose(p.data) != nil:
			m.trigger(p.id, applyResult{err: rpctypes.ErrGRPCNoLeader})
		}
	}
	m.advance()
	clear(props)
	m.propSpare = props[:0]
	m.raftMu.Unlock()
	m.applyQueued()
}

// check verifies the hand-offs between proposers, raft and apply at one
// instant: a proposer is on its way exactly when proposals are queued;
// entries queued for apply run on, in order, after what was applied; and
// with no one applying, everything raft committed is applied or queued.
func (m *member) check() error {
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
	applied, committed := m.appliedIndex(), m.r.Committed()
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
	if !m.applying && !m.applyDead && !m.raftDone && last != committed {
		return fmt.Errorf("member: applied %d and %d queued, no one applying, committed %d", applied, len(m.applyq), committed)
	}
	return nil
}

// pending is how many proposals wait for their entries to apply.
func (m *member) pending() int {
	m.waitMu.Lock()
	defer m.waitMu.Unlock()
	return len(m.waiters)
}

// linearizableRead returns once a read of the engine is linearizable:
// the leader has confirmed its leadership at some commit index, and this
// member has applied it.
func (m *member) linearizableRead(ctx context.Context) error {
	m.readMu.Lock()
	if m.readsDone {
		m.readMu.Unlock()
		return rpctypes.ErrGRPCStopped
	}
	rd := m.nextRead
	if rd == nil {
		rd = &readRound{done: make(chan struct{}), deadline: time.Now().Add(requestTimeout)}
		m.nextRead = rd
	}
	m.readJoins++
	m.readMu.Unlock()
	select {
	case m.readKick <- struct{}{}:
	default: // a kick is pending: the driver takes the round after it
	}
	// The driver finishes the round: answered, at its deadline at the
	// latest, or as the member stops.
	select {
	case <-rd.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if rd.err != nil {
		return rd.err
	}
	return m.waitApplied(ctx, rd.index)
}
