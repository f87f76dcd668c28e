// Package member is one cairn member's state machine on raft: the data
// directory (WAL, page file, raft snapshot files), the raft core and
// what drives it (ticks, Readys persisted before they are acted on,
// snapshots, peers' messages through server/transport), proposals and
// their waiters, linearizable reads by ReadIndex, and the apply role that
// applies committed entries to the engine in log order, with the loops
// that propose on the member's behalf (lease expiry and checkpoints,
// auto-compaction, watch progress, publishing its attributes).
//
// Files, by concept:
//
//	member.go     the Member: open, stop, accessors, ServePeers
//	bootstrap.go  --initial-cluster checked, member and cluster ids, the WAL's metadata record
//	check.go      Check (the hand-offs at one instant) and CheckDataDir (a stopped data dir, whole)
//	storage.go    defragmentation and snapshot copies of the page file
//	config.go     Config and its defaults
//	raft.go       the driver: ticks, advance (persist, send, apply queue, reads), snapshots,
//	              peers' messages stepped, MoveLeader
//	propose.go    Propose: proposals queued, taken to raft, waited on
//	read.go       LinearizableRead: read rounds sharing one ReadIndex; applied index
//	apply.go      the apply role and goroutine, housekeeping, OnApplier
//	request.go    one committed entry applied: etcd's InternalRaftRequest
//	auth.go       who a request is from, and what it may do
//	quota.go      the backend quota and the NOSPACE alarm
//	lease.go      lease renewal and time-to-live, the leader's expiry and checkpoints
//	forward.go    requests a follower forwards to the leader (lease calls, membership changes)
//	membership.go membership changes: checked and proposed by the leader, applied
//	              everywhere; learners; a removed member stops
//	publish.go    the member's name and client URLs published through the log
//	progress.go   watch progress notifications
//	autocompact.go  periodic and revision auto-compaction
//	snapfile.go   raft snapshot files (.snap) and the membership encoding
//	catchup.go    a follower too far behind catches up by the leader's page file:
//	              sent, received and checked, installed; an install a crash cut short
//	metrics.go    the member's Prometheus registry, etcd's metric names
//	metrics_etcd.go  the rest of etcd's metric families: MVCC, leases, disk, snapshots, peers
//	corrupt.go    etcd's corruption checks: initial, periodic, at compactions; the CORRUPT alarm
//	probe.go      the peers' round trips measured, as etcd's prober
//	version.go    the etcd versions cairn reports
//
// Failpoints (internal/failpoint): member/defragment (before a
// defragmentation, on the applier), member/receiveSnapshot (a received
// snapshot's data is refused), member/installBeforeMarker (after an
// installed snapshot's .snap file, before its WAL marker),
// member/installBeforePageFile (after the marker, before the page file
// is replaced). Two more are canaries, which switch on a bug on purpose
// so that the fault-injection harness (jepsen/) shows it catches it:
// member/canaryAckBeforeSync (a put is answered as soon as it is queued
// for raft, before its WAL write and sync, its commit or its apply) and
// member/canaryReadWithoutReadIndex (a linearizable read is served from
// the member's own state, with no ReadIndex).
//
// The gRPC services (server/v3rpc) and the HTTP gateway (server/gateway)
// sit above it and reach the member through its exported methods; it
// knows nothing of them.
package member
