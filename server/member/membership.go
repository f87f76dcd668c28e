package member

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"slices"
	"strconv"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/raft"
	"github.com/cairn-kv/cairn/server/convert"
	"github.com/cairn-kv/cairn/server/transport"
	"github.com/cairn-kv/cairn/wal"
)

// Membership changes (etcd's MemberAdd, MemberRemove, MemberUpdate and
// MemberPromote) are raft configuration changes, one at a time, proposed
// by the leader only: a follower forwards the request (forward.go). The
// leader checks a change against its engine's membership once every
// change before it in the log is applied (so the check sees what the
// change will meet at apply), and against raft (CheckConfChange); the
// entry carries the member as the change leaves it (confContext), and its
// apply records that in the engine and the transport on every member. A
// member that applies its own removal stops.

// ErrMemberRemoved is what a member removed from its cluster stops with.
var ErrMemberRemoved = errors.New("the member has been permanently removed from the cluster")

// Requests a follower forwards to the leader (forward.go).
const (
	requestMemberAdd     byte = 3
	requestMemberRemove  byte = 4
	requestMemberUpdate  byte = 5
	requestMemberPromote byte = 6
)

// confContext is what a change's entry carries beside raft's change: the
// id the proposer waits on, and the member (add: all of it; update: its
// peer URLs).
type confContext struct {
	Req    uint64        `json:"req"`
	Member engine.Member `json:"member"`
}

// Strict reconfiguration checks, as etcd's: a peer counts as connected
// once its stream has been up this long; a learner is ready for promotion
// once its log matches this share of the leader's.
const (
	healthInterval    = 5 * time.Second
	learnerReadyShare = 0.9
)

// addedMemberID derives the id of a member added at runtime as etcd does:
// MemberID with the time in seconds for the token, so that a member added
// again at the same URLs gets a new id.
func addedMemberID(peerURLs []string, now time.Time) uint64 {
	return MemberID(peerURLs, strconv.FormatInt(now.Unix(), 10))
}

// validPeerURLs checks URLs as etcd's types.NewURLs does: each a peer URL
// the transport takes, with a port and no path.
func validPeerURLs(urls []string) bool {
	if len(urls) == 0 {
		return false
	}
	for _, s := range urls {
		u, err := transport.ParsePeerURL(s)
		if err != nil || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return false
		}
	}
	return true
}

// MemberAdd adds a member (a learner if asked), unstarted until it
// publishes its name: etcd's MemberAdd.
func (m *Member) MemberAdd(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	if !validPeerURLs(r.PeerURLs) {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	resp := &pb.MemberAddResponse{}
	if forwarded, err := m.forwardChange(ctx, requestMemberAdd, r, resp); forwarded {
		return resp, err
	}
	return m.memberAddLocal(ctx, r)
}

func (m *Member) memberAddLocal(ctx context.Context, r *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	add := engine.Member{ID: addedMemberID(r.PeerURLs, time.Now()), PeerURLs: slices.Clone(r.PeerURLs), IsLearner: r.IsLearner}
	typ := raft.ConfAddVoter
	if add.IsLearner {
		typ = raft.ConfAddLearner
	}
	members, err := m.changeMembership(ctx, raft.ConfChange{Type: typ, NodeID: add.ID}, add, func() error {
		if err := m.eng.CheckAddMember(add, m.cfg.maxLearners()); err != nil {
			return err
		}
		if add.IsLearner || m.cfg.NoStrictReconfigCheck {
			return nil
		}
		if !m.readyToAddVoter() {
			return rpctypes.ErrGRPCMemberNotEnoughStarted
		}
		if !m.connectedToQuorumAfterAdd() {
			return rpctypes.ErrGRPCUnhealthy
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.MemberAddResponse{Header: m.Header(m.eng.Rev()), Member: toPB(add), Members: members}, nil
}

// MemberRemove removes a member: etcd's MemberRemove.
func (m *Member) MemberRemove(ctx context.Context, r *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	resp := &pb.MemberRemoveResponse{}
	if forwarded, err := m.forwardChange(ctx, requestMemberRemove, r, resp); forwarded {
		if errors.Is(err, rpctypes.ErrGRPCTimeoutDueToConnectionLost) && m.waitRemoval(ctx, r.ID) {
			// A leader that removed itself stops, and this member cuts it
			// off as it applies the removal: the connection the answer was
			// to come back on is gone, but the removal is done.
			return &pb.MemberRemoveResponse{Header: m.Header(m.eng.Rev()), Members: m.membersPB()}, nil
		}
		return resp, err
	}
	members, err := m.changeMembership(ctx, raft.ConfChange{Type: raft.ConfRemove, NodeID: r.ID}, engine.Member{ID: r.ID}, func() error {
		mem, ok := m.eng.Member(r.ID)
		if !ok {
			return rpctypes.ErrGRPCMemberNotFound
		}
		if mem.IsLearner || m.cfg.NoStrictReconfigCheck {
			return nil
		}
		if !m.readyToRemoveVoter(r.ID) {
			return rpctypes.ErrGRPCMemberNotEnoughStarted
		}
		if r.ID != m.id && m.tr.ActiveSince(r.ID).IsZero() {
			return nil // a member down is not part of the active quorum
		}
		voters := m.votingMembers()
		if m.connectedVoters(voters)-1 < 1+(len(voters)-1)/2 {
			return rpctypes.ErrGRPCUnhealthy
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.MemberRemoveResponse{Header: m.Header(m.eng.Rev()), Members: members}, nil
}

// waitRemoval waits, as long as ctx and requestTimeout allow, until this
// member has applied the removal of id.
func (m *Member) waitRemoval(ctx context.Context, id uint64) bool {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	for {
		// The applied index first: an entry counts in the engine before
		// it counts as applied, so a removal at or below it is seen.
		applied := m.AppliedIndex()
		if m.eng.IsRemoved(id) {
			return true
		}
		if m.waitApplied(ctx, applied+1) != nil {
			return false
		}
	}
}

// MemberUpdate changes a member's peer URLs: etcd's MemberUpdate.
func (m *Member) MemberUpdate(ctx context.Context, r *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	if !validPeerURLs(r.PeerURLs) {
		return nil, rpctypes.ErrGRPCMemberBadURLs
	}
	resp := &pb.MemberUpdateResponse{}
	if forwarded, err := m.forwardChange(ctx, requestMemberUpdate, r, resp); forwarded {
		return resp, err
	}
	upd := engine.Member{ID: r.ID, PeerURLs: slices.Clone(r.PeerURLs)}
	members, err := m.changeMembership(ctx, raft.ConfChange{Type: raft.ConfUpdate, NodeID: r.ID}, upd, func() error {
		return convert.Error(m.eng.CheckUpdateMember(r.ID, r.PeerURLs))
	})
	if err != nil {
		return nil, err
	}
	return &pb.MemberUpdateResponse{Header: m.Header(m.eng.Rev()), Members: members}, nil
}

// MemberPromote makes a learner that has caught up a voter: etcd's
// MemberPromote.
func (m *Member) MemberPromote(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	resp := &pb.MemberPromoteResponse{}
	if forwarded, err := m.forwardChange(ctx, requestMemberPromote, r, resp); forwarded {
		m.metrics.promote(err)
		return resp, err
	}
	resp, err := m.memberPromoteLocal(ctx, r)
	m.metrics.promote(err)
	return resp, err
}

func (m *Member) memberPromoteLocal(ctx context.Context, r *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	members, err := m.changeMembership(ctx, raft.ConfChange{Type: raft.ConfAddVoter, NodeID: r.ID}, engine.Member{ID: r.ID}, func() error {
		mem, ok := m.eng.Member(r.ID)
		switch {
		case !ok:
			return rpctypes.ErrGRPCMemberNotFound
		case !mem.IsLearner:
			return rpctypes.ErrGRPCMemberNotLearner
		case !m.learnerReady(r.ID):
			return rpctypes.ErrGRPCLearnerNotReady
		case !m.cfg.NoStrictReconfigCheck && !m.readyToAddVoter():
			return rpctypes.ErrGRPCMemberNotEnoughStarted
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &pb.MemberPromoteResponse{Header: m.Header(m.eng.Rev()), Members: members}, nil
}

// autoPromoteLoop promotes, every second while this member leads, the
// learners that have caught up (Config.LearnerAutoPromote), through the
// same checks as MemberPromote; one refused is tried again a second later.
func (m *Member) autoPromoteLoop() {
	defer m.done.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-m.stopping:
			return
		case <-tick.C:
		}
		if m.lead.Load() != m.id {
			continue
		}
		for _, mem := range m.eng.Members() {
			if !mem.IsLearner || !m.learnerReady(mem.ID) {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
			_, err := m.memberPromoteLocal(ctx, &pb.MemberPromoteRequest{ID: mem.ID})
			cancel()
			m.metrics.promote(err)
			if err == nil {
				m.log.Info("promoted a learner that caught up", "member-id", fmt.Sprintf("%x", mem.ID))
			} else {
				m.log.Warn("promoting a learner that caught up", "member-id", fmt.Sprintf("%x", mem.ID), "err", err)
			}
		}
	}
}

// forwardChange sends a membership request to the leader unless this
// member leads; forwarded says whether it did (resp is then its answer,
// with this member's header).
func (m *Member) forwardChange(ctx context.Context, kind byte, req, resp proto.Message) (forwarded bool, err error) {
	if asked, err := m.askLeader(ctx, kind, req, resp); !asked || err != nil {
		return asked, err
	}
	h := m.Header(m.eng.Rev())
	switch r := resp.(type) {
	case *pb.MemberAddResponse:
		r.Header = h
	case *pb.MemberRemoveResponse:
		r.Header = h
	case *pb.MemberUpdateResponse:
		r.Header = h
	case *pb.MemberPromoteResponse:
		r.Header = h
	}
	return true, nil
}

// changeMembership proposes cc, carrying mem, once check passes (on this
// member, the leader), and waits for it to apply; it returns the members
// after it.
func (m *Member) changeMembership(ctx context.Context, cc raft.ConfChange, mem engine.Member, check func() error) ([]*pb.Member, error) {
	if m.failed.Load() != nil {
		return nil, rpctypes.ErrGRPCStopped
	}
	// One change at a time on this member: each is checked against what
	// the one before it left.
	select {
	case m.confSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-m.confSem }()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// Every change in the log must be applied before this one is checked.
	m.raftMu.Lock()
	last := m.r.LastConfIndex()
	m.raftMu.Unlock()
	if err := m.waitApplied(ctx, last); err != nil {
		return nil, waitError(err)
	}
	if err := check(); err != nil {
		return nil, convert.Error(err)
	}
	id := m.NextID()
	cc.Context, _ = json.Marshal(confContext{Req: id, Member: mem})
	ch := m.register(id, nil)
	err := m.proposeConfChange(ctx, cc, last)
	if err != nil {
		m.take(id)
		return nil, err
	}
	m.applyQueued()
	var res applyResult
	select {
	case res = <-ch:
	case <-ctx.Done():
		m.take(id)
		return nil, waitError(ctx.Err())
	case <-m.stopping:
		m.take(id)
		return nil, rpctypes.ErrGRPCStopped
	}
	if res.err != nil {
		return nil, res.err
	}
	return m.membersPB(), nil
}

// proposeConfChange has raft check and append cc, once the last change in
// the log is still the one at last. A leader just elected takes no change
// until its first entry commits (raft's ErrConfChangePending): it is asked
// again as entries apply, until ctx ends.
func (m *Member) proposeConfChange(ctx context.Context, cc raft.ConfChange, last uint64) error {
	for {
		m.raftMu.Lock()
		// What was committed when raft said "pending": the wait below is
		// for an entry past it, read under raftMu so that a commit and
		// apply landing between the check and the wait are not missed.
		committed := m.r.Committed()
		var err error
		switch {
		case m.raftDone:
			err = rpctypes.ErrGRPCStopped
		case m.r.LastConfIndex() != last:
			err = rpctypes.ErrGRPCLeaderChanged // another leader's change came in
		default:
			err = m.r.CheckConfChange(cc)
			if err == nil {
				err = m.r.ProposeConfChange(cc)
			}
			if err == nil {
				m.advance()
			}
		}
		m.raftMu.Unlock()
		if !errors.Is(err, raft.ErrConfChangePending) {
			return confChangeError(err)
		}
		if err := m.waitApplied(ctx, committed+1); err != nil {
			return waitError(err)
		}
	}
}

// waitError is a wait for apply that ended: etcd's timeout unless the
// caller went away.
func waitError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return rpctypes.ErrGRPCTimeout
	}
	return err
}

// confChangeError turns raft's refusal of a change into etcd's.
func confChangeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return rpctypes.ErrGRPCNotLeader
	case errors.Is(err, raft.ErrNoVoterLeft):
		return rpctypes.ErrGRPCMemberNotEnoughStarted
	}
	return err
}

// applyConfChange applies a membership change's entry: the engine records
// the member as the change leaves it, the transport follows, and whoever
// waits is answered. A member that applies its own removal stops.
func (m *Member) applyConfChange(e raft.Entry) error {
	cc, err := raft.DecodeConfChange(e.Data)
	var cx confContext
	if err == nil && len(cc.Context) > 0 {
		err = json.Unmarshal(cc.Context, &cx)
	}
	if err != nil {
		return fmt.Errorf("entry %d: a membership change: %w", e.Index, err)
	}
	w := m.take(cx.Req)
	ok, err := m.eng.ApplyChange(e.Index, func() error {
		switch cc.Type {
		case raft.ConfAddVoter:
			if cur, found := m.eng.Member(cc.NodeID); found && cur.IsLearner {
				return m.eng.PromoteMember(cc.NodeID)
			}
			add := cx.Member
			add.ID, add.IsLearner = cc.NodeID, false
			return m.eng.AddMember(add, math.MaxInt)
		case raft.ConfAddLearner:
			add := cx.Member
			add.ID, add.IsLearner = cc.NodeID, true
			return m.eng.AddMember(add, math.MaxInt)
		case raft.ConfRemove:
			return m.eng.RemoveMember(cc.NodeID)
		case raft.ConfUpdate:
			return m.eng.UpdateMember(cc.NodeID, cx.Member.PeerURLs)
		}
		return fmt.Errorf("unknown change %d", cc.Type)
	})
	if !ok {
		if w.ch != nil {
			w.ch <- applyResult{err: rpctypes.ErrGRPCStopped}
		}
		return err
	}
	if w.ch != nil {
		w.ch <- applyResult{err: convert.Error(err)}
	}
	if err != nil {
		// The leader checked the change against this very state: a
		// refusal here means the members' views differ.
		m.log.Error("a membership change was refused at apply", "index", e.Index, "member-id", fmt.Sprintf("%x", cc.NodeID), "err", err)
		return nil
	}
	m.followMembership(cc)
	return nil
}

// followMembership brings the transport in line with an applied change,
// and stops this member if the change removed it.
func (m *Member) followMembership(cc raft.ConfChange) {
	id := cc.NodeID
	switch {
	case cc.Type == raft.ConfRemove && id == m.id:
		m.stopRemoved()
	case cc.Type == raft.ConfRemove:
		m.tr.RemovePeer(id)
		m.log.Info("removed a member", "member-id", fmt.Sprintf("%x", id))
	case id == m.id:
		m.noteRole()
	default:
		if mem, ok := m.eng.Member(id); ok {
			if err := m.tr.AddPeer(id, mem.PeerURLs); err != nil {
				m.log.Error("cannot reach a member's peer URLs", "member-id", fmt.Sprintf("%x", id), "err", err)
			}
		}
		m.log.Info("applied a membership change", "change", confChangeName(cc.Type), "member-id", fmt.Sprintf("%x", id))
	}
}

// stopRemoved stops the member a second after it learns that it was
// removed, by applying its removal or from a peer that refuses it. As
// etcd, a moment later: the answer to whoever removed it, and the commit
// of its removal, may still be on their way out; and a leader that
// removed itself may hear it from a follower that applied the change
// before its own apply has answered the request.
func (m *Member) stopRemoved() {
	if m.removing.CompareAndSwap(false, true) {
		m.log.Warn("this member was removed from the cluster; it stops in a second")
		time.AfterFunc(time.Second, func() { m.Fail(ErrMemberRemoved) })
	}
}

func confChangeName(t raft.ConfChangeType) string {
	switch t {
	case raft.ConfAddVoter:
		return "add-voter"
	case raft.ConfAddLearner:
		return "add-learner"
	case raft.ConfRemove:
		return "remove"
	case raft.ConfUpdate:
		return "update"
	}
	return fmt.Sprint(t)
}

// forceNewCluster makes this member a cluster of one (--force-new-cluster,
// as etcd's): the entries past the commit index are dropped, and entries
// removing every other member are appended after it, committed, and made
// durable before raft starts from them; applying them removes the
// members from the engine and the transport. The data, the ids and the
// cluster id stay.
func (m *Member) forceNewCluster(voters []uint64, snap *raft.SnapshotMeta, ents []raft.Entry, hs raft.HardState, joining bool) ([]raft.Entry, raft.HardState, error) {
	for i, e := range ents {
		if e.Index > hs.Commit {
			m.log.Warn("--force-new-cluster: dropping uncommitted entries", "from", e.Index, "to", ents[len(ents)-1].Index)
			ents = ents[:i]
			break
		}
	}
	// The configuration those entries leave, as raft computes it.
	r, err := raft.New(raft.Config{ID: m.id, Peers: voters, Join: joining, ElectionTick: 2, HeartbeatTick: 1,
		Rand: rand.New(rand.NewSource(1)), HardState: hs, Entries: ents, Applied: m.applied, Snapshot: snap})
	if err != nil {
		return nil, hs, err
	}
	vs, ls := r.Config()
	if !slices.Contains(vs, m.id) {
		return nil, hs, fmt.Errorf("--force-new-cluster: member %x is not a voter of its cluster (voters %x)", m.id, vs)
	}
	last := hs.Commit
	if snap != nil {
		last = max(last, snap.Index)
	}
	if len(ents) > 0 {
		last = ents[len(ents)-1].Index
	}
	var recs []wal.Record
	for _, id := range append(vs, ls...) {
		if id == m.id {
			continue
		}
		last++
		cx, _ := json.Marshal(confContext{Member: engine.Member{ID: id}})
		e := raft.Entry{Term: hs.Term, Index: last, Type: raft.EntryConfChange,
			Data: raft.ConfChange{Type: raft.ConfRemove, NodeID: id, Context: cx}.Encode()}
		ents = append(ents, e)
		recs = append(recs, wal.EntryRecord(wal.Entry{Term: e.Term, Index: e.Index, Type: uint8(e.Type), Data: e.Data}))
		m.log.Warn("--force-new-cluster: removing a member", "member-id", fmt.Sprintf("%x", id))
	}
	hs.Commit = last
	recs = append(recs, wal.HardStateRecord(wal.HardState{Term: hs.Term, Vote: hs.Vote, Commit: hs.Commit}))
	if err := m.w.Append(recs...); err != nil {
		return nil, hs, err
	}
	return ents, hs, nil
}

// followMembers brings the transport's peers and this member's role in
// line with the engine's members, all of them at once (at start, and when
// a snapshot replaced the engine's state); a member the engine says was
// removed stops.
func (m *Member) followMembers() {
	members := m.eng.Members()
	known := map[uint64]bool{}
	for _, mem := range members {
		known[mem.ID] = true
		if mem.ID == m.id {
			continue
		}
		if err := m.tr.AddPeer(mem.ID, mem.PeerURLs); err != nil {
			m.log.Error("cannot reach a member's peer URLs", "member-id", fmt.Sprintf("%x", mem.ID), "err", err)
		}
	}
	for _, id := range m.tr.PeerIDs() {
		if !known[id] {
			m.tr.RemovePeer(id)
		}
	}
	m.noteRole()
	if m.eng.IsRemoved(m.id) {
		m.Fail(ErrMemberRemoved)
	}
}

// membersPB returns the members as etcd's API gives them.
func (m *Member) membersPB() []*pb.Member {
	ms := m.eng.Members()
	out := make([]*pb.Member, len(ms))
	for i, mem := range ms {
		out[i] = toPB(mem)
	}
	return out
}

func toPB(mem engine.Member) *pb.Member {
	return &pb.Member{ID: mem.ID, Name: mem.Name, PeerURLs: mem.PeerURLs, ClientURLs: mem.ClientURLs, IsLearner: mem.IsLearner}
}

// PeerActiveSince is when this member's stream to peer id last connected
// (zero while it is down).
func (m *Member) PeerActiveSince(id uint64) time.Time { return m.tr.ActiveSince(id) }

// votingMembers returns the voters the engine records.
func (m *Member) votingMembers() []engine.Member {
	return slices.DeleteFunc(m.eng.Members(), func(mem engine.Member) bool { return mem.IsLearner })
}

// startedVoters counts the voters but except, and those among them that
// have started (published a name).
func (m *Member) startedVoters(except uint64) (started, n int) {
	for _, v := range m.votingMembers() {
		if v.ID == except {
			continue
		}
		n++
		if v.Name != "" {
			started++
		}
	}
	return started, n
}

// readyToAddVoter: with one more voter, the started voters would still be
// a quorum; as etcd, a cluster of one started member may always grow to
// two.
func (m *Member) readyToAddVoter() bool {
	started, n := m.startedVoters(0)
	n++
	return started == 1 && n == 2 || started >= n/2+1
}

// readyToRemoveVoter: without id, the started voters would still be a
// quorum of the rest.
func (m *Member) readyToRemoveVoter(id uint64) bool {
	started, n := m.startedVoters(id)
	return started >= n/2+1
}

// connectedVoters counts the voters this member has been connected to for
// healthInterval, itself included.
func (m *Member) connectedVoters(voters []engine.Member) int {
	n := 0
	since := time.Now().Add(-healthInterval)
	for _, v := range voters {
		if v.ID == m.id {
			n++
			continue
		}
		if t := m.tr.ActiveSince(v.ID); !t.IsZero() && t.Before(since) {
			n++
		}
	}
	return n
}

// connectedToQuorumAfterAdd: with one more voter (not connected yet),
// the voters connected would still be a quorum. As etcd, a cluster of one
// may always grow.
func (m *Member) connectedToQuorumAfterAdd() bool {
	voters := m.votingMembers()
	if len(voters) == 1 {
		return true
	}
	return m.connectedVoters(voters) >= (len(voters)+1)/2+1
}

// learnerReady: the leader's view of the learner's log matches at least
// learnerReadyShare of its own.
func (m *Member) learnerReady(id uint64) bool {
	m.raftMu.Lock()
	st := m.r.Status()
	m.raftMu.Unlock()
	if st.Progress == nil {
		return false
	}
	pr, ok := st.Progress[id]
	if !ok {
		return false
	}
	return float64(pr.Match) >= float64(st.Progress[m.id].Match)*learnerReadyShare
}

// IsLearner reports whether this member is a learner (as of the last
// membership change it applied).
func (m *Member) IsLearner() bool { return m.learner.Load() }

// noteRole records whether this member is a learner, after its engine's
// membership changed (open, an applied change, a snapshot installed).
func (m *Member) noteRole() {
	mem, ok := m.eng.Member(m.id)
	m.learner.Store(ok && mem.IsLearner)
}
