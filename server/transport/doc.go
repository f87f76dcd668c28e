// Package transport carries raft messages between the members of a
// cluster. For each peer a member keeps two long-lived connections it
// dials itself, one for appends and one for everything else (heartbeats,
// votes, read indexes and their answers), so that a large append never
// delays a heartbeat; each has a bounded queue, and Send never blocks: a
// message that does not fit is dropped and the peer reported unreachable
// to raft (by the caller, from what Send returns), which sends again what
// it needs. A failed connection is dialed again with backoff; one the
// peer closes is dialed again at once, even while the stream is idle (a
// write to it would be lost). Every connection opens with the cluster id
// and both member ids, checked before anything else is read: a member of
// another cluster is refused, with a log line on both sides.
//
// Send is called with the member's raft core held, so it never calls back
// into the Handler: what it cannot queue it returns. Beside raft's one-way
// messages, Request carries a request and its answer (a lease call a
// follower forwards to the leader) on a pooled connection of its own, and
// SendSnapshot a leader's snapshot to a follower: the message with the
// page file, zstd-compressed, checksummed end to end, on a connection of
// its own, answered once the follower has the data safe.
//
// Files: transport.go (the Transport, peers, the listener side),
// stream.go (one outbound connection), request.go (requests and their
// answers), snapshot.go (snapshots and their data), frame.go (the hello, its answer, frames), codec.go (batches
// of raft messages on the wire), faults.go (drops and delays by member
// pair, for tests).
package transport
