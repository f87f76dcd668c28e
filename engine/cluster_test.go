package engine

import (
	"errors"
	"fmt"
	"maps"
	"math/rand"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// clusterModel is the naive membership: what every operation must do.
type clusterModel struct {
	members   map[uint64]Member
	removed   map[uint64]bool
	alarms    map[Alarm]bool
	downgrade Downgrade
}

func (m clusterModel) clone() clusterModel {
	c := clusterModel{members: map[uint64]Member{}, removed: maps.Clone(m.removed), alarms: maps.Clone(m.alarms), downgrade: m.downgrade}
	for id, x := range m.members {
		c.members[id] = x.clone()
	}
	return c
}

func (m clusterModel) urlTaken(id uint64, urls []string) bool {
	for oid, o := range m.members {
		for _, u := range urls {
			if oid != id && slices.Contains(o.PeerURLs, u) {
				return true
			}
		}
	}
	return false
}

// TestClusterAgainstModel runs random membership changes (add voters and
// learners, remove, update peer URLs, publish attributes, promote) and
// alarms and the downgrade job against a model, with commits, restarts and crashes that lose the
// open batch; every refusal must be etcd's, and membership and alarms
// after a restart must be what was committed.
func TestClusterAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	path := filepath.Join(t.TempDir(), "db")
	db, s := openStore(t, path)
	defer func() { _ = s.Close(); _ = db.Close() }()
	m := clusterModel{members: map[uint64]Member{}, removed: map[uint64]bool{}, alarms: map[Alarm]bool{}}
	committed := m.clone()
	// New IDs come from a wide range (a removed ID is gone for good);
	// the other operations mostly name a member that exists.
	const ids = 200
	newID := func() uint64 { return 1 + uint64(rng.Intn(ids)) }
	id := func() uint64 {
		if len(m.members) > 0 && rng.Intn(10) < 7 {
			keys := slices.Sorted(maps.Keys(m.members))
			return keys[rng.Intn(len(keys))]
		}
		return newID()
	}
	urls := func() []string {
		out := []string{fmt.Sprintf("http://127.0.0.1:%d", 2380+rng.Intn(10))}
		if rng.Intn(3) == 0 {
			out = append(out, fmt.Sprintf("http://127.0.0.1:%d", 2380+rng.Intn(10)))
		}
		return out
	}
	const maxLearners = 1
	outcomes := map[string]int{}
	for step := 0; step < 3000; step++ {
		var err, want error
		var op string
		switch r := rng.Intn(100); {
		case r < 25:
			x := Member{ID: newID(), PeerURLs: urls(), IsLearner: rng.Intn(3) == 0}
			if rng.Intn(10) == 0 {
				x.ID = id() // most likely taken
			}
			op = "add"
			learners := 0
			for _, o := range m.members {
				if o.IsLearner {
					learners++
				}
			}
			_, exists := m.members[x.ID]
			switch {
			case exists || m.removed[x.ID]:
				want = ErrMemberExist
			case m.urlTaken(x.ID, x.PeerURLs):
				want = ErrPeerURLExist
			case x.IsLearner && learners >= maxLearners:
				want = ErrTooManyLearners
			default:
				m.members[x.ID] = x.clone()
			}
			if cerr := s.CheckAddMember(x, maxLearners); !errors.Is(cerr, want) || (want == nil && cerr != nil) {
				t.Fatalf("step %d: CheckAddMember: %v, want %v", step, cerr, want)
			}
			err = s.AddMember(x, maxLearners)
		case r < 35:
			x := id()
			op = "remove"
			if _, ok := m.members[x]; !ok {
				want = ErrMemberNotFound
			} else {
				delete(m.members, x)
				m.removed[x] = true
			}
			err = s.RemoveMember(x)
		case r < 45:
			x, u := id(), urls()
			op = "update"
			o, ok := m.members[x]
			switch {
			case !ok:
				want = ErrMemberNotFound
			case m.urlTaken(x, u):
				want = ErrPeerURLExist
			default:
				o.PeerURLs = u
				m.members[x] = o
			}
			if cerr := s.CheckUpdateMember(x, u); !errors.Is(cerr, want) || (want == nil && cerr != nil) {
				t.Fatalf("step %d: CheckUpdateMember: %v, want %v", step, cerr, want)
			}
			err = s.UpdateMember(x, u)
		case r < 55:
			x, name, cu := id(), fmt.Sprint("m", rng.Intn(100)), urls()
			op = "attributes"
			if o, ok := m.members[x]; !ok {
				want = ErrMemberNotFound
			} else {
				o.Name, o.ClientURLs = name, cu
				m.members[x] = o
			}
			err = s.SetMemberAttributes(x, name, cu)
		case r < 65:
			x := id()
			op = "promote"
			o, ok := m.members[x]
			switch {
			case !ok:
				want = ErrMemberNotFound
			case !o.IsLearner:
				want = ErrMemberNotLearner
			default:
				o.IsLearner = false
				m.members[x] = o
			}
			err = s.PromoteMember(x)
		case r < 70:
			op = "downgrade"
			d := Downgrade{Enabled: rng.Intn(2) == 0}
			if d.Enabled {
				d.TargetVersion = fmt.Sprintf("3.%d.0", rng.Intn(5))
			}
			m.downgrade = d
			err = s.SetDowngrade(d)
		case r < 80:
			a, on := Alarm{MemberID: id(), Type: AlarmType(1 + rng.Intn(2))}, rng.Intn(2) == 0
			op = "alarm"
			changed, e := s.SetAlarm(a, on)
			err = e
			if changed != (m.alarms[a] != on) {
				t.Fatalf("step %d: alarm %+v on=%v changed %v, the model had %v", step, a, on, changed, m.alarms[a])
			}
			if on {
				m.alarms[a] = true
			} else {
				delete(m.alarms, a)
			}
		case r < 90:
			op = "commit"
			if err = s.Commit(); err == nil {
				committed = m.clone()
			}
		case r < 95:
			op = "restart"
			if err = s.Close(); err == nil {
				committed = m.clone()
			}
			_ = db.Close()
			db, s = openStore(t, path)
		default:
			op = "crash"
			s.batch.Rollback()
			_ = db.Close()
			db, s = openStore(t, path)
			m = committed.clone()
		}
		if !errors.Is(err, want) || (want == nil && err != nil) {
			t.Fatalf("step %d: %s: %v, want %v", step, op, err, want)
		}
		outcomes[fmt.Sprint(op, " ", err)]++
		// The store's view must be the model's.
		got := s.Members()
		if len(got) != len(m.members) {
			t.Fatalf("step %d (%s): %d members, want %d", step, op, len(got), len(m.members))
		}
		for i, x := range got {
			w := m.members[x.ID]
			if (i > 0 && got[i-1].ID >= x.ID) || w.ID != x.ID || w.Name != x.Name || w.IsLearner != x.IsLearner || !slices.Equal(w.PeerURLs, x.PeerURLs) || !slices.Equal(w.ClientURLs, x.ClientURLs) {
				t.Fatalf("step %d (%s): member %+v, want %+v", step, op, x, w)
			}
		}
		for x := uint64(1); x <= ids; x++ {
			if s.IsRemoved(x) != m.removed[x] {
				t.Fatalf("step %d (%s): member %d removed %v, want %v", step, op, x, s.IsRemoved(x), m.removed[x])
			}
		}
		if d := s.Downgrade(); d != m.downgrade {
			t.Fatalf("step %d (%s): downgrade %+v, want %+v", step, op, d, m.downgrade)
		}
		alarms := s.Alarms()
		if len(alarms) != len(m.alarms) {
			t.Fatalf("step %d (%s): %d alarms, want %d", step, op, len(alarms), len(m.alarms))
		}
		for _, a := range alarms {
			if !m.alarms[a] {
				t.Fatalf("step %d (%s): alarm %+v raised, not in the model", step, op, a)
			}
		}
	}
	t.Logf("outcomes: %v", outcomes)
	for _, e := range []error{ErrMemberExist, ErrPeerURLExist, ErrMemberNotFound, ErrMemberNotLearner, ErrTooManyLearners} {
		seen := false
		for k := range outcomes {
			seen = seen || (len(k) > len(e.Error()) && k[len(k)-len(e.Error()):] == e.Error())
		}
		if !seen {
			t.Fatalf("the run never met %v", e)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
