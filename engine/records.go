package engine

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/cairn-kv/cairn/btreeindex"
	"github.com/cairn-kv/cairn/pagefile"
)

// The records of a store's page file, read and written without opening
// the store: what offline tools (inspection, migration from and to etcd)
// work with. A Dump reads them in a transaction; a Load writes them into
// a new page file, which Open then reads as a store (its index, leases'
// keys and auth rebuilt from them).

// LeaseRecord is a lease as the page file keeps it.
type LeaseRecord struct {
	ID, TTL   int64
	Remaining int64 // the TTL left at the last checkpoint (0: none)
}

// UserRecord is a user as the page file keeps it.
type UserRecord struct {
	Name       string
	Password   []byte // bcrypt hash; nil with NoPassword
	NoPassword bool
	Roles      []string
}

// RoleRecord is a role and its permissions.
type RoleRecord struct {
	Name  string
	Perms []Permission
}

// AuthRecord is the auth state: whether it is enabled, its revision, the
// users and roles.
type AuthRecord struct {
	Enabled  bool
	Revision uint64
	Users    []UserRecord // by name
	Roles    []RoleRecord // by name
}

// Dump reads a store's records from a page file transaction.
type Dump struct{ tx *pagefile.Tx }

// NewDump reads the store in tx; it fails if tx's file holds no store.
func NewDump(tx *pagefile.Tx) (Dump, error) {
	for _, b := range storeBuckets {
		if tx.Bucket(b) == nil {
			return Dump{}, fmt.Errorf("engine: the page file has no %q bucket: not a store", b)
		}
	}
	return Dump{tx}, nil
}

// Revisions calls fn with every revision the page file holds, in
// revision order: the key-value written there (a deletion's has the key
// and its mod revision only).
func (d Dump) Revisions(fn func(main, sub int64, tomb bool, kv KeyValue) error) error {
	c := d.tx.Bucket(keyBucket).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		r, tomb, err := bytesToRev(k)
		if err != nil {
			return err
		}
		kv, err := decodeKV(v)
		if err != nil {
			return fmt.Errorf("engine: revision %v: %w", r, err)
		}
		if err := fn(r.Main, r.Sub, tomb, kv); err != nil {
			return err
		}
	}
	return nil
}

// Compacted returns the revision the last compaction finished at and the
// one it was scheduled to (more if cut short), 0 if none.
func (d Dump) Compacted() (finished, scheduled int64) {
	meta := d.tx.Bucket(metaBucket)
	if v := meta.Get(metaCompacted); len(v) == 8 {
		finished = int64(binary.BigEndian.Uint64(v))
	}
	if v := meta.Get(metaScheduled); len(v) == 8 {
		scheduled = int64(binary.BigEndian.Uint64(v))
	}
	return finished, scheduled
}

// Rev returns the store's revision: its last write's, or the revision a
// bump raised it to (BumpRevision), if higher.
func (d Dump) Rev() (int64, error) {
	rev := int64(1) // (a fresh store's, as in Open)
	if k, _ := d.tx.Bucket(keyBucket).Cursor().Last(); k != nil {
		r, _, err := bytesToRev(k)
		if err != nil {
			return 0, err
		}
		rev = r.Main
	}
	_, scheduled := d.Compacted()
	return max(rev, scheduled), nil
}

// ConsistentIndex is the last raft entry the store applied.
func (d Dump) ConsistentIndex() uint64 { return ConsistentIndexIn(d.tx) }

// Leases returns the leases, by id.
func (d Dump) Leases() ([]LeaseRecord, error) {
	ls, err := loadLeases(d.tx)
	if err != nil {
		return nil, err
	}
	out := make([]LeaseRecord, 0, len(ls))
	for _, l := range ls {
		out = append(out, LeaseRecord{ID: l.id, TTL: l.ttl, Remaining: l.remaining})
	}
	slices.SortFunc(out, func(a, b LeaseRecord) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Auth returns the auth state.
func (d Dump) Auth() (AuthRecord, error) {
	a, err := loadAuth(d.tx)
	if err != nil {
		return AuthRecord{}, err
	}
	rec := AuthRecord{Enabled: a.enabled, Revision: a.revision}
	for _, name := range slices.Sorted(maps.Keys(a.users)) {
		u := a.users[name]
		rec.Users = append(rec.Users, UserRecord{Name: name, Password: u.password, NoPassword: u.noPassword, Roles: u.roles})
	}
	for _, name := range slices.Sorted(maps.Keys(a.roles)) {
		rec.Roles = append(rec.Roles, RoleRecord{Name: name, Perms: a.roles[name]})
	}
	return rec, nil
}

// Load writes a store's records into a new page file, in the transaction
// it was made with. Revisions must come in revision order; Open then
// rebuilds the store from what was written, and Check finds what does not
// hold together (a key attached to a lease that is not there, a user with
// a role that is not).
type Load struct {
	tx      *pagefile.Tx
	lastRev btreeindex.Revision
}

// NewLoad starts a store in tx, whose file must hold none yet.
func NewLoad(tx *pagefile.Tx) (*Load, error) {
	for _, name := range storeBuckets {
		if tx.Bucket(name) != nil {
			return nil, errors.New("engine: the page file already holds a store")
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return nil, err
		}
	}
	return &Load{tx: tx}, nil
}

// Revision writes the key-value written at revision main.sub (a deletion
// if tomb: then kv's key and mod revision are all that is kept).
func (l *Load) Revision(main, sub int64, tomb bool, kv KeyValue) error {
	r := btreeindex.Revision{Main: main, Sub: sub}
	if main <= 0 || sub < 0 || l.lastRev.Main > 0 && !l.lastRev.Less(r) {
		return fmt.Errorf("engine: revision %v after %v: revisions must rise", r, l.lastRev)
	}
	if len(kv.Key) == 0 {
		return fmt.Errorf("engine: revision %v has no key", r)
	}
	if tomb {
		kv = KeyValue{Key: kv.Key, ModRevision: main}
	}
	l.lastRev = r
	return l.tx.Bucket(keyBucket).Put(revToBytes(r, tomb), encodeKV(&kv))
}

// Compacted records the compaction finished at revision finished and the
// one scheduled (if past it, cut short: Open goes on with it).
func (l *Load) Compacted(finished, scheduled int64) error {
	if finished < 0 || scheduled < finished {
		return fmt.Errorf("engine: compaction finished at %d, scheduled at %d", finished, scheduled)
	}
	meta := l.tx.Bucket(metaBucket)
	if err := meta.Put(metaCompacted, be64(uint64(finished))); err != nil {
		return err
	}
	return meta.Put(metaScheduled, be64(uint64(scheduled)))
}

// Lease writes a lease.
func (l *Load) Lease(r LeaseRecord) error {
	if r.ID <= 0 || r.TTL <= 0 {
		return fmt.Errorf("engine: lease %x with TTL %d", r.ID, r.TTL)
	}
	return l.tx.Bucket(leaseBucket).Put(be64(uint64(r.ID)), encodeLease(&lease{ttl: r.TTL, remaining: r.Remaining}))
}

// Auth writes the auth state, its users and roles.
func (l *Load) Auth(a AuthRecord) error {
	enabled := []byte{0}
	if a.Enabled {
		enabled = []byte{1}
	}
	b := l.tx.Bucket(authBucket)
	if err := b.Put(authEnabledKey, enabled); err != nil {
		return err
	}
	if err := b.Put(authRevisionKey, be64(max(a.Revision, 1))); err != nil {
		return err
	}
	for _, u := range a.Users {
		roles := slices.Sorted(slices.Values(u.Roles))
		rec := &authUser{password: u.Password, noPassword: u.NoPassword, roles: slices.Compact(roles)}
		if err := l.tx.Bucket(authUsersBucket).Put([]byte(u.Name), encodeUser(rec)); err != nil {
			return err
		}
	}
	for _, r := range a.Roles {
		if err := l.tx.Bucket(authRolesBucket).Put([]byte(r.Name), encodeRole(r.Perms)); err != nil {
			return err
		}
	}
	return nil
}
