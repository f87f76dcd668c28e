package engine

import (
	"errors"
	"time"
)

// BatchPolicy says when the open batch commits: once it is Interval old or
// holds Limit applied entries, whichever comes first.
type BatchPolicy struct {
	Interval time.Duration
	Limit    int
}

// DefaultBatchPolicy is etcd's backend default (100 ms, 10,000 writes).
var DefaultBatchPolicy = BatchPolicy{Interval: 100 * time.Millisecond, Limit: 10000}

// SetBatchPolicy replaces the policy CommitIfDue follows.
func (s *Store) SetBatchPolicy(p BatchPolicy) { s.policy = p }

// AppliedIndex returns the raft index of the last entry applied, in the
// open batch or durable.
func (s *Store) AppliedIndex() uint64 { return s.applied }

// refusal reports whether err is a request's own result, decided before it
// wrote anything, rather than a failure of the store.
func refusal(err error) bool {
	for _, r := range []error{ErrDuplicateKey, ErrKeyNotFound, ErrFutureRev, ErrCompacted, ErrEmptyKey,
		ErrLeaseNotFound, ErrLeaseExists, ErrLeaseTTLTooLarge,
		ErrMemberExist, ErrPeerURLExist, ErrMemberNotFound, ErrMemberNotLearner, ErrTooManyLearners} {
		if errors.Is(err, r) {
			return true
		}
	}
	for _, r := range authRefusals {
		if errors.Is(err, r) {
			return true
		}
	}
	return false
}

// begin decides whether the entry at index is still to be applied: raft
// replays, after a restart, every entry after its own snapshot, which may
// be older than the store's last commit.
func (s *Store) begin(index uint64) bool { return index > s.applied }

// end records index as applied. The batch that holds its effects writes
// it when it commits (once per batch, not per entry), so the two become
// durable together.
func (s *Store) end(index uint64) {
	s.applied = index
	s.pending++
}

// Apply runs the transaction of the raft entry at index, once. An entry
// at or below the applied index is skipped (ok is false). A request the
// store refuses (a key written twice, a future or compacted revision, ...)
// is applied all the same, with that error as its result. Any other error
// is the store failing: it must not be used further.
func (s *Store) Apply(index uint64, req *TxnRequest) (resp *TxnResponse, ok bool, err error) {
	if !s.begin(index) {
		return nil, false, nil
	}
	resp, err = s.Txn(req)
	if err != nil && !refusal(err) {
		return nil, false, err
	}
	s.end(index)
	return resp, true, err
}

// ApplyCompact compacts to rev as the raft entry at index, once; a refusal
// (ErrCompacted, ErrFutureRev) is its result, as in Apply.
func (s *Store) ApplyCompact(index uint64, rev int64) (ok bool, err error) {
	if !s.begin(index) {
		return false, nil
	}
	err = s.Compact(rev)
	if err != nil && !refusal(err) {
		return false, err
	}
	s.end(index)
	return true, err
}

// ApplyLeaseGrant grants lease id as the raft entry at index, once; a
// refusal (ErrLeaseExists, ErrLeaseTTLTooLarge) is its result.
func (s *Store) ApplyLeaseGrant(index uint64, id, ttl int64) (granted int64, ok bool, err error) {
	if !s.begin(index) {
		return 0, false, nil
	}
	granted, err = s.LeaseGrant(id, ttl)
	if err != nil && !refusal(err) {
		return 0, false, err
	}
	s.end(index)
	return granted, true, err
}

// ApplyLeaseRevoke revokes lease id, its keys with it, as the raft entry
// at index, once; ErrLeaseNotFound is a result. It returns the revision
// after.
func (s *Store) ApplyLeaseRevoke(index uint64, id int64) (rev int64, ok bool, err error) {
	if !s.begin(index) {
		return 0, false, nil
	}
	rev, err = s.LeaseRevoke(id)
	if err != nil && !refusal(err) {
		return 0, false, err
	}
	s.end(index)
	return rev, true, err
}

// ApplyLeaseCheckpoint records remaining TTLs as the raft entry at index,
// once.
func (s *Store) ApplyLeaseCheckpoint(index uint64, cps []LeaseCheckpoint) (ok bool, err error) {
	if !s.begin(index) {
		return false, nil
	}
	if err := s.LeaseCheckpoint(cps); err != nil {
		return false, err
	}
	s.end(index)
	return true, nil
}

// ApplyChange applies an auth, alarm or membership change as the raft
// entry at index, once: f calls one of the store's methods for it
// (AuthEnable, UserAdd, SetAlarm, AddMember, ...), whose refusal (a user
// that exists, a role not found, ...) is the result.
func (s *Store) ApplyChange(index uint64, f func() error) (ok bool, err error) {
	if !s.begin(index) {
		return false, nil
	}
	err = f()
	if err != nil && !refusal(err) {
		return false, err
	}
	s.end(index)
	return true, err
}

// ApplyEmpty records the raft entry at index, which changes nothing here
// (a leader's empty entry, a membership change), as applied.
func (s *Store) ApplyEmpty(index uint64) (ok bool, err error) {
	if !s.begin(index) {
		return false, nil
	}
	s.end(index)
	return true, nil
}

// Uncommitted is how many applied writes the open batch holds, not yet
// committed to the page file (the applier's).
func (s *Store) Uncommitted() int { return s.pending }

// Compacting reports whether a compaction has deletions left to make
// (the applier's).
func (s *Store) Compacting() bool { return s.comp != nil }

// CompactingIndex reports whether the compaction under way is still on
// the index, not yet on the backend's deletions (the applier's).
func (s *Store) CompactingIndex() bool { return s.comp != nil && s.comp.indexNext != nil }

// HousekeepingDue reports whether the open batch has reached its size
// limit or a compaction has deletions left: work for CommitIfDue or
// CompactStep that should not wait for the batch's age or the next tick.
func (s *Store) HousekeepingDue() bool {
	return s.pending > 0 && s.pending >= s.policy.Limit || s.comp != nil
}

// CommitIfDue commits the open batch if the policy says so at now. The
// applier calls it after its applies and on its ticks; the store keeps no
// clock and no goroutine of its own.
func (s *Store) CommitIfDue(now time.Time) (bool, error) {
	if s.pending == 0 {
		return false, nil
	}
	if s.batchStart.IsZero() {
		s.batchStart = now
	}
	if s.pending < s.policy.Limit && now.Sub(s.batchStart) < s.policy.Interval {
		return false, nil
	}
	return true, s.Commit()
}
