package raft

import (
	"errors"
	"fmt"
	"math/rand"
	"slices"
)

// ErrProposalDropped is returned for a proposal made with no known leader.
var ErrProposalDropped = errors.New("raft: proposal dropped")

// Errors of CheckConfChange.
var (
	ErrNotLeader         = errors.New("raft: not the leader")
	ErrConfChangePending = errors.New("raft: an earlier membership change is not committed yet")
	ErrNoVoterLeft       = errors.New("raft: the change would leave no voter")
)

// Config configures a node.
type Config struct {
	ID uint64
	// Peers and Learners: the configuration the log starts from.
	Peers    []uint64
	Learners []uint64
	// Join: the node joins an existing cluster that added it by a
	// membership change. It starts with no configuration (Peers empty) and
	// no log, and answers the leader's first append by asking for a
	// snapshot, from which it learns both: the log alone would not tell it
	// the configuration the cluster's log starts from. (It neither
	// campaigns nor counts anything meanwhile.)
	Join bool
	// ElectionTick is the ticks a follower waits without hearing a leader
	// before it campaigns (randomized in [ElectionTick, 2*ElectionTick)).
	ElectionTick int
	// HeartbeatTick is the ticks between a leader's heartbeats.
	HeartbeatTick int
	// Rand is the source of randomness (election timeouts): seed it and
	// a run is reproducible.
	Rand *rand.Rand
	// PreVote: ask whether an election could be won before raising the term.
	PreVote bool
	// CheckQuorum: a leader that has not heard from a quorum in an election
	// timeout steps down; a follower that hears a leader ignores votes.
	CheckQuorum bool
	// What the node persisted before it restarted: the last snapshot (nil if
	// none; its configuration replaces Peers and Learners), the hard state,
	// the entries after the snapshot; and what it applied.
	Snapshot  *SnapshotMeta
	HardState HardState
	Entries   []Entry
	Applied   uint64
	// MaxInflight bounds the appends in flight to one follower.
	MaxInflight int
	// MaxMsgBytes bounds the entry bytes in one append.
	MaxMsgBytes int
	// MaxInflightBytes bounds the entry bytes in flight to one follower
	// (0: only MaxInflight bounds the window).
	MaxInflightBytes int
	// LeaseReads serves ReadIndex on the leader without a heartbeat round,
	// trusting that no other leader can have been elected within an
	// election timeout of the leader last hearing a quorum. That holds only
	// if clocks on all members run at about the same rate (a paused or
	// slow-clocked leader breaks it), so it is off by default, and needs
	// CheckQuorum.
	LeaseReads bool
}

type progressState uint8

const (
	stateProbe     progressState = iota // find where the follower's log matches: one append at a time
	stateReplicate                      // stream appends, up to MaxInflight
	stateSnapshot                       // a snapshot is on its way; wait for its answer or ReportSnapshot
)

// progress is the leader's view of one follower.
type progress struct {
	// Invariant: match < next.
	match, next uint64
	state       progressState
	probeSent   bool // probe: an append is out, wait for its answer
	// snapshot: the index of the snapshot on its way.
	pendingSnapshot uint64
	// inflight: replicate: the last index of each append out, and its bytes.
	// Invariant: inflightBytes is the sum of inflight's bytes.
	inflight      []inflight
	inflightBytes int
	recentActive  bool // heard from since the last quorum check
}

type inflight struct {
	last  uint64
	bytes int
}

// Raft is one node's consensus state machine. It does no I/O and reads no
// clock: inputs are Step and Tick, outputs come out of Ready. It is not
// safe for concurrent use; one driver goroutine owns it.
type Raft struct {
	id uint64
	// Invariant: term never decreases; vote is the node voted for in term
	// (0: none), and changes only when term does.
	term  uint64
	vote  uint64
	state StateType
	// Invariant: lead is this node's id exactly when state is StateLeader.
	lead uint64
	log  *raftLog

	base          config // the configuration the log starts from
	conf          config // base plus every change in the log
	lastConfIndex uint64 // the last change in the log (0: none)
	// confBefore is the configuration before the last change in the log:
	// while that change is uncommitted, the entries up to it may also
	// commit by a majority of confBefore (maybeCommit).
	confBefore config
	// pendingConfIndex: the leader accepts no new change until this one is
	// committed. Invariant (leader): pendingConfIndex >= the index of its
	// no-op, so it changes nothing before committing in its own term.
	pendingConfIndex uint64
	// Invariant: prs has exactly the voters and learners of conf.
	prs   map[uint64]*progress
	votes map[uint64]bool

	electionElapsed           int
	heartbeatElapsed          int
	electionTimeout           int
	heartbeatTimeout          int
	randomizedElectionTimeout int
	rand                      *rand.Rand
	preVote, checkQuorum      bool
	maxInflight               int
	maxMsgBytes               int
	maxInflightBytes          int

	msgs             []Message
	msgsAfterPersist []Message
	readStates       []ReadState
	prevHS           HardState // as of the last Ready

	// Reads waiting on the leader: pendingReads for the next heartbeat
	// round (or for the first commit of the leader's term), round the one
	// in flight. A read starts a round at once; the reads that arrive while
	// one is in flight share the next.
	leaseReads bool
	// snapshot is the latest snapshot (compacted to, or installed);
	// pendingSnapshot one received and not yet installed by the driver.
	snapshot        *SnapshotMeta
	pendingSnapshot *SnapshotMeta
	// leadTransferee is the node leadership is being handed to (leader only).
	leadTransferee uint64
	// transferCampaign: this node campaigns because the leader asked it to.
	transferCampaign bool
	pendingReads     []readRequest
	round            *readRound
	roundSeq         uint64
}

// readRequest is a read waiting for its round: from the node that asked
// (which may be this one) and the caller's context.
type readRequest struct {
	from uint64
	ctx  []byte
}

// readRound is a heartbeat round confirming the leader is still the leader
// as of index.
type readRound struct {
	id    uint64
	index uint64
	reqs  []readRequest
	acks  map[uint64]bool
}

// New returns a node, restarted from what Config says it persisted.
func New(cfg Config) (*Raft, error) {
	if cfg.ID == 0 {
		return nil, errors.New("raft: node id 0 is reserved")
	}
	if len(cfg.Peers) == 0 && !cfg.Join && cfg.Snapshot == nil {
		return nil, errors.New("raft: no peers")
	}
	if cfg.Join && len(cfg.Peers)+len(cfg.Learners) > 0 {
		return nil, errors.New("raft: a joining node starts with no configuration")
	}
	if cfg.Rand == nil {
		return nil, errors.New("raft: Config.Rand is required (seed it to make runs reproducible)")
	}
	if err := validStorage(cfg); err != nil {
		return nil, err
	}
	if cfg.ElectionTick <= cfg.HeartbeatTick || cfg.HeartbeatTick <= 0 {
		return nil, fmt.Errorf("raft: election tick %d must be greater than heartbeat tick %d > 0", cfg.ElectionTick, cfg.HeartbeatTick)
	}
	r := &Raft{
		id:               cfg.ID,
		log:              newLog(snapIndex(cfg.Snapshot), snapTerm(cfg.Snapshot), cfg.Entries, cfg.HardState.Commit, cfg.Applied),
		snapshot:         cfg.Snapshot,
		base:             config{voters: slices.Sorted(slices.Values(cfg.Peers)), learners: slices.Sorted(slices.Values(cfg.Learners))},
		electionTimeout:  cfg.ElectionTick,
		heartbeatTimeout: cfg.HeartbeatTick,
		rand:             cfg.Rand,
		preVote:          cfg.PreVote,
		checkQuorum:      cfg.CheckQuorum,
		maxInflight:      max(cfg.MaxInflight, 1),
		maxMsgBytes:      cfg.MaxMsgBytes,
		leaseReads:       cfg.LeaseReads,
		maxInflightBytes: cfg.MaxInflightBytes,
	}
	if cfg.LeaseReads && !cfg.CheckQuorum {
		return nil, errors.New("raft: LeaseReads needs CheckQuorum")
	}
	if cfg.MaxInflight == 0 {
		r.maxInflight = 256
	}
	if r.maxMsgBytes == 0 {
		r.maxMsgBytes = 1 << 20
	}
	if s := cfg.Snapshot; s != nil {
		r.base = config{voters: slices.Clone(s.Voters), learners: slices.Clone(s.Learners)}
	}
	r.conf = r.base.clone()
	r.becomeFollower(cfg.HardState.Term, 0)
	r.refreshConfig()
	r.vote = cfg.HardState.Vote
	r.prevHS = r.hardState()
	return r, nil
}

// validStorage checks what the node says it persisted before trusting it.
func validStorage(cfg Config) error {
	base, baseTerm := snapIndex(cfg.Snapshot), snapTerm(cfg.Snapshot)
	last, lastTerm := base, baseTerm
	for i, e := range cfg.Entries {
		if e.Index != base+uint64(i)+1 {
			return fmt.Errorf("raft: persisted entry %d has index %d (entries must follow the snapshot at %d without a gap)", i, e.Index, base)
		}
		if e.Term < lastTerm {
			return fmt.Errorf("raft: persisted entry %d has term %d, below the term %d before it", e.Index, e.Term, lastTerm)
		}
		last, lastTerm = e.Index, e.Term
	}
	hs := cfg.HardState
	if hs.Commit > last {
		return fmt.Errorf("raft: persisted commit %d is past the last persisted entry %d", hs.Commit, last)
	}
	if lastTerm > hs.Term {
		return fmt.Errorf("raft: persisted entry of term %d is past the persisted term %d", lastTerm, hs.Term)
	}
	if cfg.Applied > max(hs.Commit, base) {
		return fmt.Errorf("raft: applied %d is past commit %d", cfg.Applied, max(hs.Commit, base))
	}
	if s := cfg.Snapshot; s != nil && len(s.Voters) == 0 {
		return errors.New("raft: snapshot with no voters")
	}
	return nil
}

func (r *Raft) hardState() HardState {
	return HardState{Term: r.term, Vote: r.vote, Commit: r.log.committed}
}

func (r *Raft) quorum() int { return len(r.conf.voters)/2 + 1 }

// --- role changes ---------------------------------------------------------

func (r *Raft) reset(term uint64) {
	if term != r.term {
		r.term = term
		r.vote = 0
	}
	r.lead = 0
	r.electionElapsed = 0
	r.heartbeatElapsed = 0
	r.randomizedElectionTimeout = r.electionTimeout + r.rand.Intn(r.electionTimeout)
	r.votes = map[uint64]bool{}
	// Reads waiting on a leader that no longer is one are dropped: the
	// caller times out and asks again.
	r.pendingReads, r.round = nil, nil
	r.leadTransferee = 0
	r.pendingConfIndex = 0
	r.prs = map[uint64]*progress{}
	for _, id := range r.members() {
		r.prs[id] = &progress{next: r.log.lastIndex() + 1}
	}
}

func (r *Raft) becomeFollower(term, lead uint64) {
	r.reset(term)
	r.lead = lead
	r.state = StateFollower
}

func (r *Raft) becomePreCandidate() {
	// The term does not change: a pre-vote disturbs no one.
	r.votes = map[uint64]bool{}
	r.lead = 0
	r.state = StatePreCandidate
}

func (r *Raft) becomeCandidate() {
	r.reset(r.term + 1)
	r.vote = r.id
	r.state = StateCandidate
}

func (r *Raft) becomeLeader() {
	r.reset(r.term)
	r.lead = r.id
	r.state = StateLeader
	// Its own log counts once durable (Advance); followers start probing.
	if pr := r.prs[r.id]; pr != nil {
		pr.match = r.log.stabled
	}
	// An empty entry of its own term: entries of earlier terms commit only
	// once one of the leader's own term does (Raft §5.4.2).
	r.appendEntries(Entry{})
	// No membership change until that entry commits: a change already in
	// the log may be uncommitted, and a leader that changes the
	// configuration before committing an entry of its own term can, with
	// changes made by leaders of other terms, form two majorities that do
	// not overlap (the single-server change bug, Ongaro 2015).
	r.pendingConfIndex = r.log.lastIndex()
	r.bcastAppend()
}

// --- input ----------------------------------------------------------------

// Tick advances logical time by one tick.
func (r *Raft) Tick() {
	r.electionElapsed++
	if r.state != StateLeader {
		if r.electionElapsed >= r.randomizedElectionTimeout && r.canCampaign() {
			r.electionElapsed = 0
			_ = r.Step(Message{Type: MsgHup, From: r.id})
		}
		return
	}
	r.heartbeatElapsed++
	if r.electionElapsed >= r.electionTimeout {
		r.electionElapsed = 0
		if r.checkQuorum {
			_ = r.Step(Message{Type: MsgCheckQuorum, From: r.id})
		}
		// A transfer not done within an election timeout is abandoned.
		r.leadTransferee = 0
	}
	if r.state == StateLeader && r.heartbeatElapsed >= r.heartbeatTimeout {
		r.heartbeatElapsed = 0
		_ = r.Step(Message{Type: MsgBeat, From: r.id})
	}
}

// Campaign starts an election now.
func (r *Raft) Campaign() error { return r.Step(Message{Type: MsgHup, From: r.id}) }

// Propose asks to append data to the log. It fails with ErrProposalDropped
// when no leader is known.
func (r *Raft) Propose(data []byte) error {
	return r.Step(Message{Type: MsgProp, From: r.id, Entries: []Entry{{Data: data}}})
}

// campaignTransfer marks the vote requests of an election the leader asked
// for: followers that still hear that leader take part anyway.
const campaignTransfer = 1

// contextWantSnapshot, on a rejected MsgAppResp: the node is joining and
// has no configuration yet; only a snapshot will do (Config.Join).
const contextWantSnapshot = 1

// TransferLeader asks the leader to hand leadership to the node to. It is
// forwarded when this node is not the leader.
func (r *Raft) TransferLeader(to uint64) error {
	return r.Step(Message{Type: MsgTransferLeader, From: r.id, Context: to})
}

// ReadIndex asks for a linearizable read: a ReadState with ctx comes out of
// a later Ready once it is safe to read at its index. With no known leader
// it fails with ErrProposalDropped.
func (r *Raft) ReadIndex(ctx []byte) error {
	return r.Step(Message{Type: MsgReadIndex, From: r.id, Entries: []Entry{{Data: ctx}}})
}

// Step feeds a message to the node: from a peer, or a local one.
func (r *Raft) Step(m Message) error {
	if err := r.valid(m); err != nil {
		return err
	}
	switch {
	case m.Term == 0:
		// Local messages and proposals carry no term.
	case m.Term > r.term:
		if m.Type == MsgVote || m.Type == MsgPreVote {
			// A follower that hears a leader ignores elections: a node cut
			// off and back cannot depose a working leader.
			if r.checkQuorum && r.lead != 0 && r.electionElapsed < r.electionTimeout && m.Context != campaignTransfer {
				return nil
			}
		}
		switch {
		case m.Type == MsgPreVote:
			// Answering a pre-vote never changes the term.
		case m.Type == MsgPreVoteResp && !m.Reject:
			// A granted pre-vote carries the term the election would have.
		case m.Type == MsgApp || m.Type == MsgHeartbeat:
			r.becomeFollower(m.Term, m.From)
		default:
			r.becomeFollower(m.Term, 0)
		}
	case m.Term < r.term:
		switch {
		case (r.checkQuorum || r.preVote) && (m.Type == MsgApp || m.Type == MsgHeartbeat):
			// A deposed leader learns the new term and steps down.
			r.send(Message{Type: MsgAppResp, To: m.From})
		case m.Type == MsgPreVote:
			r.send(Message{Type: MsgPreVoteResp, To: m.From, Term: r.term, Reject: true})
		}
		return nil
	}

	switch m.Type {
	case MsgHup:
		if r.state != StateLeader && r.canCampaign() {
			// With PreVote every election starts with a pre-vote, a
			// pre-candidate's next one too: one that could not win its
			// pre-vote (cut off, or its peers still hear a leader) must not
			// raise its term, or it deposes the leader when it is back.
			r.campaign(r.preVote)
		}
		return nil
	case MsgVote, MsgPreVote:
		r.handleVote(m)
		return nil
	}
	switch r.state {
	case StateLeader:
		return r.stepLeader(m)
	case StateCandidate, StatePreCandidate:
		return r.stepCandidate(m)
	default:
		return r.stepFollower(m)
	}
}

// valid rejects messages that could only come from a confused sender.
func (r *Raft) valid(m Message) error {
	if m.Type.isLocal() && m.From != r.id {
		return fmt.Errorf("raft: local message %v from %d", m.Type, m.From)
	}
	if !m.Type.isLocal() && m.Type != MsgProp && m.Type != MsgReadIndex && m.Type != MsgTransferLeader && m.To != r.id {
		return fmt.Errorf("raft: message to %d delivered to %d", m.To, r.id)
	}
	if m.Type != MsgProp && m.Type != MsgReadIndex && m.Type != MsgTransferLeader && !m.Type.isLocal() && m.Term == 0 && m.Type != MsgAppResp {
		return fmt.Errorf("raft: %v without a term", m.Type)
	}
	for i, e := range m.Entries {
		if m.Type == MsgApp && e.Index != m.Index+uint64(i)+1 {
			return fmt.Errorf("raft: MsgApp entries are not consecutive after %d", m.Index)
		}
	}
	return nil
}

// campaign starts a pre-vote or an election.
func (r *Raft) campaign(pre bool) {
	var term uint64
	var typ MessageType
	if pre {
		r.becomePreCandidate()
		term, typ = r.term+1, MsgPreVote
		r.votes[r.id] = true
	} else {
		r.becomeCandidate()
		term, typ = r.term, MsgVote
		// The node's vote for itself counts once durable: it comes back as
		// a message after the persist.
		r.sendAfterPersist(Message{Type: MsgVoteResp, To: r.id, From: r.id, Term: term})
	}
	if pre && r.tally() {
		r.campaign(false)
		return
	}
	var ctx uint64
	if r.transferCampaign {
		ctx = campaignTransfer
		r.transferCampaign = false
	}
	for _, id := range r.conf.voters {
		if id != r.id {
			r.send(Message{Type: typ, To: id, Term: term, Index: r.log.lastIndex(), LogTerm: r.log.lastTerm(), Context: ctx})
		}
	}
}

// tally reports whether the votes so far are a quorum of grants.
func (r *Raft) tally() bool {
	granted := 0
	for id, g := range r.votes {
		if g && r.isVoter(id) {
			granted++
		}
	}
	return granted >= r.quorum()
}

func (r *Raft) lostVote() bool {
	rejected := 0
	for id, g := range r.votes {
		if !g && r.isVoter(id) {
			rejected++
		}
	}
	return rejected > len(r.conf.voters)-r.quorum()
}

func (r *Raft) handleVote(m Message) {
	// A vote can go to whoever already has it, or to anyone while there is
	// neither a vote nor a known leader in this term; a pre-vote for a
	// later term can always be granted.
	canVote := r.vote == m.From || (r.vote == 0 && r.lead == 0) || (m.Type == MsgPreVote && m.Term > r.term)
	resp := MsgVoteResp
	if m.Type == MsgPreVote {
		resp = MsgPreVoteResp
	}
	if canVote && r.log.isUpToDate(m.Index, m.LogTerm) {
		if m.Type == MsgVote {
			r.electionElapsed = 0
			r.vote = m.From
		}
		// A granted pre-vote answers with the term it was asked about.
		r.sendAfterPersist(Message{Type: resp, To: m.From, Term: m.Term})
		return
	}
	r.sendAfterPersist(Message{Type: resp, To: m.From, Term: r.term, Reject: true})
}

func (r *Raft) stepCandidate(m Message) error {
	switch m.Type {
	case MsgProp, MsgReadIndex, MsgTransferLeader:
		return ErrProposalDropped
	case MsgApp, MsgHeartbeat, MsgSnap:
		// A leader of this term exists.
		r.becomeFollower(m.Term, m.From)
		return r.stepFollower(m)
	case MsgVoteResp, MsgPreVoteResp:
		if (m.Type == MsgPreVoteResp) != (r.state == StatePreCandidate) {
			return nil // an answer to an earlier phase
		}
		r.votes[m.From] = !m.Reject
		switch {
		case r.tally():
			if r.state == StatePreCandidate {
				r.campaign(false)
			} else {
				r.becomeLeader()
			}
		case r.lostVote():
			r.becomeFollower(r.term, 0)
		}
	}
	return nil
}

func (r *Raft) stepFollower(m Message) error {
	switch m.Type {
	case MsgProp, MsgReadIndex, MsgTransferLeader:
		// Requests for the leader go to it; with none known they fail.
		if r.lead == 0 {
			return ErrProposalDropped
		}
		m.To = r.lead
		r.send(m)
	case MsgApp:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleAppend(m)
	case MsgHeartbeat:
		r.electionElapsed = 0
		r.lead = m.From
		r.log.commitTo(min(m.Commit, r.log.lastIndex()))
		r.send(Message{Type: MsgHeartbeatResp, To: m.From, Context: m.Context})
	case MsgReadIndexResp:
		r.readStates = append(r.readStates, ReadState{Index: m.Index, RequestCtx: m.Entries[0].Data})
	case MsgSnap:
		r.electionElapsed = 0
		r.lead = m.From
		r.handleSnapshot(m)
	case MsgTimeoutNow:
		// The leader hands over: campaign at once, no pre-vote (the
		// leader's followers would refuse it while they hear the leader).
		if r.canCampaign() {
			r.transferCampaign = true
			r.campaign(false)
		}
	}
	return nil
}

func (r *Raft) handleAppend(m Message) {
	if len(r.conf.voters) == 0 {
		// Joining, with no snapshot yet (Config.Join).
		r.sendAfterPersist(Message{Type: MsgAppResp, To: m.From, Index: m.Index, Reject: true, Context: contextWantSnapshot})
		return
	}
	if m.Index < r.log.committed {
		r.sendAfterPersist(Message{Type: MsgAppResp, To: m.From, Index: r.log.committed})
		return
	}
	before := r.log.lastIndex()
	if last, ok := r.log.maybeAppend(m.Index, m.LogTerm, m.Commit, m.Entries); ok {
		if t := r.log.truncatedFrom; t != 0 && t <= before {
			r.capPendingAcks(t - 1)
		}
		if r.confTouched(m.Entries) {
			r.refreshConfig()
		}
		r.sendAfterPersist(Message{Type: MsgAppResp, To: m.From, Index: last})
		return
	}
	r.sendAfterPersist(Message{Type: MsgAppResp, To: m.From, Index: m.Index, Reject: true, RejectHint: r.log.lastIndex()})
}

// handleSnapshot takes a leader's snapshot, unless the log already holds
// what it covers.
func (r *Raft) handleSnapshot(m Message) {
	s := m.Snapshot
	switch {
	case s == nil:
		return
	case s.Index <= r.log.committed:
		r.sendAfterPersist(Message{Type: MsgAppResp, To: m.From, Index: r.log.committed})
		return
	case r.log.matchTerm(s.Index, s.Term):
		// The log has the snapshot's last entry: just commit up to it.
		r.log.commitTo(s.Index)
		r.sendAfterPersist(Message{Type: MsgAppResp, To: m.From, Index: s.Index})
		return
	}
	cp := *s
	r.capPendingAcks(s.Index)
	r.log.restore(s.Index, s.Term)
	r.snapshot, r.pendingSnapshot = &cp, &cp
	r.base = config{voters: slices.Clone(s.Voters), learners: slices.Clone(s.Learners)}
	r.refreshConfig()
	r.sendAfterPersist(Message{Type: MsgAppResp, To: m.From, Index: s.Index})
}

// capPendingAcks limits the append acknowledgements not yet sent to index:
// the entries after it were just replaced, so what an earlier message in
// the same Ready acknowledged is no longer what will be on disk. (An old
// leader counting such an acknowledgement could commit an entry this node
// no longer holds.) The entries up to index are unchanged.
func (r *Raft) capPendingAcks(index uint64) {
	for i := range r.msgsAfterPersist {
		m := &r.msgsAfterPersist[i]
		if m.Type == MsgAppResp && !m.Reject && m.Index > index {
			m.Index = index
		}
	}
}

// Compact drops the log up to index, which the application has applied
// and saved in a snapshot of its state; the snapshot's metadata is kept to
// send to followers that need what was dropped.
func (r *Raft) Compact(index uint64) error {
	if index <= r.log.offset {
		return nil
	}
	s, c, err := r.snapshotAt(index)
	if err != nil {
		return err
	}
	r.snapshot = &s
	r.base = c
	r.log.compact(index)
	r.refreshConfig()
	return nil
}

// CatchUpFrom returns where to compact the log to (Compact) so that it
// keeps, up to index, at most keep entries holding at most maxBytes of
// data together: entries for a follower a little behind, bounded in
// memory whatever the entries' size. It returns index if not even the
// entry at index fits.
func (r *Raft) CatchUpFrom(index, keep uint64, maxBytes int) uint64 {
	c, n := min(index, r.log.lastIndex()), 0
	for c > r.log.offset && index-c < keep {
		size := len(r.log.at(c).Data)
		if n+size > maxBytes {
			break
		}
		n += size
		c--
	}
	return c
}

// SnapshotAt returns the metadata of a snapshot of the state at index,
// which the application has applied: the entry's term and the
// configuration in force after it. The log is left as it is (Compact
// drops entries).
func (r *Raft) SnapshotAt(index uint64) (SnapshotMeta, error) {
	s, _, err := r.snapshotAt(index)
	return s, err
}

// snapshotAt is SnapshotAt, with the configuration at index (a walk of the
// log from its start, made once).
func (r *Raft) snapshotAt(index uint64) (SnapshotMeta, config, error) {
	if index > r.log.applied {
		return SnapshotMeta{}, config{}, fmt.Errorf("raft: snapshot at %d, past applied %d", index, r.log.applied)
	}
	t, ok := r.log.term(index)
	if !ok {
		return SnapshotMeta{}, config{}, fmt.Errorf("raft: snapshot at %d, not in the log (from %d)", index, r.log.offset)
	}
	c := r.confAt(index)
	return SnapshotMeta{Index: index, Term: t, Voters: slices.Clone(c.voters), Learners: slices.Clone(c.learners)}, c, nil
}

// Snapshot returns the latest snapshot's metadata (nil if none).
func (r *Raft) Snapshot() *SnapshotMeta { return r.snapshot }

func snapIndex(s *SnapshotMeta) uint64 {
	if s == nil {
		return 0
	}
	return s.Index
}

func snapTerm(s *SnapshotMeta) uint64 {
	if s == nil {
		return 0
	}
	return s.Term
}

func (r *Raft) stepLeader(m Message) error {
	switch m.Type {
	case MsgBeat:
		r.bcastHeartbeat()
	case MsgCheckQuorum:
		active := 0
		for id, pr := range r.prs {
			if r.isVoter(id) && (id == r.id || pr.recentActive) {
				active++
			}
			pr.recentActive = false
		}
		if active < r.quorum() {
			r.becomeFollower(r.term, 0)
		}
	case MsgTransferLeader:
		to := m.Context
		if to == r.id || !r.isVoter(to) || to == r.leadTransferee {
			return nil
		}
		r.leadTransferee = to
		r.electionElapsed = 0 // the transfer must finish within an election timeout
		if r.prs[to].match == r.log.lastIndex() {
			r.send(Message{Type: MsgTimeoutNow, To: to})
		} else {
			r.sendAppend(to)
		}
	case MsgProp:
		if r.leadTransferee != 0 {
			return ErrProposalDropped
		}
		ents := make([]Entry, len(m.Entries))
		conf := false
		for i, e := range m.Entries {
			ents[i] = Entry{Type: e.Type, Data: e.Data}
			if e.Type != EntryConfChange {
				continue
			}
			// One change at a time, and only one that makes sense now;
			// otherwise the entry goes in empty.
			cc, err := DecodeConfChange(e.Data)
			if err == nil {
				err = r.confChangeAllowed(cc)
			}
			if err != nil {
				ents[i] = Entry{}
				continue
			}
			r.pendingConfIndex = r.log.lastIndex() + uint64(i) + 1
			conf = true
		}
		r.appendEntries(ents...)
		if conf {
			r.refreshConfig()
		}
		r.bcastAppend()
	case MsgAppResp:
		pr := r.prs[m.From]
		if pr == nil {
			return nil // no longer a member
		}
		pr.recentActive = true
		if m.Reject {
			if m.Context == contextWantSnapshot {
				r.sendSnapshot(m.From)
				return nil
			}
			if pr.maybeDecrTo(m.Index, m.RejectHint) {
				pr.becomeProbe()
				r.sendAppend(m.From)
			}
			return nil
		}
		if pr.maybeUpdate(m.Index) {
			switch pr.state {
			case stateProbe:
				pr.becomeReplicate()
			case stateSnapshot:
				pr.becomeProbe() // installed: find the match from there
			}
			if m.From == r.leadTransferee && pr.match == r.log.lastIndex() {
				r.send(Message{Type: MsgTimeoutNow, To: m.From})
			}
			if r.maybeCommit() {
				r.bcastAppend()
			} else if pr.next <= r.log.lastIndex() {
				r.sendAppend(m.From)
			}
		}
	case MsgReadIndex:
		if len(m.Entries) != 1 {
			return fmt.Errorf("raft: MsgReadIndex with %d entries", len(m.Entries))
		}
		r.pendingReads = append(r.pendingReads, readRequest{from: m.From, ctx: m.Entries[0].Data})
		r.startReadRound()
	case MsgHeartbeatResp:
		pr := r.prs[m.From]
		if pr == nil {
			return nil
		}
		pr.recentActive = true
		pr.probeSent = false
		if rd := r.round; rd != nil && m.Context == rd.id && r.isVoter(m.From) {
			rd.acks[m.From] = true
			if len(rd.acks) >= r.quorum() {
				r.round = nil
				r.releaseReads(rd.index, rd.reqs)
				r.startReadRound()
			}
		}
		if pr.state == stateReplicate && pr.paused(r.maxInflight, r.maxInflightBytes) {
			// The appends in flight may all have been lost: free a slot,
			// so the next append shows the gap and the follower's
			// rejection sends the leader back to probing.
			pr.freeInflight(0, true)
		}
		if pr.match < r.log.lastIndex() {
			r.sendAppend(m.From)
		}
	}
	return nil
}

// startReadRound starts a heartbeat round for the waiting reads, unless
// one is in flight (they wait for the next) or the leader has not yet
// committed an entry of its own term (its commit index may then be behind
// what an earlier leader committed).
func (r *Raft) startReadRound() {
	if r.round != nil || len(r.pendingReads) == 0 {
		return
	}
	if t, _ := r.log.term(r.log.committed); t != r.term {
		return
	}
	reqs := r.pendingReads
	r.pendingReads = nil
	if r.leaseReads || (len(r.conf.voters) == 1 && r.isVoter(r.id)) {
		r.releaseReads(r.log.committed, reqs)
		return
	}
	r.roundSeq++
	r.round = &readRound{id: r.roundSeq, index: r.log.committed, reqs: reqs, acks: map[uint64]bool{}}
	if r.isVoter(r.id) {
		r.round.acks[r.id] = true
	}
	for _, id := range r.conf.voters {
		if id != r.id {
			pr := r.prs[id]
			r.send(Message{Type: MsgHeartbeat, To: id, Commit: min(pr.match, r.log.committed), Context: r.round.id})
		}
	}
}

// releaseReads answers reads confirmed at index.
func (r *Raft) releaseReads(index uint64, reqs []readRequest) {
	for _, q := range reqs {
		if q.from == r.id {
			r.readStates = append(r.readStates, ReadState{Index: index, RequestCtx: q.ctx})
		} else {
			r.send(Message{Type: MsgReadIndexResp, To: q.from, Index: index, Entries: []Entry{{Data: q.ctx}}})
		}
	}
}

// appendEntries adds entries of the current term to the leader's log.
func (r *Raft) appendEntries(ents ...Entry) {
	last := r.log.lastIndex()
	for i := range ents {
		ents[i].Term = r.term
		ents[i].Index = last + uint64(i) + 1
	}
	r.log.truncateAndAppend(ents)
}

// maybeCommit advances the commit index to the highest index a quorum has
// durable, if that entry is of the leader's term.
func (r *Raft) maybeCommit() bool {
	idx := r.quorumMatch(r.conf.voters)
	if c := r.lastConfIndex; c > r.log.committed && len(r.confBefore.voters) > 0 {
		// The change at c, uncommitted, and the entries before it commit
		// by a majority of either configuration: any majority of one
		// meets any majority of the other (they differ by one voter), so
		// a leader elected in either has them. Without this, a cluster of
		// one could never commit the addition of a second voter before
		// that voter runs, and etcd's "member add" then "start it" would
		// wait on itself.
		idx = max(idx, min(c, r.quorumMatch(r.confBefore.voters)))
	}
	if idx <= r.log.committed {
		return false
	}
	if t, _ := r.log.term(idx); t != r.term {
		return false
	}
	r.log.commitTo(idx)
	r.startReadRound() // reads held for the first commit of the term
	r.maybeStepDownRemoved()
	return true
}

// quorumMatch returns the highest index a majority of voters have (a voter
// no longer tracked counts as having nothing).
func (r *Raft) quorumMatch(voters []uint64) uint64 {
	matches := make([]uint64, 0, len(voters))
	for _, id := range voters {
		var m uint64
		if pr := r.prs[id]; pr != nil {
			m = pr.match
		}
		matches = append(matches, m)
	}
	return quorumIndex(matches, len(voters)/2+1)
}

// quorumIndex returns the highest index at least q of the matches reach.
func quorumIndex(matches []uint64, q int) uint64 {
	s := slices.Clone(matches)
	slices.Sort(s)
	return s[len(s)-q]
}

func (r *Raft) bcastAppend() {
	if r.state != StateLeader {
		return
	}
	for _, id := range r.members() {
		if id != r.id {
			r.sendAppend(id)
		}
	}
}

func (r *Raft) bcastHeartbeat() {
	for _, id := range r.members() {
		if id != r.id {
			pr := r.prs[id]
			r.send(Message{Type: MsgHeartbeat, To: id, Commit: min(pr.match, r.log.committed)})
		}
	}
}

// sendAppend sends the follower the entries it lacks (or just the commit
// index), unless the window to it is full.
func (r *Raft) sendAppend(to uint64) {
	pr := r.prs[to]
	if pr.paused(r.maxInflight, r.maxInflightBytes) {
		return
	}
	prev := pr.next - 1
	prevTerm, ok := r.log.term(prev)
	if !ok {
		if prev > r.log.lastIndex() {
			panic(fmt.Sprintf("raft: progress of %d is past the log (next %d, last %d)", to, pr.next, r.log.lastIndex()))
		}
		// The entries it needs are compacted: send the snapshot.
		s := *r.snapshot
		r.sendSnapshotMeta(to, &s)
		return
	}
	hi, size := pr.next, 0
	for hi <= r.log.lastIndex() && (hi == pr.next || size+len(r.log.at(hi).Data) <= r.maxMsgBytes) {
		size += len(r.log.at(hi).Data)
		hi++
	}
	ents := r.log.slice(pr.next, hi)
	r.send(Message{Type: MsgApp, To: to, Index: prev, LogTerm: prevTerm, Entries: ents, Commit: r.log.committed})
	switch pr.state {
	case stateProbe:
		pr.probeSent = true
	case stateReplicate:
		if len(ents) > 0 {
			pr.next = hi
			pr.inflight = append(pr.inflight, inflight{last: hi - 1, bytes: size})
			pr.inflightBytes += size
		}
	}
}

// sendSnapshot sends a joining follower that asked for one (Config.Join) a
// snapshot as of the leader's applied index, unless one is on its way.
func (r *Raft) sendSnapshot(to uint64) {
	pr := r.prs[to]
	if pr.state == stateSnapshot {
		return
	}
	s := r.snapshot
	if a := r.log.applied; s == nil || a > s.Index {
		meta, err := r.SnapshotAt(a)
		if err != nil {
			return // nothing applied yet: its next answer asks again
		}
		s = &meta
	}
	cp := *s
	r.sendSnapshotMeta(to, &cp)
}

// sendSnapshotMeta sends s to a follower, which waits for its answer (or
// ReportSnapshot) before anything else is sent to it.
func (r *Raft) sendSnapshotMeta(to uint64, s *SnapshotMeta) {
	pr := r.prs[to]
	pr.state, pr.probeSent, pr.inflight, pr.inflightBytes, pr.next = stateSnapshot, true, pr.inflight[:0], 0, s.Index+1
	pr.pendingSnapshot = s.Index
	r.send(Message{Type: MsgSnap, To: to, Snapshot: s})
}

// send queues a message to send now; sendAfterPersist one that may only go
// once the Ready it comes out in is durable.
func (r *Raft) send(m Message) {
	m.From = r.id
	if m.Term == 0 && m.Type != MsgProp && m.Type != MsgReadIndex && m.Type != MsgTransferLeader {
		m.Term = r.term
	}
	r.msgs = append(r.msgs, m)
}

func (r *Raft) sendAfterPersist(m Message) {
	m.From = r.id
	if m.Term == 0 {
		m.Term = r.term
	}
	r.msgsAfterPersist = append(r.msgsAfterPersist, m)
}

// --- progress ---------------------------------------------------------------

func (pr *progress) paused(maxInflight, maxBytes int) bool {
	switch pr.state {
	case stateSnapshot:
		// Nothing goes out until the snapshot is answered or reported
		// (a heartbeat's answer does not resend it).
		return true
	case stateProbe:
		return pr.probeSent
	}
	return len(pr.inflight) >= maxInflight || (maxBytes > 0 && pr.inflightBytes >= maxBytes)
}

// freeInflight forgets the appends in flight up to index (all if index is
// the maximum), or the oldest one alone with oldest.
func (pr *progress) freeInflight(index uint64, oldest bool) {
	for len(pr.inflight) > 0 && (pr.inflight[0].last <= index || oldest) {
		pr.inflightBytes -= pr.inflight[0].bytes
		pr.inflight = pr.inflight[1:]
		oldest = false
	}
}

func (pr *progress) becomeProbe() {
	pr.state = stateProbe
	pr.probeSent = false
	pr.pendingSnapshot = 0
	pr.inflight, pr.inflightBytes = pr.inflight[:0], 0
	pr.next = pr.match + 1
}

func (pr *progress) becomeReplicate() {
	pr.state = stateReplicate
	pr.probeSent = false
	pr.next = pr.match + 1
	pr.inflight, pr.inflightBytes = pr.inflight[:0], 0
}

// maybeUpdate records that the follower has everything up to index.
func (pr *progress) maybeUpdate(index uint64) bool {
	updated := false
	if index > pr.match {
		pr.match = index
		updated = true
		pr.probeSent = false
	}
	pr.next = max(pr.next, index+1)
	pr.freeInflight(index, false)
	return updated
}

// maybeDecrTo handles a rejected append for index; hint is the follower's
// last index. It reports whether next moved back.
func (pr *progress) maybeDecrTo(rejected, hint uint64) bool {
	if pr.state == stateReplicate {
		if rejected <= pr.match {
			return false // stale
		}
		pr.next = pr.match + 1
		return true
	}
	// Probing, or a snapshot that may have been lost.
	if pr.next-1 != rejected {
		return false // stale
	}
	pr.next = max(min(rejected, hint+1), pr.match+1, 1)
	pr.probeSent = false
	return true
}

// --- output -----------------------------------------------------------------

// HasReady reports whether Ready has anything.
func (r *Raft) HasReady() bool {
	return r.hardState() != r.prevHS || r.pendingSnapshot != nil || r.log.stabled < r.log.lastIndex() ||
		len(r.log.toApply()) > 0 || len(r.msgs) > 0 || len(r.msgsAfterPersist) > 0 || len(r.readStates) > 0
}

// Ready returns what the driver must do next. Handle it, then call
// Advance with it; ask for no other Ready before that. The node may be
// stepped, ticked and proposed to meanwhile (a driver persists the Ready
// while it steps peer messages): what that produces comes out in the next
// Ready, and Advance counts only what this Ready's entries still match.
func (r *Raft) Ready() Ready {
	rd := Ready{
		Entries:              r.log.unstable(),
		CommittedEntries:     r.log.toApply(),
		Messages:             r.msgs,
		MessagesAfterPersist: r.msgsAfterPersist,
		ReadStates:           r.readStates,
		Snapshot:             r.pendingSnapshot,
	}
	if hs := r.hardState(); hs != r.prevHS {
		rd.HardState = &hs
	}
	r.msgs, r.msgsAfterPersist, r.readStates = nil, nil, nil
	return rd
}

// Advance tells the node the Ready was handled: its entries and hard state
// are durable and its committed entries applied.
func (r *Raft) Advance(rd Ready) {
	if rd.Snapshot != nil && rd.Snapshot == r.pendingSnapshot {
		r.log.applied = rd.Snapshot.Index
		r.pendingSnapshot = nil
	}
	if n := len(rd.Entries); n > 0 {
		last := rd.Entries[n-1]
		if r.log.matchTerm(last.Index, last.Term) && last.Index > r.log.stabled {
			r.log.stabled = last.Index
		}
	}
	if n := len(rd.CommittedEntries); n > 0 {
		r.log.applied = rd.CommittedEntries[n-1].Index
	}
	if rd.HardState != nil {
		r.prevHS = *rd.HardState
	}
	if r.state == StateLeader {
		// The leader's own log counts toward commit once durable.
		if pr := r.prs[r.id]; pr != nil && pr.maybeUpdate(r.log.stabled) && r.maybeCommit() {
			r.bcastAppend()
		}
	}
}

// Status describes the node.
type Status struct {
	ID, Term, Vote, Commit, Applied, Lead uint64
	State                                 StateType
	LastIndex                             uint64
	LeadTransferee                        uint64 // leader: a transfer in progress
	// Progress is the leader's view of each voter (nil on followers).
	Progress map[uint64]ProgressStatus
}

// ProgressStatus is the leader's view of one voter.
type ProgressStatus struct {
	Match, Next   uint64
	Replicating   bool   // streaming appends (else probing, or sending a snapshot)
	Snapshot      uint64 // the index of the snapshot on its way (0: none)
	Inflight      int    // appends in flight
	InflightBytes int    // their entry bytes
}

// Term returns the node's current term.
func (r *Raft) Term() uint64 { return r.term }

// Lead returns the leader the node knows of (0: none).
func (r *Raft) Lead() uint64 { return r.lead }

// ReportUnreachable tells the leader that a message to id could not be
// delivered (the transport dropped it, or lost its connection): a
// follower it was streaming appends to goes back to probing, so that the
// next append finds where its log ends rather than waiting for the window
// of appends in flight to drain.
func (r *Raft) ReportUnreachable(id uint64) {
	if r.state != StateLeader {
		return
	}
	if pr := r.prs[id]; pr != nil && id != r.id && pr.state == stateReplicate {
		pr.becomeProbe()
	}
}

// ReportSnapshot tells the leader how the snapshot it sent id ended: sent
// whole (ok), or failed. Either way the follower is probed again, not
// sooner than the next heartbeat's answer: after a success from the
// snapshot's index (the follower's acknowledgement may already be on its
// way), after a failure from its last known match, which sends the
// snapshot again if the log no longer holds what it needs.
func (r *Raft) ReportSnapshot(id uint64, ok bool) {
	if r.state != StateLeader {
		return
	}
	pr := r.prs[id]
	if pr == nil || id == r.id || pr.state != stateSnapshot {
		return
	}
	sent := pr.pendingSnapshot
	pr.becomeProbe()
	if ok {
		pr.next = max(pr.next, sent+1)
	}
	pr.probeSent = true
}

// Applied returns the index of the last committed entry the node has
// handed out and had advanced (its driver may have applied more, out of
// the Ready it is still persisting).
func (r *Raft) Applied() uint64 { return r.log.applied }

// Committed returns the highest log index the node knows is committed.
func (r *Raft) Committed() uint64 { return r.log.committed }

// Status returns the node's state.
func (r *Raft) Status() Status {
	st := Status{ID: r.id, Term: r.term, Vote: r.vote, Commit: r.log.committed, Applied: r.log.applied,
		Lead: r.lead, State: r.state, LastIndex: r.log.lastIndex(), LeadTransferee: r.leadTransferee}
	if r.state == StateLeader {
		st.Progress = map[uint64]ProgressStatus{}
		for id, pr := range r.prs {
			st.Progress[id] = ProgressStatus{Match: pr.match, Next: pr.next, Replicating: pr.state == stateReplicate, Snapshot: pr.pendingSnapshot, Inflight: len(pr.inflight), InflightBytes: pr.inflightBytes}
		}
	}
	return st
}
