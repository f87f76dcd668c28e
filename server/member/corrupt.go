package member

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/engine"
)

// Corruption checks, as etcd's: members that applied the same log must
// have the same HashKV at the same revision and compacted revision.
//
//   - initial (--experimental-initial-corrupt-check): a member restarting
//     over its data compares its hash with its peers' at its own revision
//     before it serves, and refuses to start on a mismatch;
//   - periodic (--experimental-corrupt-check-time): the leader compares
//     its hash at its revision with every follower's;
//   - at compactions (--experimental-compact-hash-check-enabled, every
//     --experimental-compact-hash-check-time): the leader compares the
//     hashes at the latest compacted revision.
//
// A follower whose hash differs at the same compacted revision gets the
// CORRUPT alarm, raised through the log: then every member refuses
// writes ("etcdserver: corrupt cluster") until an operator disarms it.
// Hashes are fetched over the peer transport (requestHashKV).

// requestHashKV asks a peer for its HashKV at a revision: the request is a
// pb.HashKVRequest, the answer a pb.HashKVResponse.
const requestHashKV byte = 7

// corruptCheckTimeout bounds the wait for one peer's hash.
const corruptCheckTimeout = 5 * time.Second

// hashKVLocal is this member's HashKV at rev (0: its current revision),
// with etcd's errors for a revision it does not have.
func (m *Member) hashKVLocal(rev int64) (*pb.HashKVResponse, error) {
	h, err := m.HashKV(rev)
	switch {
	case errors.Is(err, engine.ErrFutureRev):
		return nil, rpctypes.ErrGRPCFutureRev
	case errors.Is(err, engine.ErrCompacted):
		return nil, rpctypes.ErrGRPCCompacted
	case err != nil:
		return nil, err
	}
	return &pb.HashKVResponse{Header: m.Header(h.HashRev), Hash: h.Hash, CompactRevision: h.CompactRev, HashRevision: h.HashRev}, nil
}

// peerHash is one peer's answer to a hash request.
type peerHash struct {
	id   uint64
	resp *pb.HashKVResponse
	err  error
}

// peerHashes asks every peer for its HashKV at rev.
func (m *Member) peerHashes(rev int64) []peerHash {
	req, _ := proto.Marshal(&pb.HashKVRequest{Revision: rev})
	var out []peerHash
	for _, id := range m.tr.PeerIDs() {
		ctx, cancel := context.WithTimeout(context.Background(), corruptCheckTimeout)
		answer, err := m.tr.Request(ctx, id, append([]byte{requestHashKV}, req...))
		cancel()
		p := peerHash{id: id, err: remoteError(err)}
		if err == nil {
			p.resp = new(pb.HashKVResponse)
			p.err = proto.Unmarshal(answer, p.resp)
		}
		out = append(out, p)
	}
	return out
}

// compareHashes compares this member's hash with its peers' at the same
// revision; it returns the peers whose hash differs at the same compacted
// revision, and says in the log what it could not compare.
func (m *Member) compareHashes(local *pb.HashKVResponse, peers []peerHash) (mismatched []uint64) {
	for _, p := range peers {
		fields := []any{"local-member-id", fmt.Sprintf("%x", m.id), "local-member-revision", local.Header.Revision,
			"local-member-compact-revision", local.CompactRevision, "local-member-hash", local.Hash,
			"remote-peer-id", fmt.Sprintf("%x", p.id)}
		switch {
		case p.err != nil:
			msg := "cannot fetch hash from remote peer"
			switch {
			case errors.Is(p.err, rpctypes.ErrGRPCFutureRev), p.err.Error() == rpctypes.ErrGRPCFutureRev.Error():
				msg = "cannot fetch hash from slow remote peer"
			case errors.Is(p.err, rpctypes.ErrGRPCCompacted), p.err.Error() == rpctypes.ErrGRPCCompacted.Error():
				msg = "cannot fetch hash from remote peer; local member is behind"
			}
			m.log.Warn(msg, append(fields, "error", p.err.Error())...)
		case p.resp.Hash == local.Hash:
		case p.resp.CompactRevision != local.CompactRevision:
			m.log.Warn("found different compact revision values from remote peer", append(fields,
				"remote-peer-compact-revision", p.resp.CompactRevision, "remote-peer-hash", p.resp.Hash)...)
		default:
			m.log.Warn("found different hash values from remote peer", append(fields,
				"remote-peer-compact-revision", p.resp.CompactRevision, "remote-peer-hash", p.resp.Hash)...)
			mismatched = append(mismatched, p.id)
		}
	}
	return mismatched
}

// initialCorruptCheck compares this member's hash at its revision with its
// peers' before it serves (a restart over existing data).
func (m *Member) initialCorruptCheck() error {
	m.log.Info("starting initial corruption check", "local-member-id", fmt.Sprintf("%x", m.id), "timeout", corruptCheckTimeout.String())
	local, err := m.hashKVLocal(0)
	if err != nil {
		return fmt.Errorf("initial corruption check: %w", err)
	}
	if bad := m.compareHashes(local, m.peerHashes(local.Header.Revision)); len(bad) > 0 {
		return fmt.Errorf("%x found data inconsistency with peers", m.id)
	}
	m.log.Info("initial corruption checking passed; no corruption", "local-member-id", fmt.Sprintf("%x", m.id))
	return nil
}

// corruptCheckLoop runs the leader's periodic check and its check at
// compactions, each every its interval (0: off).
func (m *Member) corruptCheckLoop(every, compactEvery time.Duration) {
	defer m.done.Done()
	var stops []func()
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	tick := func(d time.Duration) <-chan time.Time {
		if d <= 0 {
			return nil // never ready
		}
		t := time.NewTicker(d)
		stops = append(stops, t.Stop)
		return t.C
	}
	periodic, compacted := tick(every), tick(compactEvery)
	var checkedCompact int64
	for {
		select {
		case <-m.stopping:
			return
		case <-periodic:
			if m.lead.Load() == m.id {
				m.leaderCorruptCheck(0)
			}
		case <-compacted:
			if rev := m.eng.CompactRev(); rev > checkedCompact && m.lead.Load() == m.id {
				if m.leaderCorruptCheck(rev) {
					checkedCompact = rev
				}
			}
		}
	}
}

// leaderCorruptCheck compares the leader's hash at rev (0: its current
// revision) with its followers' and raises the CORRUPT alarm for each
// that differs. It reports whether every follower was compared.
func (m *Member) leaderCorruptCheck(rev int64) (all bool) {
	local, err := m.hashKVLocal(rev)
	if err != nil {
		m.log.Warn("failed to hash kv store", "revision", rev, "error", err)
		return false
	}
	peers := m.peerHashes(local.Header.Revision)
	all = true
	for _, p := range peers {
		all = all && p.err == nil && p.resp.CompactRevision == local.CompactRevision
	}
	for _, id := range m.compareHashes(local, peers) {
		m.log.Error("found hash mismatch; raising the CORRUPT alarm", "member-id", fmt.Sprintf("%x", id), "revision", local.Header.Revision,
			"compact-revision", local.CompactRevision)
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		_, err := m.Propose(ctx, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{
			Action: pb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: pb.AlarmType_CORRUPT}})
		cancel()
		if err != nil {
			m.log.Warn("raising the CORRUPT alarm", "member-id", fmt.Sprintf("%x", id), "error", err)
		}
	}
	return all
}

// HashKV is the engine's HashKV, timed (etcd_mvcc_hash_rev_duration_seconds).
func (m *Member) HashKV(rev int64) (engine.HashResult, error) {
	start := time.Now()
	h, err := m.eng.HashKV(rev)
	if err == nil {
		m.metrics.hashRevDuration.Observe(time.Since(start).Seconds())
	}
	return h, err
}

// HashBackend is the engine's hash of the whole page file, timed
// (etcd_mvcc_hash_duration_seconds).
func (m *Member) HashBackend() (uint32, error) {
	start := time.Now()
	h, err := m.eng.HashBackend()
	if err == nil {
		m.metrics.hashDuration.Observe(time.Since(start).Seconds())
	}
	return h, err
}
