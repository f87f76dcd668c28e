package engine

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"github.com/cairn-kv/cairn/pagefile"
)

// Auth errors, with etcd's auth package messages (the server maps them to
// etcd's gRPC errors).
var (
	ErrRootUserNotExist     = errors.New("auth: root user does not exist")
	ErrRootRoleNotExist     = errors.New("auth: root user does not have root role")
	ErrUserAlreadyExist     = errors.New("auth: user already exists")
	ErrUserEmpty            = errors.New("auth: user name is empty")
	ErrUserNotFound         = errors.New("auth: user not found")
	ErrRoleAlreadyExist     = errors.New("auth: role already exists")
	ErrRoleNotFound         = errors.New("auth: role not found")
	ErrRoleEmpty            = errors.New("auth: role name is empty")
	ErrPermissionNotGiven   = errors.New("auth: permission not given")
	ErrAuthFailed           = errors.New("auth: authentication failed, invalid user ID or password")
	ErrNoPasswordUser       = errors.New("auth: authentication failed, password was given for no password user")
	ErrPermissionDenied     = errors.New("auth: permission denied")
	ErrRoleNotGranted       = errors.New("auth: role is not granted to the user")
	ErrPermissionNotGranted = errors.New("auth: permission is not granted to the role")
	ErrAuthNotEnabled       = errors.New("auth: authentication is not enabled")
	ErrAuthOldRevision      = errors.New("auth: revision in header is old")
	ErrInvalidAuthMgmt      = errors.New("auth: invalid auth management")
)

// authRefusals are the auth errors that are a request's own result.
var authRefusals = []error{ErrRootUserNotExist, ErrRootRoleNotExist, ErrUserAlreadyExist, ErrUserEmpty,
	ErrUserNotFound, ErrRoleAlreadyExist, ErrRoleNotFound, ErrRoleEmpty, ErrPermissionNotGiven,
	ErrRoleNotGranted, ErrPermissionNotGranted, ErrInvalidAuthMgmt,
	// The server's checks, made as the entry applies.
	ErrPermissionDenied, ErrAuthNotEnabled, ErrAuthFailed, ErrAuthOldRevision}

// RootName is the name of the root user and of the root role.
const RootName = "root"

// PermType is what a permission allows.
type PermType uint8

const (
	PermRead PermType = iota
	PermWrite
	PermReadWrite
)

// Permission is a role's right on a key (RangeEnd empty), a range
// [Key, RangeEnd), or every key from Key (RangeEnd "\x00").
type Permission struct {
	Type          PermType
	Key, RangeEnd []byte
}

// rootPerm is what RoleGet reports for the root role.
var rootPerm = Permission{Type: PermReadWrite, Key: []byte{}, RangeEnd: []byte{0}}

type authUser struct {
	password   []byte // bcrypt hash; nil for a user with no password
	noPassword bool
	roles      []string // sorted
}

var (
	authBucket      = []byte("auth")
	authUsersBucket = []byte("authUsers")
	authRolesBucket = []byte("authRoles")
	authEnabledKey  = []byte("authEnabled")
	authRevisionKey = []byte("authRevision")
)

// authStore keeps users, roles and the auth switch; replicated state,
// persisted in the backend, with each user's permissions merged for fast
// checks.
type authStore struct {
	mu       sync.RWMutex
	enabled  bool
	revision uint64
	users    map[string]*authUser
	roles    map[string][]Permission // sorted by key
	// perms: per user, the key intervals each kind of access covers,
	// merged, sorted, disjoint (rebuilt on every change).
	perms map[string]*userPerms
}

// interval is [start, end) of keys; a nil end is past every key.
type interval struct{ start, end []byte }

type userPerms struct{ read, write []interval }

// permInterval is the interval of keys a permission (or request) names.
func permInterval(key, rangeEnd []byte) interval {
	switch {
	case len(rangeEnd) == 0:
		return interval{key, append(bytes.Clone(key), 0)}
	case len(rangeEnd) == 1 && rangeEnd[0] == 0:
		return interval{key, nil}
	}
	return interval{key, rangeEnd}
}

// endBefore orders interval ends, nil (unbounded) last.
func endBefore(a, b []byte) bool {
	switch {
	case a == nil:
		return false
	case b == nil:
		return true
	}
	return bytes.Compare(a, b) < 0
}

// merge sorts intervals and joins the ones that overlap or touch.
func merge(ivs []interval) []interval {
	slices.SortFunc(ivs, func(a, b interval) int { return bytes.Compare(a.start, b.start) })
	var out []interval
	for _, iv := range ivs {
		if n := len(out); n > 0 && !endBefore(out[n-1].end, iv.start) {
			if endBefore(out[n-1].end, iv.end) {
				out[n-1].end = iv.end
			}
			continue
		}
		out = append(out, iv)
	}
	return out
}

// around returns the last of the merged intervals that starts at or
// before key, if any.
func around(ivs []interval, key []byte) (interval, bool) {
	i, _ := slices.BinarySearchFunc(ivs, key, func(iv interval, k []byte) int {
		if bytes.Compare(iv.start, k) > 0 {
			return 1
		}
		return -1
	})
	if i == 0 {
		return interval{}, false
	}
	return ivs[i-1], true
}

// covers reports whether the merged intervals hold all of want: being
// disjoint and not touching, one of them must.
func covers(ivs []interval, want interval) bool {
	iv, ok := around(ivs, want.start)
	return ok && !endBefore(iv.end, want.end)
}

// permitted reports whether the merged intervals hold the key (end empty)
// or range a request names; a lone key is checked without building its
// point interval.
func permitted(ivs []interval, key, end []byte) bool {
	if len(end) > 0 {
		return covers(ivs, permInterval(key, end))
	}
	iv, ok := around(ivs, key)
	return ok && endBefore(key, iv.end)
}

func (a *authStore) rebuildPerms() {
	a.perms = map[string]*userPerms{}
	for name, u := range a.users {
		var read, write []interval
		for _, r := range u.roles {
			for _, p := range a.roles[r] {
				iv := permInterval(p.Key, p.RangeEnd)
				if p.Type != PermWrite {
					read = append(read, iv)
				}
				if p.Type != PermRead {
					write = append(write, iv)
				}
			}
		}
		a.perms[name] = &userPerms{read: merge(read), write: merge(write)}
	}
}

func encodeUser(u *authUser) []byte {
	var b []byte
	if u.noPassword {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(u.password)))
	b = append(b, u.password...)
	b = binary.AppendUvarint(b, uint64(len(u.roles)))
	for _, r := range u.roles {
		b = binary.AppendUvarint(b, uint64(len(r)))
		b = append(b, r...)
	}
	return b
}

// reader takes length-prefixed fields off a record, failing once short.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	out := bytes.Clone(r.b[:n])
	r.b = r.b[n:]
	return out
}

func decodeUser(b []byte) (*authUser, error) {
	if len(b) == 0 {
		return nil, errors.New("engine: empty user record")
	}
	u := &authUser{noPassword: b[0] == 1}
	r := &reader{b: b[1:]}
	u.password = r.bytes()
	for n := r.uvarint(); n > 0 && !r.bad; n-- {
		u.roles = append(u.roles, string(r.bytes()))
	}
	if r.bad || len(r.b) != 0 {
		return nil, errors.New("engine: bad user record")
	}
	return u, nil
}

func encodeRole(perms []Permission) []byte {
	b := binary.AppendUvarint(nil, uint64(len(perms)))
	for _, p := range perms {
		b = append(b, byte(p.Type))
		b = binary.AppendUvarint(b, uint64(len(p.Key)))
		b = append(b, p.Key...)
		b = binary.AppendUvarint(b, uint64(len(p.RangeEnd)))
		b = append(b, p.RangeEnd...)
	}
	return b
}

func decodeRole(b []byte) ([]Permission, error) {
	r := &reader{b: b}
	var perms []Permission
	for n := r.uvarint(); n > 0 && !r.bad; n-- {
		if len(r.b) == 0 {
			r.bad = true
			break
		}
		p := Permission{Type: PermType(r.b[0])}
		r.b = r.b[1:]
		p.Key, p.RangeEnd = r.bytes(), r.bytes()
		perms = append(perms, p)
	}
	if r.bad || len(r.b) != 0 {
		return nil, errors.New("engine: bad role record")
	}
	return perms, nil
}

// loadAuth reads the auth buckets; a store that never had them starts at
// auth revision 1, as etcd's does.
func loadAuth(tx *pagefile.Tx) (*authStore, error) {
	a := &authStore{users: map[string]*authUser{}, roles: map[string][]Permission{}, revision: 1}
	b := tx.Bucket(authBucket)
	if v := b.Get(authEnabledKey); len(v) == 1 {
		a.enabled = v[0] == 1
	}
	if v := b.Get(authRevisionKey); len(v) == 8 {
		a.revision = binary.BigEndian.Uint64(v)
	}
	c := tx.Bucket(authUsersBucket).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		u, err := decodeUser(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", err, k)
		}
		a.users[string(k)] = u
	}
	c = tx.Bucket(authRolesBucket).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		perms, err := decodeRole(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", err, k)
		}
		a.roles[string(k)] = perms
	}
	a.rebuildPerms()
	return a, nil
}

// authChange runs f on the auth state under its lock. f returns the users
// and roles it rewrote (both nil: nothing changed); then the auth revision
// advances, and the records and the revision go into the batch together.
func (s *Store) authChange(f func(a *authStore) (users, roles []string, err error)) error {
	a := s.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	users, roles, err := f(a)
	if err != nil || (users == nil && roles == nil) {
		return err
	}
	for _, name := range users {
		b := s.batch.Bucket(authUsersBucket)
		if u := a.users[name]; u != nil {
			err = b.Put([]byte(name), encodeUser(u))
		} else {
			err = b.Delete([]byte(name))
		}
		if err != nil {
			return err
		}
	}
	for _, name := range roles {
		b := s.batch.Bucket(authRolesBucket)
		if perms, ok := a.roles[name]; ok {
			err = b.Put([]byte(name), encodeRole(perms))
		} else {
			err = b.Delete([]byte(name))
		}
		if err != nil {
			return err
		}
	}
	a.rebuildPerms()
	return s.bumpAuthRevision()
}

// bumpAuthRevision advances the auth revision, in memory and in the batch,
// so that tokens minted before are refused. Under the auth lock.
func (s *Store) bumpAuthRevision() error {
	s.auth.revision++
	return s.batch.Bucket(authBucket).Put(authRevisionKey, be64(s.auth.revision))
}

// AuthEnable turns auth on; the root user must exist with the root role.
func (s *Store) AuthEnable() error {
	a := s.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.enabled {
		return nil
	}
	u := a.users[RootName]
	switch {
	case u == nil:
		return ErrRootUserNotExist
	case !slices.Contains(u.roles, RootName):
		return ErrRootRoleNotExist
	}
	a.enabled = true
	return s.batch.Bucket(authBucket).Put(authEnabledKey, []byte{1})
}

// AuthDisable turns auth off, advancing the auth revision.
func (s *Store) AuthDisable() error {
	a := s.auth
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.enabled {
		return nil
	}
	a.enabled = false
	if err := s.batch.Bucket(authBucket).Put(authEnabledKey, []byte{0}); err != nil {
		return err
	}
	return s.bumpAuthRevision()
}

// AuthStatus says whether auth is on, and the auth revision.
func (s *Store) AuthStatus() (enabled bool, revision uint64) {
	a := s.auth
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.enabled, a.revision
}

// HashPassword hashes a password with bcrypt at cost, as the server does
// before proposing a user change (so the log carries no password).
func HashPassword(password string, cost int) ([]byte, error) {
	return bcrypt.GenerateFromPassword([]byte(password), cost)
}

// UserAdd adds a user with a bcrypt-hashed password, or none.
func (s *Store) UserAdd(name string, hashed []byte, noPassword bool) error {
	return s.authChange(func(a *authStore) ([]string, []string, error) {
		switch {
		case name == "":
			return nil, nil, ErrUserEmpty
		case a.users[name] != nil:
			return nil, nil, ErrUserAlreadyExist
		}
		u := &authUser{noPassword: noPassword}
		if !noPassword {
			u.password = bytes.Clone(hashed)
		}
		a.users[name] = u
		return []string{name}, nil, nil
	})
}

// UserDelete deletes a user (not root while auth is on).
func (s *Store) UserDelete(name string) error {
	return s.authChange(func(a *authStore) ([]string, []string, error) {
		switch {
		case a.enabled && name == RootName:
			return nil, nil, ErrInvalidAuthMgmt
		case a.users[name] == nil:
			return nil, nil, ErrUserNotFound
		}
		delete(a.users, name)
		return []string{name}, nil, nil
	})
}

// UserChangePassword sets a user's bcrypt-hashed password (a user with no
// password keeps none).
func (s *Store) UserChangePassword(name string, hashed []byte) error {
	return s.authChange(func(a *authStore) ([]string, []string, error) {
		u := a.users[name]
		if u == nil {
			return nil, nil, ErrUserNotFound
		}
		if !u.noPassword {
			u.password = bytes.Clone(hashed)
		}
		return []string{name}, nil, nil
	})
}

// UserGrantRole grants a role (root need not exist as a role) to a user;
// granting it again changes nothing.
func (s *Store) UserGrantRole(name, role string) error {
	return s.authChange(func(a *authStore) ([]string, []string, error) {
		u := a.users[name]
		if u == nil {
			return nil, nil, ErrUserNotFound
		}
		if _, ok := a.roles[role]; !ok && role != RootName {
			return nil, nil, ErrRoleNotFound
		}
		i, found := slices.BinarySearch(u.roles, role)
		if found {
			return nil, nil, nil
		}
		u.roles = slices.Insert(u.roles, i, role)
		return []string{name}, nil, nil
	})
}

// UserRevokeRole takes a role from a user (not root from root while auth
// is on).
func (s *Store) UserRevokeRole(name, role string) error {
	return s.authChange(func(a *authStore) ([]string, []string, error) {
		if a.enabled && name == RootName && role == RootName {
			return nil, nil, ErrInvalidAuthMgmt
		}
		u := a.users[name]
		if u == nil {
			return nil, nil, ErrUserNotFound
		}
		i, found := slices.BinarySearch(u.roles, role)
		if !found {
			return nil, nil, ErrRoleNotGranted
		}
		u.roles = slices.Delete(u.roles, i, i+1)
		return []string{name}, nil, nil
	})
}

// UserGet returns a user's roles, sorted.
func (s *Store) UserGet(name string) ([]string, error) {
	a := s.auth
	a.mu.RLock()
	defer a.mu.RUnlock()
	u := a.users[name]
	if u == nil {
		return nil, ErrUserNotFound
	}
	return slices.Clone(u.roles), nil
}

// UserList returns every user's name, sorted.
func (s *Store) UserList() []string {
	a := s.auth
	a.mu.RLock()
	defer a.mu.RUnlock()
	return slices.Sorted(maps.Keys(a.users))
}

// RoleAdd adds a role with no permissions.
func (s *Store) RoleAdd(name string) error {
	return s.authChange(func(a *authStore) ([]string, []string, error) {
		if name == "" {
			return nil, nil, ErrRoleEmpty
		}
		if _, ok := a.roles[name]; ok {
			return nil, nil, ErrRoleAlreadyExist
		}
		a.roles[name] = nil
		return nil, []string{name}, nil
	})
}

// RoleDelete deletes a role (not root while auth is on) and takes it from
// every user.
func (s *Store) RoleDelete(name string) error {
	return s.authChange(func(a *authStore) ([]string, []string, error) {
		if a.enabled && name == RootName {
			return nil, nil, ErrInvalidAuthMgmt
		}
		if _, ok := a.roles[name]; !ok {
			return nil, nil, ErrRoleNotFound
		}
		delete(a.roles, name)
		users := []string{}
		for un, u := range a.users {
			if i, found := slices.BinarySearch(u.roles, name); found {
				u.roles = slices.Delete(u.roles, i, i+1)
				users = append(users, un)
			}
		}
		slices.Sort(users)
		return users, []string{name}, nil
	})
}

// RoleGet returns a role's permissions, by key (the root role: every key,
// read and write).
func (s *Store) RoleGet(name string) ([]Permission, error) {
	a := s.auth
	a.mu.RLock()
	defer a.mu.RUnlock()
	perms, ok := a.roles[name]
	switch {
	case !ok:
		return nil, ErrRoleNotFound
	case name == RootName:
		return []Permission{rootPerm}, nil
	}
	return slices.Clone(perms), nil
}

// RoleList returns every role's name, sorted.
func (s *Store) RoleList() []string {
	a := s.auth
	a.mu.RLock()
	defer a.mu.RUnlock()
	return slices.Sorted(maps.Keys(a.roles))
}

// validPermRange is etcd's rule: a key, then no end, an end after it, or
// "\x00" for every key from it.
func validPermRange(key, end []byte) bool {
	switch {
	case len(key) == 0:
		return false
	case len(end) == 0 || bytes.Compare(key, end) < 0:
		return true
	}
	return len(end) == 1 && end[0] == 0
}

// RoleGrantPermission gives a role a permission; one on the same key and
// end is replaced.
func (s *Store) RoleGrantPermission(name string, p *Permission) error {
	return s.authChange(func(a *authStore) ([]string, []string, error) {
		switch {
		case p == nil:
			return nil, nil, ErrPermissionNotGiven
		case !validPermRange(p.Key, p.RangeEnd):
			return nil, nil, ErrInvalidAuthMgmt
		}
		perms, ok := a.roles[name]
		if !ok {
			return nil, nil, ErrRoleNotFound
		}
		np := Permission{Type: p.Type, Key: bytes.Clone(p.Key), RangeEnd: bytes.Clone(p.RangeEnd)}
		i := slices.IndexFunc(perms, func(x Permission) bool {
			return bytes.Equal(x.Key, p.Key) && bytes.Equal(x.RangeEnd, p.RangeEnd)
		})
		if i >= 0 {
			perms[i].Type = p.Type
		} else {
			perms = append(perms, np)
			slices.SortStableFunc(perms, func(x, y Permission) int { return bytes.Compare(x.Key, y.Key) })
		}
		a.roles[name] = perms
		return nil, []string{name}, nil
	})
}

// RoleRevokePermission takes from a role its permission on [key, end).
func (s *Store) RoleRevokePermission(name string, key, end []byte) error {
	return s.authChange(func(a *authStore) ([]string, []string, error) {
		perms, ok := a.roles[name]
		if !ok {
			return nil, nil, ErrRoleNotFound
		}
		i := slices.IndexFunc(perms, func(x Permission) bool {
			return bytes.Equal(x.Key, key) && bytes.Equal(x.RangeEnd, end)
		})
		if i < 0 {
			return nil, nil, ErrPermissionNotGranted
		}
		a.roles[name] = slices.Delete(perms, i, i+1)
		return nil, []string{name}, nil
	})
}

// CheckPassword checks a user's password while auth is on and returns the
// auth revision a token for the user is good for.
func (s *Store) CheckPassword(name, password string) (uint64, error) {
	a := s.auth
	a.mu.RLock()
	enabled, u, rev := a.enabled, a.users[name], a.revision
	a.mu.RUnlock()
	switch {
	case !enabled:
		return 0, ErrAuthNotEnabled
	case u == nil:
		return 0, ErrAuthFailed
	case u.noPassword:
		return 0, ErrNoPasswordUser
	}
	// Outside the lock: bcrypt is slow on purpose.
	if bcrypt.CompareHashAndPassword(u.password, []byte(password)) != nil {
		return 0, ErrAuthFailed
	}
	return rev, nil
}

// IsPermitted checks that user, holding a token of auth revision rev, may
// read or write (write true) the key (end empty) or range [key, end) (end
// "\x00": every key from key). Nothing is checked while auth is off.
func (s *Store) IsPermitted(user string, rev uint64, key, end []byte, write bool) error {
	a := s.auth
	a.mu.RLock()
	defer a.mu.RUnlock()
	if !a.enabled {
		return nil
	}
	switch {
	case rev == 0:
		return ErrUserEmpty
	case rev < a.revision:
		return ErrAuthOldRevision
	}
	u := a.users[user]
	if u == nil {
		return ErrPermissionDenied
	}
	if _, root := slices.BinarySearch(u.roles, RootName); root {
		return nil
	}
	p := a.perms[user]
	ivs := p.read
	if write {
		ivs = p.write
	}
	if permitted(ivs, key, end) {
		return nil
	}
	return ErrPermissionDenied
}

// IsAdminPermitted checks that user may manage auth and the cluster: holds
// the root role (anyone, while auth is off).
func (s *Store) IsAdminPermitted(user string) error {
	a := s.auth
	a.mu.RLock()
	defer a.mu.RUnlock()
	if !a.enabled {
		return nil
	}
	if user == "" {
		return ErrUserEmpty
	}
	u := a.users[user]
	if u == nil {
		return ErrUserNotFound
	}
	if _, root := slices.BinarySearch(u.roles, RootName); !root {
		return ErrPermissionDenied
	}
	return nil
}

// checkAuth verifies the auth state as a whole: memory is the backend,
// every user's roles are sorted and exist (root may be granted without a
// root role), and each user's merged permissions are what its roles give.
func (s *Store) checkAuth() error {
	a := s.auth
	a.mu.RLock()
	defer a.mu.RUnlock()
	stored, err := loadAuth(s.batch)
	if err != nil {
		return err
	}
	if stored.enabled != a.enabled || stored.revision != a.revision || len(stored.users) != len(a.users) || len(stored.roles) != len(a.roles) {
		return fmt.Errorf("engine: auth state in memory differs from the backend")
	}
	for name, u := range a.users {
		su := stored.users[name]
		if su == nil || !bytes.Equal(su.password, u.password) || su.noPassword != u.noPassword || !slices.Equal(su.roles, u.roles) {
			return fmt.Errorf("engine: user %q in memory differs from the backend", name)
		}
		if !slices.IsSorted(u.roles) {
			return fmt.Errorf("engine: user %q has unsorted roles", name)
		}
		for _, r := range u.roles {
			if _, ok := a.roles[r]; !ok && r != RootName {
				return fmt.Errorf("engine: user %q has role %q, which does not exist", name, r)
			}
		}
		want, got := stored.perms[name], a.perms[name]
		if got == nil || !sameIntervals(want.read, got.read) || !sameIntervals(want.write, got.write) {
			return fmt.Errorf("engine: user %q's merged permissions are stale", name)
		}
	}
	for name, perms := range a.roles {
		if !slices.EqualFunc(perms, stored.roles[name], func(x, y Permission) bool {
			return x.Type == y.Type && bytes.Equal(x.Key, y.Key) && bytes.Equal(x.RangeEnd, y.RangeEnd)
		}) {
			return fmt.Errorf("engine: role %q in memory differs from the backend", name)
		}
	}
	return nil
}

func sameIntervals(a, b []interval) bool {
	return slices.EqualFunc(a, b, func(x, y interval) bool {
		return bytes.Equal(x.start, y.start) && bytes.Equal(x.end, y.end) && (x.end == nil) == (y.end == nil)
	})
}
