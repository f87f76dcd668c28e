package engine

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/cairn-kv/cairn/pagefile"
)

// Membership and alarm errors, with etcd's messages.
var (
	ErrMemberExist      = errors.New("etcdserver: member ID already exist")
	ErrPeerURLExist     = errors.New("etcdserver: Peer URLs already exists")
	ErrMemberNotFound   = errors.New("etcdserver: member not found")
	ErrMemberNotLearner = errors.New("etcdserver: can only promote a learner member")
	ErrTooManyLearners  = errors.New("etcdserver: too many learner members in cluster")
)

var (
	membersBucket = []byte("members")
	removedBucket = []byte("members_removed")
	alarmBucket   = []byte("alarm")
)

// Member is one member of the cluster, as the store keeps it.
type Member struct {
	ID         uint64   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
	IsLearner  bool     `json:"isLearner"`
}

func (m Member) clone() Member {
	m.PeerURLs, m.ClientURLs = slices.Clone(m.PeerURLs), slices.Clone(m.ClientURLs)
	return m
}

// AlarmType is etcd's AlarmType.
type AlarmType int32

const (
	AlarmNone AlarmType = iota
	AlarmNoSpace
	AlarmCorrupt
)

// Alarm is an alarm raised on a member.
type Alarm struct {
	MemberID uint64
	Type     AlarmType
}

// Downgrade is the cluster's downgrade job, as etcd records it: enabled,
// with the minor version the cluster is to go down to.
type Downgrade struct {
	TargetVersion string `json:"target-version"` // "" unless enabled
	Enabled       bool   `json:"enabled"`
}

// metaDowngrade is the meta record of the downgrade job (absent: none).
var metaDowngrade = []byte("downgrade")

// cluster is the membership, alarms and downgrade job: in memory for
// readers, written through to the batch by the writer.
type cluster struct {
	mu        sync.RWMutex
	members   map[uint64]Member
	removed   map[uint64]bool
	alarms    map[Alarm]bool
	downgrade Downgrade
}

// be64 is v as 8 big-endian bytes: ids as backend keys (they sort), and
// the revisions and indexes kept in meta records.
func be64(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

func alarmKey(a Alarm) []byte {
	var b [12]byte
	binary.BigEndian.PutUint64(b[:], a.MemberID)
	binary.BigEndian.PutUint32(b[8:], uint32(a.Type))
	return b[:]
}

// loadCluster reads membership and alarms as tx sees them.
func loadCluster(tx *pagefile.Tx) (*cluster, error) {
	cl := &cluster{members: map[uint64]Member{}, removed: map[uint64]bool{}, alarms: map[Alarm]bool{}}
	c := tx.Bucket(membersBucket).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var m Member
		if err := json.Unmarshal(v, &m); err != nil || len(k) != 8 || m.ID != binary.BigEndian.Uint64(k) {
			return nil, fmt.Errorf("engine: bad member record %x: %v", k, err)
		}
		cl.members[m.ID] = m
	}
	c = tx.Bucket(removedBucket).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) != 8 {
			return nil, fmt.Errorf("engine: bad removed-member record %x", k)
		}
		cl.removed[binary.BigEndian.Uint64(k)] = true
	}
	c = tx.Bucket(alarmBucket).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if len(k) != 12 {
			return nil, fmt.Errorf("engine: bad alarm record %x", k)
		}
		cl.alarms[Alarm{MemberID: binary.BigEndian.Uint64(k), Type: AlarmType(binary.BigEndian.Uint32(k[8:]))}] = true
	}
	if v := tx.Bucket(metaBucket).Get(metaDowngrade); v != nil {
		if err := json.Unmarshal(v, &cl.downgrade); err != nil {
			return nil, fmt.Errorf("engine: bad downgrade record %q: %v", v, err)
		}
	}
	return cl, nil
}

// SetDowngrade records the downgrade job (Enabled false: none).
func (s *Store) SetDowngrade(d Downgrade) error {
	if !d.Enabled {
		d.TargetVersion = ""
	}
	v, err := json.Marshal(d)
	if err != nil {
		return err
	}
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	if err := s.batch.Bucket(metaBucket).Put(metaDowngrade, v); err != nil {
		return err
	}
	s.cl.downgrade = d
	return nil
}

// Downgrade returns the downgrade job.
func (s *Store) Downgrade() Downgrade {
	s.cl.mu.RLock()
	defer s.cl.mu.RUnlock()
	return s.cl.downgrade
}

func (s *Store) putMember(m Member) error {
	v, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := s.batch.Bucket(membersBucket).Put(be64(m.ID), v); err != nil {
		return err
	}
	s.cl.members[m.ID] = m.clone()
	return nil
}

// peerURLTaken reports whether a member other than id uses one of urls.
func (cl *cluster) peerURLTaken(id uint64, urls []string) bool {
	for _, o := range cl.members {
		if o.ID == id {
			continue
		}
		for _, u := range urls {
			if slices.Contains(o.PeerURLs, u) {
				return true
			}
		}
	}
	return false
}

// AddMember adds m, a learner if m.IsLearner, refusing an ID in use or
// removed before, a peer URL in use, or a learner past maxLearners.
func (s *Store) AddMember(m Member, maxLearners int) error {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	if err := s.cl.checkAdd(m, maxLearners); err != nil {
		return err
	}
	return s.putMember(m)
}

// CheckAddMember says what AddMember would refuse, changing nothing.
func (s *Store) CheckAddMember(m Member, maxLearners int) error {
	s.cl.mu.RLock()
	defer s.cl.mu.RUnlock()
	return s.cl.checkAdd(m, maxLearners)
}

func (cl *cluster) checkAdd(m Member, maxLearners int) error {
	if _, ok := cl.members[m.ID]; ok || cl.removed[m.ID] {
		return ErrMemberExist
	}
	if cl.peerURLTaken(m.ID, m.PeerURLs) {
		return ErrPeerURLExist
	}
	if m.IsLearner {
		n := 0
		for _, o := range cl.members {
			if o.IsLearner {
				n++
			}
		}
		if n >= maxLearners {
			return ErrTooManyLearners
		}
	}
	return nil
}

// Member returns the member id, if there is one.
func (s *Store) Member(id uint64) (Member, bool) {
	s.cl.mu.RLock()
	defer s.cl.mu.RUnlock()
	m, ok := s.cl.members[id]
	return m.clone(), ok
}

// CheckUpdateMember says what UpdateMember would refuse, changing nothing.
func (s *Store) CheckUpdateMember(id uint64, peerURLs []string) error {
	s.cl.mu.RLock()
	defer s.cl.mu.RUnlock()
	if _, ok := s.cl.members[id]; !ok {
		return ErrMemberNotFound
	}
	if s.cl.peerURLTaken(id, peerURLs) {
		return ErrPeerURLExist
	}
	return nil
}

// RemoveMember removes a member; its ID can never be added again.
func (s *Store) RemoveMember(id uint64) error {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	if _, ok := s.cl.members[id]; !ok {
		return ErrMemberNotFound
	}
	if err := s.batch.Bucket(membersBucket).Delete(be64(id)); err != nil {
		return err
	}
	if err := s.batch.Bucket(removedBucket).Put(be64(id), []byte{}); err != nil {
		return err
	}
	delete(s.cl.members, id)
	s.cl.removed[id] = true
	return nil
}

// UpdateMember replaces a member's peer URLs.
func (s *Store) UpdateMember(id uint64, peerURLs []string) error {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	m, ok := s.cl.members[id]
	if !ok {
		return ErrMemberNotFound
	}
	if s.cl.peerURLTaken(id, peerURLs) {
		return ErrPeerURLExist
	}
	m.PeerURLs = peerURLs
	return s.putMember(m)
}

// SetMemberAttributes records the name and client URLs a member publishes
// when it starts.
func (s *Store) SetMemberAttributes(id uint64, name string, clientURLs []string) error {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	m, ok := s.cl.members[id]
	if !ok {
		return ErrMemberNotFound
	}
	m.Name, m.ClientURLs = name, clientURLs
	return s.putMember(m)
}

// PromoteMember makes a learner a voter. (Whether it has caught up is
// raft's to say, before the request is proposed.)
func (s *Store) PromoteMember(id uint64) error {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	m, ok := s.cl.members[id]
	if !ok {
		return ErrMemberNotFound
	}
	if !m.IsLearner {
		return ErrMemberNotLearner
	}
	m.IsLearner = false
	return s.putMember(m)
}

// Members returns the members by ID.
func (s *Store) Members() []Member {
	s.cl.mu.RLock()
	defer s.cl.mu.RUnlock()
	out := make([]Member, 0, len(s.cl.members))
	for _, m := range s.cl.members {
		out = append(out, m.clone())
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// IsRemoved reports whether id belonged to a removed member.
func (s *Store) IsRemoved(id uint64) bool {
	s.cl.mu.RLock()
	defer s.cl.mu.RUnlock()
	return s.cl.removed[id]
}

// SetAlarm raises (on) or clears an alarm and reports whether that changed
// anything.
func (s *Store) SetAlarm(a Alarm, on bool) (bool, error) {
	s.cl.mu.Lock()
	defer s.cl.mu.Unlock()
	if s.cl.alarms[a] == on {
		return false, nil
	}
	b := s.batch.Bucket(alarmBucket)
	var err error
	if on {
		err = b.Put(alarmKey(a), []byte{})
	} else {
		err = b.Delete(alarmKey(a))
	}
	if err != nil {
		return false, err
	}
	if on {
		s.cl.alarms[a] = true
	} else {
		delete(s.cl.alarms, a)
	}
	return true, nil
}

// Alarms returns the raised alarms by member and type.
func (s *Store) Alarms() []Alarm {
	s.cl.mu.RLock()
	defer s.cl.mu.RUnlock()
	out := make([]Alarm, 0, len(s.cl.alarms))
	for a := range s.cl.alarms {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b Alarm) int {
		if c := cmp.Compare(a.MemberID, b.MemberID); c != 0 {
			return c
		}
		return cmp.Compare(a.Type, b.Type)
	})
	return out
}

// checkCluster compares the membership and alarms in memory with the
// batch's.
func (s *Store) checkCluster() error {
	disk, err := loadCluster(s.batch)
	if err != nil {
		return err
	}
	s.cl.mu.RLock()
	defer s.cl.mu.RUnlock()
	if len(disk.members) != len(s.cl.members) || len(disk.removed) != len(s.cl.removed) || len(disk.alarms) != len(s.cl.alarms) {
		return fmt.Errorf("engine: %d members, %d removed, %d alarms in memory; %d, %d, %d in the backend",
			len(s.cl.members), len(s.cl.removed), len(s.cl.alarms), len(disk.members), len(disk.removed), len(disk.alarms))
	}
	for id, m := range s.cl.members {
		d, ok := disk.members[id]
		if !ok || d.Name != m.Name || d.IsLearner != m.IsLearner || !slices.Equal(d.PeerURLs, m.PeerURLs) || !slices.Equal(d.ClientURLs, m.ClientURLs) {
			return fmt.Errorf("engine: member %x is %+v in memory, %+v in the backend", id, m, d)
		}
	}
	for id := range s.cl.removed {
		if !disk.removed[id] {
			return fmt.Errorf("engine: member %x removed in memory only", id)
		}
	}
	for a := range s.cl.alarms {
		if !disk.alarms[a] {
			return fmt.Errorf("engine: alarm %+v in memory only", a)
		}
	}
	if disk.downgrade != s.cl.downgrade {
		return fmt.Errorf("engine: downgrade %+v in memory, %+v in the backend", s.cl.downgrade, disk.downgrade)
	}
	if d := s.cl.downgrade; d.Enabled == (d.TargetVersion == "") {
		return fmt.Errorf("engine: downgrade %+v", d)
	}
	return nil
}

// Alarmed reports whether an alarm of type t is raised on any member.
func (s *Store) Alarmed(t AlarmType) bool {
	s.cl.mu.RLock()
	defer s.cl.mu.RUnlock()
	for a := range s.cl.alarms {
		if a.Type == t {
			return true
		}
	}
	return false
}
