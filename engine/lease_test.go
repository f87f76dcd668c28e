package engine

import (
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// mlease is a lease in the naive model.
type mlease struct {
	ttl, remaining int64
	expiry         time.Time // zero: not counted (no primary)
	retry          time.Time // reported expired: not again before this
}

// leaseModel is the naive version of the lessor and of which key has
// which lease.
type leaseModel struct {
	leases  map[int64]*mlease
	keys    map[string]int64 // alive keys -> lease (0: none)
	primary bool
}

func (m *leaseModel) attached(id int64) []string {
	var out []string
	for k, l := range m.keys {
		if l == id {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// TestLeasesAgainstModel runs random grants (some too large or taken),
// revokes, puts with and without leases (some naming no lease), deletes,
// keep-alives, checkpoints, expiry as the server would drive it (revoking
// what the primary reports), promotions, demotions and restarts, on a
// fake clock, against a naive model; it compares every lease's TTL and
// keys, the list, the keys themselves, and the whole store at the end.
func TestLeasesAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	path := filepath.Join(t.TempDir(), "db")
	now := time.Unix(1_700_000_000, 0)
	db, s := openStore(t, path)
	setup := func() {
		s.SetLeaseClock(func() time.Time { return now })
		s.SetMinLeaseTTL(3)
	}
	setup()
	m := &leaseModel{leases: map[int64]*mlease{}, keys: map[string]int64{}}
	key := func() string { return fmt.Sprintf("k%02d", rng.Intn(20)) }
	leaseID := func() int64 { return 1 + rng.Int63n(8) }
	counts := map[string]int{}
	schedule := func(l *mlease, extend time.Duration) {
		ttl := l.ttl
		if l.remaining > 0 {
			ttl = l.remaining
		}
		l.expiry, l.retry = now.Add(extend+time.Duration(ttl)*time.Second), time.Time{}
	}
	revoke := func(id int64) {
		t.Helper()
		_, err := s.LeaseRevoke(id)
		if _, ok := m.leases[id]; !ok {
			if !errors.Is(err, ErrLeaseNotFound) {
				t.Fatalf("revoking absent lease %d: %v", id, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range m.attached(id) {
			delete(m.keys, k)
		}
		delete(m.leases, id)
	}
	for step := 0; step < 10000; step++ {
		switch x := rng.Intn(100); {
		case x < 12: // grant
			id, ttl := leaseID(), 1+rng.Int63n(30)
			if rng.Intn(30) == 0 {
				ttl = MaxLeaseTTL + 1
			}
			got, err := s.LeaseGrant(id, ttl)
			switch {
			case ttl > MaxLeaseTTL:
				if !errors.Is(err, ErrLeaseTTLTooLarge) {
					t.Fatalf("step %d: grant with TTL %d: %v", step, ttl, err)
				}
			case m.leases[id] != nil:
				if !errors.Is(err, ErrLeaseExists) {
					t.Fatalf("step %d: grant of existing lease %d: %v", step, id, err)
				}
			default:
				if err != nil || got != max(ttl, 3) {
					t.Fatalf("step %d: grant %d ttl %d: %d %v", step, id, ttl, got, err)
				}
				l := &mlease{ttl: got}
				if m.primary {
					schedule(l, 0)
				}
				m.leases[id] = l
			}
			counts["grant"]++
		case x < 17:
			revoke(leaseID())
			counts["revoke"]++
		case x < 50: // put, with a lease (maybe absent) or none
			k, id := key(), int64(0)
			if rng.Intn(3) != 0 {
				id = leaseID()
			}
			_, err := s.Txn(&TxnRequest{Success: []Op{{Type: OpPut, Key: []byte(k), Value: []byte("v"), Lease: id}}})
			if id != 0 && m.leases[id] == nil {
				if !errors.Is(err, ErrLeaseNotFound) {
					t.Fatalf("step %d: put with absent lease %d: %v", step, id, err)
				}
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			m.keys[k] = id
			counts["put"]++
		case x < 58: // delete
			k := key()
			if _, err := s.Txn(&TxnRequest{Success: []Op{{Type: OpDelete, Key: []byte(k)}}}); err != nil {
				t.Fatal(err)
			}
			delete(m.keys, k)
		case x < 68: // keep-alive
			id := leaseID()
			ttl, clear, err := s.LeaseRenew(id)
			l := m.leases[id]
			switch {
			case !m.primary:
				if !errors.Is(err, ErrNotPrimary) {
					t.Fatalf("step %d: renew off the primary: %v", step, err)
				}
			case l == nil || !l.expiry.After(now):
				if !errors.Is(err, ErrLeaseNotFound) {
					t.Fatalf("step %d: renew of absent or expired lease %d: %v", step, id, err)
				}
			default:
				if err != nil || ttl != l.ttl || clear != (l.remaining > 0) {
					t.Fatalf("step %d: renew %d = %d %v %v, want %d %v", step, id, ttl, clear, err, l.ttl, l.remaining > 0)
				}
				l.expiry, l.retry = now.Add(time.Duration(l.ttl)*time.Second), time.Time{}
				if clear {
					if err := s.LeaseCheckpoint([]LeaseCheckpoint{{ID: id}}); err != nil {
						t.Fatal(err)
					}
					l.remaining = 0
				}
				counts["renew"]++
			}
		case x < 78: // time passes
			now = now.Add(time.Duration(rng.Intn(4000)) * time.Millisecond)
		case x < 84: // expiry, as the server drives it
			got := s.ExpiredLeases(1000)
			var want []int64
			for id, l := range m.leases {
				if m.primary && !l.expiry.After(now) && !l.retry.After(now) {
					want = append(want, id)
					l.retry = now.Add(expiredRetry)
				}
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: expired %v, want %v", step, got, want)
			}
			for _, id := range got {
				if rng.Intn(4) != 0 { // some revokes are late
					revoke(id)
					counts["expired"]++
				}
			}
		case x < 88: // checkpoint
			cps := s.LeaseCheckpoints()
			want := 0
			for _, l := range m.leases {
				if left := int64(l.expiry.Sub(now).Seconds()); m.primary && left > 0 && 3*left < 2*l.ttl {
					want++
				}
			}
			if len(cps) != want {
				t.Fatalf("step %d: %d checkpoints, want %d", step, len(cps), want)
			}
			for _, cp := range cps {
				l := m.leases[cp.ID]
				if l == nil || !m.primary || cp.Remaining != int64(l.expiry.Sub(now).Seconds()) {
					t.Fatalf("step %d: checkpoint %+v", step, cp)
				}
				l.remaining = cp.Remaining
			}
			if err := s.LeaseCheckpoint(cps); err != nil {
				t.Fatal(err)
			}
			counts["checkpoint"] += len(cps)
		case x < 92: // promote
			extend := time.Duration(rng.Intn(3)) * time.Second
			s.LeasePromote(extend)
			m.primary = true
			for _, l := range m.leases {
				schedule(l, extend)
			}
		case x < 95: // demote
			s.LeaseDemote()
			m.primary = false
			for _, l := range m.leases {
				l.expiry = time.Time{}
			}
		case x < 97: // restart
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			_ = db.Close()
			db, s = openStore(t, path)
			setup()
			m.primary = false
			for _, l := range m.leases {
				l.expiry = time.Time{}
			}
			counts["restart"]++
		default: // commit
			if err := s.Commit(); err != nil {
				t.Fatal(err)
			}
		}

		// Every lease, as TimeToLive tells it, and the list.
		var ids []int64
		for id, l := range m.leases {
			ids = append(ids, id)
			info, err := s.LeaseTimeToLive(id, true)
			if err != nil {
				t.Fatalf("step %d: lease %d: %v", step, id, err)
			}
			ttl := l.ttl
			switch {
			case m.primary:
				ttl = max(int64(l.expiry.Sub(now).Seconds()), 0)
			case l.remaining > 0:
				ttl = l.remaining
			}
			var keys []string
			for _, k := range info.Keys {
				keys = append(keys, string(k))
			}
			if info.GrantedTTL != l.ttl || info.TTL != ttl || !slices.Equal(keys, m.attached(id)) {
				t.Fatalf("step %d: lease %d: %+v (keys %v), want ttl %d granted %d keys %v", step, id, info, keys, ttl, l.ttl, m.attached(id))
			}
		}
		slices.Sort(ids)
		if got := s.Leases(); !slices.Equal(got, ids) {
			t.Fatalf("step %d: leases %v, want %v", step, got, ids)
		}
		if _, err := s.LeaseTimeToLive(99, false); !errors.Is(err, ErrLeaseNotFound) {
			t.Fatalf("step %d: an absent lease: %v", step, err)
		}
		// The keys, with their leases.
		res, err := s.Range([]byte{0}, []byte{0}, RangeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.KVs) != len(m.keys) {
			t.Fatalf("step %d: %d keys, want %d", step, len(res.KVs), len(m.keys))
		}
		for _, kv := range res.KVs {
			if id, ok := m.keys[string(kv.Key)]; !ok || id != kv.Lease {
				t.Fatalf("step %d: key %s has lease %d, want %d (alive %v)", step, kv.Key, kv.Lease, id, ok)
			}
		}
	}
	requireHappened(t, counts, "grant", "revoke", "put", "renew", "expired", "checkpoint", "restart")
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	_ = db.Close()
}

// TestLeaseRevokeIsOneRevision: revoking a lease deletes all its keys in
// one revision, which a watcher gets in one response, in key order; a
// key moved to another lease, or to none, is not taken.
func TestLeaseRevokeIsOneRevision(t *testing.T) {
	_, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	grantLeases(t, s, 1, 2)
	for i, k := range []string{"c", "a", "b", "moved", "freed"} {
		if _, err := s.Txn(&TxnRequest{Success: []Op{{Type: OpPut, Key: []byte(k), Value: []byte(fmt.Sprint(i)), Lease: 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Txn(&TxnRequest{Success: []Op{
		{Type: OpPut, Key: []byte("moved"), Value: []byte("m"), Lease: 2},
		{Type: OpPut, Key: []byte("freed"), Value: []byte("f")},
	}}); err != nil {
		t.Fatal(err)
	}
	ws := s.NewWatchStream()
	defer ws.Close()
	if _, err := ws.Watch(WatchOptions{End: []byte{0}}); err != nil {
		t.Fatal(err)
	}
	before := s.Rev()
	rev, err := s.LeaseRevoke(1)
	if err != nil || rev != before+1 {
		t.Fatalf("revoke: revision %d %v, want %d", rev, err, before+1)
	}
	r := next(t, ws)
	var got []string
	for _, e := range r.Events {
		if e.Type != EventDelete || e.KV.ModRevision != rev {
			t.Fatalf("event %+v", e)
		}
		got = append(got, string(e.KV.Key))
	}
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("revoke deleted %v", got)
	}
	if _, err := s.LeaseRevoke(1); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("revoking twice: %v", err)
	}
	// An empty lease's revoke writes no revision.
	if _, err := s.LeaseGrant(3, 10); err != nil {
		t.Fatal(err)
	}
	if rev2, err := s.LeaseRevoke(3); err != nil || rev2 != rev {
		t.Fatalf("revoking an empty lease: revision %d %v, want %d", rev2, err, rev)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestLeaseNewPrimaryCountsFromCheckpoint: after a checkpoint, a member
// that becomes primary counts from the remaining TTL, not the granted one;
// a keep-alive asks for the checkpoint to be cleared, and moves the
// expiry.
func TestLeaseNewPrimaryCountsFromCheckpoint(t *testing.T) {
	_, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	now := time.Unix(1_700_000_000, 0)
	s.SetLeaseClock(func() time.Time { return now })
	if _, err := s.LeaseGrant(7, 100); err != nil {
		t.Fatal(err)
	}
	s.LeasePromote(0)
	now = now.Add(60 * time.Second)
	cps := s.LeaseCheckpoints()
	if len(cps) != 1 || cps[0] != (LeaseCheckpoint{ID: 7, Remaining: 40}) {
		t.Fatalf("checkpoints %+v", cps)
	}
	if err := s.LeaseCheckpoint(cps); err != nil {
		t.Fatal(err)
	}
	s.LeaseDemote()
	s.LeasePromote(2 * time.Second)
	if info, _ := s.LeaseTimeToLive(7, false); info.TTL != 42 {
		t.Fatalf("TTL after a new primary: %d, want 42", info.TTL)
	}
	now = now.Add(43 * time.Second)
	if got := s.ExpiredLeases(10); !slices.Equal(got, []int64{7}) {
		t.Fatalf("expired %v", got)
	}
	if got := s.ExpiredLeases(10); len(got) != 0 {
		t.Fatalf("reported again at once: %v", got)
	}
	now = now.Add(expiredRetry)
	if got := s.ExpiredLeases(10); !slices.Equal(got, []int64{7}) {
		t.Fatalf("not reported again after the retry interval: %v", got)
	}
	if _, _, err := s.LeaseRenew(7); !errors.Is(err, ErrLeaseNotFound) {
		t.Fatalf("keep-alive of an expired lease: %v", err)
	}
	if _, err := s.LeaseGrant(8, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.LeaseCheckpoint([]LeaseCheckpoint{{ID: 8, Remaining: 50}}); err != nil {
		t.Fatal(err)
	}
	if ttl, clear, err := s.LeaseRenew(8); err != nil || ttl != 100 || !clear {
		t.Fatalf("keep-alive of a checkpointed lease: %d %v %v", ttl, clear, err)
	}
	// A lease kept alive is not reported at its old expiry.
	if _, err := s.LeaseGrant(9, 10); err != nil {
		t.Fatal(err)
	}
	now = now.Add(5 * time.Second)
	if _, _, err := s.LeaseRenew(9); err != nil {
		t.Fatal(err)
	}
	now = now.Add(6 * time.Second)
	if got := s.ExpiredLeases(10); slices.Contains(got, 9) {
		t.Fatalf("a renewed lease reported at its old expiry: %v", got)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkLeaseCheckpoints measures the leader's once-a-second look for
// lapsing leases over 100,000 leases, a tenth of them lapsing.
func BenchmarkLeaseCheckpoints(b *testing.B) {
	_, s := openStore(b, filepath.Join(b.TempDir(), "db"))
	defer s.Close()
	now := time.Unix(1_700_000_000, 0)
	s.SetLeaseClock(func() time.Time { return now })
	const n = 100_000
	for id := int64(1); id <= n; id++ {
		if _, err := s.LeaseGrant(id, 60); err != nil {
			b.Fatal(err)
		}
	}
	s.LeasePromote(0)
	now = now.Add(30 * time.Second) // every lease has 30 s of 60 left
	for id := int64(1); id <= n; id++ {
		if id%10 != 0 {
			if _, _, err := s.LeaseRenew(id); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ResetTimer()
	for range b.N {
		if got := len(s.LeaseCheckpoints()); got != n/10 {
			b.Fatalf("%d lapsing leases, want %d", got, n/10)
		}
	}
}
