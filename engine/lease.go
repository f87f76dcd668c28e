package engine

import (
	"bytes"
	"cmp"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cairn-kv/cairn/pagefile"
)

// Lease errors, with etcd's messages.
var (
	ErrLeaseNotFound    = errors.New("etcdserver: requested lease not found")
	ErrLeaseExists      = errors.New("etcdserver: lease already exists")
	ErrLeaseTTLTooLarge = errors.New("etcdserver: too large lease TTL")
	ErrNotPrimary       = errors.New("engine: not the primary lessor")
)

const (
	// MaxLeaseTTL is the largest TTL a lease may be granted, in seconds.
	MaxLeaseTTL = 9_000_000_000
	// DefaultMinLeaseTTL is the least TTL a lease gets, in seconds; the
	// server sets the real one from its election timeout, as etcd does.
	DefaultMinLeaseTTL = 5
	// expiredRetry is how long a lease reported expired waits before it is
	// reported again, should its revoke not have been applied by then.
	expiredRetry = 3 * time.Second
)

var leaseBucket = []byte("lease")

// forever is the expiry of a lease on a member that is not the primary.
var forever = time.Unix(math.MaxInt64>>1, 0)

// lease is one lease; its fields are guarded by the lessor's lock.
type lease struct {
	id  int64
	ttl int64 // as granted (raised to the minimum), seconds
	// remaining is the TTL left at the last checkpoint (0: none): a new
	// primary counts from it rather than from ttl.
	remaining int64
	// expiry is when the primary lets it lapse; forever elsewhere.
	expiry time.Time
	// retry: once reported expired, not again before this.
	retry time.Time
	keys  map[string]struct{}
}

// LeaseInfo is what TimeToLive tells of a lease.
type LeaseInfo struct {
	ID         int64
	TTL        int64 // seconds left (the granted TTL where no primary counts)
	GrantedTTL int64
	Keys       [][]byte // with keys asked for: attached keys, in order
}

// LeaseCheckpoint is a lease's remaining TTL, as the primary records it
// through the log.
type LeaseCheckpoint struct {
	ID        int64
	Remaining int64 // seconds
}

// lessor keeps the leases: their TTLs and keys are replicated state, their
// expiry is kept only by the primary (the leader's member), on its clock.
type lessor struct {
	mu      sync.RWMutex
	leases  map[int64]*lease
	primary bool
	minTTL  int64
	clock   func() time.Time
	// expiries orders the primary's leases by when to look at them next:
	// their expiry, or a retry after one was reported. Entries for a lease
	// renewed or gone since are skipped when met.
	expiries expiryHeap
}

type expiryItem struct {
	id     int64
	expiry time.Time
}

type expiryHeap []expiryItem

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].expiry.Before(h[j].expiry) }
func (h expiryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)        { *h = append(*h, x.(expiryItem)) }
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// SetLeaseClock sets the clock lease expiry runs on (time.Now by default);
// tests pass a fake one.
func (s *Store) SetLeaseClock(now func() time.Time) {
	s.les.mu.Lock()
	defer s.les.mu.Unlock()
	s.les.clock = now
}

// SetMinLeaseTTL sets the least TTL a lease is granted, in seconds.
func (s *Store) SetMinLeaseTTL(ttl int64) {
	s.les.mu.Lock()
	defer s.les.mu.Unlock()
	s.les.minTTL = ttl
}

func encodeLease(l *lease) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint64(b, uint64(l.ttl))
	binary.LittleEndian.PutUint64(b[8:], uint64(l.remaining))
	return b
}

// loadLeases reads the lease bucket; keys are attached by Open as it
// rebuilds the index.
func loadLeases(tx *pagefile.Tx) (map[int64]*lease, error) {
	out := map[int64]*lease{}
	c := tx.Bucket(leaseBucket).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(k) != 8 || len(v) != 16 {
			return nil, fmt.Errorf("engine: bad lease record %x", k)
		}
		id := int64(binary.BigEndian.Uint64(k))
		out[id] = &lease{id: id, ttl: int64(binary.LittleEndian.Uint64(v)), remaining: int64(binary.LittleEndian.Uint64(v[8:])),
			expiry: forever, keys: map[string]struct{}{}}
	}
	return out, nil
}

// attach moves key from lease from to lease to (0: none), as a write
// changes it. A lease the store no longer has is skipped: the write was
// checked against it, and a revoke takes its keys in the same revision.
func (le *lessor) attach(key []byte, from, to int64) {
	if from == to {
		return
	}
	le.mu.Lock()
	defer le.mu.Unlock()
	if l := le.leases[from]; l != nil {
		delete(l.keys, string(key))
	}
	if l := le.leases[to]; l != nil {
		l.keys[string(key)] = struct{}{}
	}
}

func (le *lessor) exists(id int64) bool {
	le.mu.RLock()
	defer le.mu.RUnlock()
	return le.leases[id] != nil
}

// LeaseGrant creates lease id with ttl seconds (raised to the minimum). The
// server picks an id for a request that gave none, before proposing it.
func (s *Store) LeaseGrant(id, ttl int64) (granted int64, err error) {
	le := &s.les
	switch {
	case id == 0:
		return 0, ErrLeaseNotFound
	case ttl > MaxLeaseTTL:
		return 0, ErrLeaseTTLTooLarge
	}
	le.mu.Lock()
	defer le.mu.Unlock()
	if le.leases[id] != nil {
		return 0, ErrLeaseExists
	}
	l := &lease{id: id, ttl: max(ttl, le.minTTL), expiry: forever, keys: map[string]struct{}{}}
	if err := s.batch.Bucket(leaseBucket).Put(be64(uint64(id)), encodeLease(l)); err != nil {
		return 0, err
	}
	le.leases[id] = l
	if le.primary {
		le.schedule(l, le.clock().Add(time.Duration(l.ttl)*time.Second))
	}
	s.counters.LeasesGranted.Add(1)
	return l.ttl, nil
}

// schedule sets a lease's expiry on the primary. Under le.mu.
func (le *lessor) schedule(l *lease, at time.Time) {
	l.expiry, l.retry = at, time.Time{}
	heap.Push(&le.expiries, expiryItem{l.id, at})
}

// LeaseRevoke deletes lease id and, in one revision, every key attached
// to it (in key order, as etcd does). It returns the store's revision
// after.
func (s *Store) LeaseRevoke(id int64) (int64, error) {
	le := &s.les
	le.mu.RLock()
	l := le.leases[id]
	var keys []string
	if l != nil {
		for k := range l.keys {
			keys = append(keys, k)
		}
	}
	le.mu.RUnlock()
	if l == nil {
		return 0, ErrLeaseNotFound
	}
	slices.Sort(keys)
	w := s.Write()
	for _, k := range keys {
		if _, err := w.DeleteRange([]byte(k), nil); err != nil {
			return 0, err
		}
	}
	if err := s.batch.Bucket(leaseBucket).Delete(be64(uint64(id))); err != nil {
		return 0, err
	}
	le.mu.Lock()
	delete(le.leases, id)
	le.mu.Unlock()
	w.End()
	s.counters.LeasesRevoked.Add(1)
	return s.Rev(), nil
}

// LeaseCheckpoint records the primary's remaining TTLs, so that a later
// primary counts from them. A lease gone meanwhile is skipped.
func (s *Store) LeaseCheckpoint(cps []LeaseCheckpoint) error {
	le := &s.les
	le.mu.Lock()
	defer le.mu.Unlock()
	for _, cp := range cps {
		l := le.leases[cp.ID]
		if l == nil {
			continue
		}
		l.remaining = cp.Remaining
		if err := s.batch.Bucket(leaseBucket).Put(be64(uint64(l.id)), encodeLease(l)); err != nil {
			return err
		}
	}
	return nil
}

// LeaseRenew (keep-alive) restarts a lease's TTL on the primary and
// returns it. For a lease with a checkpointed remaining TTL, clear is
// true: the server must then propose a checkpoint of 0 so that later
// primaries count from the full TTL again, as etcd does.
func (s *Store) LeaseRenew(id int64) (ttl int64, clear bool, err error) {
	le := &s.les
	le.mu.Lock()
	defer le.mu.Unlock()
	if !le.primary {
		return 0, false, ErrNotPrimary
	}
	l := le.leases[id]
	if l == nil || !l.expiry.After(le.clock()) {
		// Gone, or expired and waiting for its revoke.
		return 0, false, ErrLeaseNotFound
	}
	le.schedule(l, le.clock().Add(time.Duration(l.ttl)*time.Second))
	s.counters.LeasesRenewed.Add(1)
	return l.ttl, l.remaining > 0, nil
}

// LeaseTimeToLive tells of a lease: the seconds left as the primary
// counts them (elsewhere, the checkpointed or granted TTL), and its keys
// if asked.
func (s *Store) LeaseTimeToLive(id int64, keys bool) (LeaseInfo, error) {
	le := &s.les
	le.mu.RLock()
	defer le.mu.RUnlock()
	l := le.leases[id]
	if l == nil {
		return LeaseInfo{}, ErrLeaseNotFound
	}
	info := LeaseInfo{ID: id, GrantedTTL: l.ttl, TTL: l.ttl}
	switch {
	case le.primary:
		info.TTL = max(int64(l.expiry.Sub(le.clock()).Seconds()), 0)
	case l.remaining > 0:
		info.TTL = l.remaining
	}
	if keys {
		for k := range l.keys {
			info.Keys = append(info.Keys, []byte(k))
		}
		slices.SortFunc(info.Keys, bytes.Compare)
	}
	return info, nil
}

// Leases returns every lease's id, in order.
func (s *Store) Leases() []int64 {
	le := &s.les
	le.mu.RLock()
	defer le.mu.RUnlock()
	return slices.Sorted(maps.Keys(le.leases))
}

// LeasePromote makes this member the primary: every lease expires extend
// plus its remaining TTL (checkpointed, else granted) from now, so a new
// leader never hands out fresh TTLs for time already spent.
func (s *Store) LeasePromote(extend time.Duration) {
	le := &s.les
	le.mu.Lock()
	defer le.mu.Unlock()
	le.primary = true
	le.scheduleAll(extend)
}

// scheduleAll counts every lease's expiry from now: extend plus its
// remaining TTL (checkpointed, else granted). Under le.mu.
func (le *lessor) scheduleAll(extend time.Duration) {
	le.expiries = le.expiries[:0]
	now := le.clock()
	for _, l := range le.leases {
		ttl := l.ttl
		if l.remaining > 0 {
			ttl = l.remaining
		}
		le.schedule(l, now.Add(extend+time.Duration(ttl)*time.Second))
	}
}

// LeaseDemote stops this member counting expiry.
func (s *Store) LeaseDemote() {
	le := &s.les
	le.mu.Lock()
	defer le.mu.Unlock()
	le.primary = false
	le.expiries = nil
	for _, l := range le.leases {
		l.expiry = forever
	}
}

// ExpiredLeases returns, on the primary, up to limit leases whose TTL has
// run out, for the server to revoke through the log. Each is reported
// again only if its revoke has not been applied expiredRetry later; it
// stays expired meanwhile (a keep-alive finds it gone).
func (s *Store) ExpiredLeases(limit int) []int64 {
	le := &s.les
	le.mu.Lock()
	defer le.mu.Unlock()
	if !le.primary {
		return nil
	}
	now := le.clock()
	var out []int64
	for len(out) < limit && le.expiries.Len() > 0 && !le.expiries[0].expiry.After(now) {
		it := heap.Pop(&le.expiries).(expiryItem)
		l := le.leases[it.id]
		if l == nil || l.expiry.After(now) || l.retry.After(now) {
			continue // gone, renewed since, or reported and not yet due again
		}
		out = append(out, l.id)
		l.retry = now.Add(expiredRetry)
		heap.Push(&le.expiries, expiryItem{l.id, l.retry})
	}
	return out
}

// LeaseCheckpoints returns, on the primary, the remaining TTL of every
// lease not renewed for over a third of its TTL (a live client renews
// every third), for the server to record through the log: a new primary
// counts a lapsing lease from there rather than from its full TTL. The
// leases that are kept alive are not recorded (a checkpoint would cost a
// proposal at each of their renewals, to clear it).
func (s *Store) LeaseCheckpoints() []LeaseCheckpoint {
	le := &s.les
	le.mu.RLock()
	defer le.mu.RUnlock()
	if !le.primary {
		return nil
	}
	now := le.clock()
	var out []LeaseCheckpoint
	for _, l := range le.leases {
		left := int64(l.expiry.Sub(now).Seconds())
		if left > 0 && 3*left < 2*l.ttl {
			out = append(out, LeaseCheckpoint{ID: l.id, Remaining: left})
		}
	}
	slices.SortFunc(out, func(a, b LeaseCheckpoint) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// checkLeases verifies leases as a whole: memory is the backend, every
// key attached to a lease is alive now with that lease, and every alive
// key with a lease is attached to it. Under s.mu (read).
func (s *Store) checkLeases(leaseOf map[string]int64) error {
	le := &s.les
	le.mu.RLock()
	defer le.mu.RUnlock()
	stored, err := loadLeases(s.batch)
	if err != nil {
		return err
	}
	if len(stored) != len(le.leases) {
		return fmt.Errorf("engine: %d leases in memory, %d in the backend", len(le.leases), len(stored))
	}
	attached := 0
	for id, l := range le.leases {
		st := stored[id]
		if st == nil || st.ttl != l.ttl || st.remaining != l.remaining {
			return fmt.Errorf("engine: lease %d in memory differs from the backend", id)
		}
		for k := range l.keys {
			if leaseOf[k] != id {
				return fmt.Errorf("engine: key %q is attached to lease %d but has lease %d", k, id, leaseOf[k])
			}
		}
		attached += len(l.keys)
	}
	if attached != len(leaseOf) {
		return fmt.Errorf("engine: %d keys have leases, %d are attached", len(leaseOf), attached)
	}
	return nil
}
