// Package transport carries raft messages between the members of a
// cluster. For each peer a member keeps two long-lived connections it
// dials itself, one for appends and one for everything else (heartbeats,
// votes, read indexes and their answers), so that a large append never
// delays a heartbeat; each has a bounded queue, and Send never blocks: a
// message that does not fit is dropped and the peer reported unreachable
// to raft, which sends again what it needs. A failed connection is dialed
// again with backoff. Every connection opens with the cluster id and both
// member ids, checked before anything else is read: a member of another
// cluster is refused, with a log line on both sides.
//
// Files: transport.go (the Transport, peers, the listener side),
// stream.go (one outbound connection), frame.go (the hello, its answer,
// frames), codec.go (batches of raft messages on the wire), faults.go
// (drops and delays by member pair, for tests).
package transport
