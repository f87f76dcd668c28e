package raft

import (
	"fmt"
	"slices"
)

// EntryConfChange marks an entry holding a ConfChange.
const EntryConfChange EntryType = 1

// ConfChangeType is the kind of membership change.
type ConfChangeType uint8

const (
	// ConfAddVoter adds a voter, or promotes a learner.
	ConfAddVoter ConfChangeType = iota + 1
	// ConfAddLearner adds a learner: it gets the log but does not vote.
	ConfAddLearner
	// ConfRemove removes a voter or a learner.
	ConfRemove
	// ConfUpdate changes nothing raft keeps: it carries a change of a
	// member's other attributes (its peer URLs) in its Context, ordered
	// with the other changes.
	ConfUpdate
)

// ConfChange is one membership change. Changes go through the log one at a
// time, and a configuration counts from when its entry is in a node's log.
// Context is the caller's (raft keeps it in the entry and reads nothing
// of it): what the member records about the change.
type ConfChange struct {
	Type    ConfChangeType
	NodeID  uint64
	Context []byte
}

// Encode returns the entry data for the change: type:u8 node:u64 context.
func (cc ConfChange) Encode() []byte {
	b := make([]byte, 9, 9+len(cc.Context))
	b[0] = byte(cc.Type)
	le64(b[1:], cc.NodeID)
	return append(b, cc.Context...)
}

// DecodeConfChange reads a change from entry data. Its Context points
// into b.
func DecodeConfChange(b []byte) (ConfChange, error) {
	if len(b) < 9 || b[0] < byte(ConfAddVoter) || b[0] > byte(ConfUpdate) {
		return ConfChange{}, fmt.Errorf("raft: bad conf change of %d bytes", len(b))
	}
	cc := ConfChange{Type: ConfChangeType(b[0]), NodeID: get64(b[1:])}
	if len(b) > 9 {
		cc.Context = b[9:]
	}
	return cc, nil
}

func le64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

func get64(b []byte) uint64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v |= uint64(b[i]) << (8 * i)
	}
	return v
}

// config is a set of voters and learners.
type config struct {
	voters, learners []uint64 // sorted
}

func (c config) clone() config {
	return config{voters: slices.Clone(c.voters), learners: slices.Clone(c.learners)}
}

// apply returns the configuration after cc, or an error if cc makes no
// sense here (it then changes nothing).
func (c config) apply(cc ConfChange) (config, error) {
	out := c.clone()
	id := cc.NodeID
	isVoter, isLearner := slices.Contains(c.voters, id), slices.Contains(c.learners, id)
	switch cc.Type {
	case ConfAddVoter:
		if isVoter {
			return c, fmt.Errorf("raft: %d is already a voter", id)
		}
		out.learners = slices.DeleteFunc(out.learners, func(x uint64) bool { return x == id })
		out.voters = insertSorted(out.voters, id)
	case ConfAddLearner:
		if isVoter || isLearner {
			return c, fmt.Errorf("raft: %d is already a member", id)
		}
		out.learners = insertSorted(out.learners, id)
	case ConfUpdate:
		if !isVoter && !isLearner {
			return c, fmt.Errorf("raft: %d is not a member", id)
		}
	case ConfRemove:
		if !isVoter && !isLearner {
			return c, fmt.Errorf("raft: %d is not a member", id)
		}
		out.voters = slices.DeleteFunc(out.voters, func(x uint64) bool { return x == id })
		out.learners = slices.DeleteFunc(out.learners, func(x uint64) bool { return x == id })
		if len(out.voters) == 0 {
			return c, fmt.Errorf("%w (removing %d)", ErrNoVoterLeft, id)
		}
	default:
		return c, fmt.Errorf("raft: unknown conf change type %d", cc.Type)
	}
	return out, nil
}

func insertSorted(s []uint64, id uint64) []uint64 {
	i, _ := slices.BinarySearch(s, id)
	return slices.Insert(s, i, id)
}

// ProposeConfChange proposes a membership change. The leader refuses a
// change while an earlier one is not yet committed (the entry is appended
// as an empty one instead).
func (r *Raft) ProposeConfChange(cc ConfChange) error {
	return r.Step(Message{Type: MsgProp, From: r.id, Entries: []Entry{{Type: EntryConfChange, Data: cc.Encode()}}})
}

// CheckConfChange says whether the leader would take cc now: this node
// leads, no earlier change is uncommitted, and cc makes sense in the
// configuration (a proposal it would refuse goes in as an empty entry).
func (r *Raft) CheckConfChange(cc ConfChange) error {
	if r.state != StateLeader {
		return ErrNotLeader
	}
	return r.confChangeAllowed(cc)
}

// confChangeAllowed: no earlier change is uncommitted, and cc makes sense
// in the configuration (the leader's rule for a proposed change).
func (r *Raft) confChangeAllowed(cc ConfChange) error {
	if r.pendingConfIndex > r.log.committed {
		return ErrConfChangePending
	}
	_, err := r.conf.apply(cc)
	return err
}

// Config returns the voters and the learners of the configuration in
// force (the latest in the log), sorted.
func (r *Raft) Config() (voters, learners []uint64) {
	return slices.Clone(r.conf.voters), slices.Clone(r.conf.learners)
}

// LastConfIndex is the index of the last membership change in the log
// (0: none since its start or the last snapshot).
func (r *Raft) LastConfIndex() uint64 { return r.lastConfIndex }

// refreshConfig recomputes the configuration from the base and every
// change in the log (changes count from when they are in the log, so a
// truncation that removes one takes it back), and brings the leader's
// progress tracking in line.
func (r *Raft) refreshConfig() {
	r.conf, r.lastConfIndex = r.confUpTo(r.log.lastIndex())
	r.confBefore = config{}
	if c := r.lastConfIndex; c > r.log.offset {
		r.confBefore, _ = r.confUpTo(c - 1)
	}
	r.syncProgress()
}

// confAt returns the configuration as of the entry at index.
func (r *Raft) confAt(index uint64) config {
	c, _ := r.confUpTo(index)
	return c
}

// confUpTo applies the changes in the log up to index to the base, and
// returns the result and the last change's index (0: none in the log).
func (r *Raft) confUpTo(index uint64) (config, uint64) {
	c := r.base.clone()
	var last uint64
	for i := r.log.offset + 1; i <= index; i++ {
		e := r.log.at(i)
		if e.Type != EntryConfChange {
			continue
		}
		last = i
		cc, err := DecodeConfChange(e.Data)
		if err != nil {
			continue // refused by the leader that wrote it: a no-op
		}
		if next, err := c.apply(cc); err == nil {
			c = next
		}
	}
	return c, last
}

// syncProgress tracks exactly the members.
func (r *Raft) syncProgress() {
	c := r.conf
	for _, id := range r.members() {
		if r.prs[id] == nil {
			r.prs[id] = &progress{next: r.log.lastIndex() + 1}
		}
	}
	for id := range r.prs {
		if !slices.Contains(c.voters, id) && !slices.Contains(c.learners, id) {
			delete(r.prs, id)
		}
	}
	if r.state == StateLeader && r.maybeCommit() {
		r.bcastAppend()
	}
}

// members returns the voters and learners.
func (r *Raft) members() []uint64 {
	return append(slices.Clone(r.conf.voters), r.conf.learners...)
}

func (r *Raft) isVoter(id uint64) bool { return slices.Contains(r.conf.voters, id) }

// canCampaign reports whether this node may start an election: it is a
// voter, or its removal is in its log but not committed. (Otherwise a node
// whose log alone holds its own removal, and which therefore has the most
// up-to-date log, would neither campaign nor vote for anyone less up to
// date, and the cluster could never elect a leader. Votes are still counted
// against the latest configuration, in which it does not count itself.)
func (r *Raft) canCampaign() bool {
	if r.isVoter(r.id) {
		return true
	}
	return slices.Contains(r.confAt(r.log.committed).voters, r.id)
}

// confTouched reports whether appending ents (which may have truncated the
// log first) can have changed the configuration.
func (r *Raft) confTouched(ents []Entry) bool {
	for _, e := range ents {
		if e.Type == EntryConfChange {
			return true
		}
	}
	if c := r.lastConfIndex; c > 0 {
		return c > r.log.lastIndex() || r.log.at(c).Type != EntryConfChange
	}
	return false
}

// maybeStepDownRemoved makes a leader that a committed change removed
// step down.
func (r *Raft) maybeStepDownRemoved() {
	if r.state == StateLeader && !r.isVoter(r.id) && r.log.committed >= r.lastConfIndex {
		// The others hear the commit of its removal first: none would
		// otherwise until a new leader is elected, an election timeout on.
		for _, id := range r.members() {
			if id != r.id {
				pr := r.prs[id]
				r.send(Message{Type: MsgHeartbeat, To: id, Commit: min(pr.match, r.log.committed)})
			}
		}
		r.becomeFollower(r.term, 0)
	}
}
