// Package raft is cairn's consensus core: Raft as a deterministic state
// machine. It does no I/O, starts no goroutines and reads no clock. Inputs
// are Step (a message from a peer, or a local one), Tick (logical time),
// Propose and Campaign; the output is a Ready: entries and hard state to
// persist, messages to send now, messages to send only once that persist is
// durable, and committed entries to apply. The driver handles a Ready and
// calls Advance; it may step the node while the Ready is being persisted,
// but takes no other Ready until it has advanced this one. Randomness comes from the
// seeded source in Config, so a run is reproducible.
//
// Durability is in the data: votes and append acknowledgements promise
// what is on disk, so they come out in MessagesAfterPersist; a leader's
// appends go out in Messages, in parallel with its own write, and the
// leader counts its own log toward commit only once Advance says it is
// durable. A candidate's vote for itself likewise comes back to it as a
// message after the persist.
//
// Built so far: elections with randomized timeouts, PreVote and
// CheckQuorum; replication with per-follower progress (probe, then a window
// of appends in flight bounded in count and bytes) and fast back-off on
// rejection; commit only of entries of the leader's own term by counting
// (Raft §5.4.2), with a no-op appended on election; ReadIndex (one heartbeat
// round shared by the reads that arrive together, held until the leader's
// first commit in its term, forwarded by followers; LeaseReads optional);
// leadership transfer (MsgTimeoutNow once the target is caught up,
// proposals refused meanwhile, abandoned after an election timeout);
// membership changes one at a time through the log (add voter, add learner,
// promote, remove, update: a change of nothing raft keeps, carried for the
// application), each counting from when it is in the log (a truncation
// takes it back), a leader refusing a new change until the last one
// commits (CheckConfChange says so beforehand), the change and the entries
// before it committing by a majority of either the configuration before it
// or after it (any two such majorities meet, so a cluster of one commits
// the addition of a second voter by itself), and a removed leader stepping
// down once its removal commits (after a heartbeat that tells the others); a node may start with no configuration to
// join a cluster (Config.Join: it asks the leader for a snapshot);
// learners receive the log but never vote or count; a node whose own
// removal is in its log but not committed may still campaign (it may hold
// the only log that can win). Snapshots: the application compacts the log
// up to an applied index (Compact); a follower that needs compacted entries
// gets the snapshot's metadata in MsgSnap, installs the state the
// transport streams (Ready.Snapshot) and answers after persisting it.
package raft
