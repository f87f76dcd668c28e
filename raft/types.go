package raft

import "fmt"

// MessageType says what a message asks or answers.
type MessageType uint8

const (
	MsgHup            MessageType = iota + 1 // local: start an election
	MsgBeat                                  // local: the leader should send heartbeats
	MsgProp                                  // a proposal (local, or forwarded to the leader)
	MsgApp                                   // append entries
	MsgAppResp                               // answer to MsgApp
	MsgVote                                  // request a vote
	MsgVoteResp                              // answer to MsgVote
	MsgPreVote                               // ask whether a vote would be granted (no term change)
	MsgPreVoteResp                           // answer to MsgPreVote
	MsgHeartbeat                             // leader's heartbeat
	MsgHeartbeatResp                         // answer to MsgHeartbeat
	MsgCheckQuorum                           // local: the leader checks it still hears a quorum
	MsgReadIndex                             // a linearizable read (local, or forwarded to the leader)
	MsgReadIndexResp                         // the leader's answer to a forwarded read
	MsgTransferLeader                        // hand leadership to Context (local, or forwarded to the leader)
	MsgTimeoutNow                            // the leader tells the transfer target to campaign now
	MsgSnap                                  // the leader sends a snapshot (its metadata: the transport streams the data)
)

var msgNames = map[MessageType]string{
	MsgHup: "MsgHup", MsgBeat: "MsgBeat", MsgProp: "MsgProp", MsgApp: "MsgApp", MsgAppResp: "MsgAppResp",
	MsgVote: "MsgVote", MsgVoteResp: "MsgVoteResp", MsgPreVote: "MsgPreVote", MsgPreVoteResp: "MsgPreVoteResp",
	MsgHeartbeat: "MsgHeartbeat", MsgHeartbeatResp: "MsgHeartbeatResp", MsgCheckQuorum: "MsgCheckQuorum",
	MsgReadIndex: "MsgReadIndex", MsgReadIndexResp: "MsgReadIndexResp",
	MsgTransferLeader: "MsgTransferLeader", MsgTimeoutNow: "MsgTimeoutNow", MsgSnap: "MsgSnap",
}

func (t MessageType) String() string {
	if s, ok := msgNames[t]; ok {
		return s
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// isLocal reports whether the message type never crosses the network.
func (t MessageType) isLocal() bool { return t == MsgHup || t == MsgBeat || t == MsgCheckQuorum }

// EntryType says what an entry holds.
type EntryType uint8

const (
	EntryNormal EntryType = iota // application data (empty: the leader's no-op)
)

// Entry is one raft log entry.
type Entry struct {
	Term  uint64
	Index uint64
	Type  EntryType
	Data  []byte
}

// HardState is what must be durable before a node says anything that
// depends on it: its term, its vote in that term, and its commit index.
type HardState struct {
	Term, Vote, Commit uint64
}

// Message is what nodes send each other (and the driver sends in).
type Message struct {
	Type MessageType
	From uint64
	To   uint64
	Term uint64
	// MsgApp: the entry before Entries. MsgAppResp: the index matched (or,
	// with Reject, the index the rejected MsgApp named). Votes: the
	// candidate's last log entry.
	LogTerm uint64
	Index   uint64
	Entries []Entry
	Commit  uint64
	Reject  bool
	// RejectHint is a rejecting follower's last index, so the leader can
	// back off in one step rather than one entry at a time.
	RejectHint uint64
	// Context: on heartbeats and their answers, the read round they
	// confirm; on MsgTransferLeader, the node to hand leadership to; on
	// votes, campaignTransfer when the leader asked for the election; on a
	// rejected MsgAppResp, contextWantSnapshot from a joining node.
	Context uint64
	// Snapshot is MsgSnap's metadata.
	Snapshot *SnapshotMeta
}

// SnapshotMeta describes a snapshot: the state as of Index (an entry of
// Term) and the configuration then. The state itself is the application's;
// the transport streams it beside the message.
type SnapshotMeta struct {
	Index, Term      uint64
	Voters, Learners []uint64
}

func (m Message) String() string {
	s := fmt.Sprintf("%d->%d %v term:%d", m.From, m.To, m.Type, m.Term)
	if m.Type == MsgApp || m.Type == MsgAppResp || m.Type == MsgVote || m.Type == MsgPreVote {
		s += fmt.Sprintf(" log:%d/%d", m.LogTerm, m.Index)
	}
	if len(m.Entries) > 0 {
		s += fmt.Sprintf(" entries:%d", len(m.Entries))
	}
	if m.Commit > 0 {
		s += fmt.Sprintf(" commit:%d", m.Commit)
	}
	if m.Reject {
		s += fmt.Sprintf(" rejected (hint %d)", m.RejectHint)
	}
	return s
}

// StateType is a node's role.
type StateType uint8

const (
	StateFollower StateType = iota
	StatePreCandidate
	StateCandidate
	StateLeader
)

func (s StateType) String() string {
	return [...]string{"follower", "pre-candidate", "candidate", "leader"}[s]
}

// Ready is what the driver must do next: install and persist Snapshot
// (before Entries), persist Entries and HardState,
// send Messages (at once, even before the persist) and MessagesAfterPersist
// (only once the persist is durable), and apply CommittedEntries. Then call
// Advance.
type Ready struct {
	// HardState to persist; nil if unchanged since the last Ready.
	HardState *HardState
	// Snapshot to install (fetch its state from the leader through the
	// transport) and persist, replacing the whole log; nil if none.
	Snapshot *SnapshotMeta
	// Entries to append to the durable log (an entry at an index already
	// there replaces it and everything after it).
	Entries []Entry
	// CommittedEntries to apply, in order; all are already durable.
	CommittedEntries []Entry
	// Messages may be sent now: a leader's appends go out while its own
	// write is in flight.
	Messages []Message
	// MessagesAfterPersist may be sent only once Entries and HardState are
	// durable: votes and append acknowledgements promise what is on disk.
	MessagesAfterPersist []Message
	// ReadStates are reads that may now be served: once this node has
	// applied Index, a read of its state is linearizable.
	ReadStates []ReadState
}

// ReadState releases a read requested with ReadIndex.
type ReadState struct {
	Index      uint64
	RequestCtx []byte
}

// IsEmpty reports whether there is nothing to do.
func (rd *Ready) IsEmpty() bool {
	return rd.HardState == nil && rd.Snapshot == nil && len(rd.Entries) == 0 && len(rd.CommittedEntries) == 0 &&
		len(rd.Messages) == 0 && len(rd.MessagesAfterPersist) == 0 && len(rd.ReadStates) == 0
}
