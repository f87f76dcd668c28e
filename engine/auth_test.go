package engine

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/cairn-kv/cairn/internal/testseed"
)

type muser struct {
	password   string
	noPassword bool
	roles      []string // sorted
}

// authModel is the naive auth store.
type authModel struct {
	enabled  bool
	revision uint64
	users    map[string]*muser
	roles    map[string][]Permission
}

// modelPermitted sweeps the user's permissions of the right kind from the
// start of the asked interval, taking any that reaches past the point
// covered so far, until the interval is covered or nothing reaches.
func (m *authModel) modelPermitted(user string, key, end []byte, write bool) bool {
	u := m.users[user]
	if slices.Contains(u.roles, RootName) {
		return true
	}
	var ivs []interval
	for _, r := range u.roles {
		for _, p := range m.roles[r] {
			if (write && p.Type != PermRead) || (!write && p.Type != PermWrite) {
				ivs = append(ivs, permInterval(p.Key, p.RangeEnd))
			}
		}
	}
	want := permInterval(key, end)
	at := want.start
	for {
		progressed := false
		for _, iv := range ivs {
			// iv holds at and reaches further than at.
			if bytes.Compare(iv.start, at) <= 0 && endBefore(at, iv.end) {
				if iv.end == nil {
					return true
				}
				at, progressed = iv.end, true
			}
		}
		if want.end != nil && bytes.Compare(at, want.end) >= 0 {
			return true
		}
		if !progressed {
			return false
		}
	}
}

// permDraws draws keys from a few that nest, touch and sort at the
// extremes, and range ends: none (a lone key), "\x00" (every key from
// there), or another key (valid or not).
func permDraws(rng *rand.Rand) (key, end func() []byte) {
	keys := []string{"a", "ab", "b", "ba", "bb", "c", "\x00", "\xff"}
	key = func() []byte { return []byte(keys[rng.Intn(len(keys))]) }
	end = func() []byte {
		switch rng.Intn(4) {
		case 0:
			return nil
		case 1:
			return []byte{0}
		}
		return key()
	}
	return key, end
}

func wantErr(t *testing.T, step int, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) && !(got == nil && want == nil) {
		t.Fatalf("step %d: %s: %v, want %v", step, what, got, want)
	}
}

// TestAuthAgainstModel runs random auth changes (users with and without
// passwords, roles, permissions on keys, ranges and open ranges, valid and
// not, enable and disable, the root rules), restarts, password checks and
// permission checks of random keys and ranges with current and stale
// token revisions, against a naive model whose permission check is a
// sweep over the unmerged permissions.
func TestAuthAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	path := filepath.Join(t.TempDir(), "db")
	db, s := openStore(t, path)
	m := &authModel{revision: 1, users: map[string]*muser{}, roles: map[string][]Permission{}}
	pick := func(xs ...string) string { return xs[rng.Intn(len(xs))] }
	userName := func() string { return pick("root", "u1", "u2", "u3", "") }
	roleName := func() string { return pick("root", "r1", "r2", "r3", "") }
	key, end := permDraws(rng)
	bump := func() { m.revision++ }
	counts := map[string]int{}
	for step := 0; step < 8000; step++ {
		switch x := rng.Intn(100); {
		case x < 4:
			err := s.AuthEnable()
			u := m.users[RootName]
			switch {
			case m.enabled:
				wantErr(t, step, "enable again", err, nil)
			case u == nil:
				wantErr(t, step, "enable with no root", err, ErrRootUserNotExist)
			case !slices.Contains(u.roles, RootName):
				wantErr(t, step, "enable, root not root", err, ErrRootRoleNotExist)
			default:
				wantErr(t, step, "enable", err, nil)
				m.enabled = true
				counts["enable"]++
			}
		case x < 5:
			wantErr(t, step, "disable", s.AuthDisable(), nil)
			if m.enabled {
				m.enabled = false
				bump()
			}
		case x < 16: // user add (more often: a deleted root stops enabling)
			name, pw, noPW := userName(), fmt.Sprint("pw", rng.Intn(3)), rng.Intn(4) == 0
			var hashed []byte
			if !noPW {
				var err error
				if hashed, err = HashPassword(pw, bcrypt.MinCost); err != nil {
					t.Fatal(err)
				}
			}
			err := s.UserAdd(name, hashed, noPW)
			switch {
			case name == "":
				wantErr(t, step, "add empty user", err, ErrUserEmpty)
			case m.users[name] != nil:
				wantErr(t, step, "add existing user", err, ErrUserAlreadyExist)
			default:
				wantErr(t, step, "add user", err, nil)
				m.users[name] = &muser{password: pw, noPassword: noPW}
				bump()
			}
		case x < 20: // user delete
			name := userName()
			err := s.UserDelete(name)
			switch {
			case m.enabled && name == RootName:
				wantErr(t, step, "delete root", err, ErrInvalidAuthMgmt)
			case m.users[name] == nil:
				wantErr(t, step, "delete absent user", err, ErrUserNotFound)
			default:
				wantErr(t, step, "delete user", err, nil)
				delete(m.users, name)
				bump()
			}
		case x < 23: // change password
			name, pw := userName(), fmt.Sprint("pw", rng.Intn(3))
			hashed, err := HashPassword(pw, bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			err = s.UserChangePassword(name, hashed)
			if u := m.users[name]; u == nil {
				wantErr(t, step, "change absent user's password", err, ErrUserNotFound)
			} else {
				wantErr(t, step, "change password", err, nil)
				if !u.noPassword {
					u.password = pw
				}
				bump()
			}
		case x < 35: // grant role
			name, role := userName(), roleName()
			err := s.UserGrantRole(name, role)
			u := m.users[name]
			_, roleOK := m.roles[role]
			switch {
			case u == nil:
				wantErr(t, step, "grant to absent user", err, ErrUserNotFound)
			case !roleOK && role != RootName:
				wantErr(t, step, "grant absent role", err, ErrRoleNotFound)
			case slices.Contains(u.roles, role):
				wantErr(t, step, "grant again", err, nil)
			default:
				wantErr(t, step, "grant role", err, nil)
				u.roles = append(u.roles, role)
				slices.Sort(u.roles)
				bump()
				counts["grant role"]++
			}
		case x < 40: // revoke role
			name, role := userName(), roleName()
			err := s.UserRevokeRole(name, role)
			u := m.users[name]
			switch {
			case m.enabled && name == RootName && role == RootName:
				wantErr(t, step, "revoke root from root", err, ErrInvalidAuthMgmt)
			case u == nil:
				wantErr(t, step, "revoke from absent user", err, ErrUserNotFound)
			case !slices.Contains(u.roles, role):
				wantErr(t, step, "revoke ungranted role", err, ErrRoleNotGranted)
			default:
				wantErr(t, step, "revoke role", err, nil)
				u.roles = slices.DeleteFunc(u.roles, func(r string) bool { return r == role })
				bump()
			}
		case x < 48: // role add
			role := roleName()
			err := s.RoleAdd(role)
			_, ok := m.roles[role]
			switch {
			case role == "":
				wantErr(t, step, "add empty role", err, ErrRoleEmpty)
			case ok:
				wantErr(t, step, "add existing role", err, ErrRoleAlreadyExist)
			default:
				wantErr(t, step, "add role", err, nil)
				m.roles[role] = nil
				bump()
			}
		case x < 51: // role delete
			role := roleName()
			err := s.RoleDelete(role)
			_, ok := m.roles[role]
			switch {
			case m.enabled && role == RootName:
				wantErr(t, step, "delete root role", err, ErrInvalidAuthMgmt)
			case !ok:
				wantErr(t, step, "delete absent role", err, ErrRoleNotFound)
			default:
				wantErr(t, step, "delete role", err, nil)
				delete(m.roles, role)
				for _, u := range m.users {
					u.roles = slices.DeleteFunc(u.roles, func(r string) bool { return r == role })
				}
				bump()
			}
		case x < 66: // grant permission
			role := roleName()
			var p *Permission
			if rng.Intn(20) != 0 {
				p = &Permission{Type: PermType(rng.Intn(3)), Key: key(), RangeEnd: end()}
			}
			err := s.RoleGrantPermission(role, p)
			perms, ok := m.roles[role]
			switch {
			case p == nil:
				wantErr(t, step, "grant no permission", err, ErrPermissionNotGiven)
			case !validPermRange(p.Key, p.RangeEnd):
				wantErr(t, step, "grant bad range", err, ErrInvalidAuthMgmt)
			case !ok:
				wantErr(t, step, "grant to absent role", err, ErrRoleNotFound)
			default:
				wantErr(t, step, "grant permission", err, nil)
				i := slices.IndexFunc(perms, func(x Permission) bool {
					return bytes.Equal(x.Key, p.Key) && bytes.Equal(x.RangeEnd, p.RangeEnd)
				})
				if i >= 0 {
					perms[i].Type = p.Type
				} else {
					perms = append(perms, *p)
				}
				m.roles[role] = perms
				bump()
				counts["grant permission"]++
			}
		case x < 71: // revoke permission
			role := roleName()
			perms, ok := m.roles[role]
			k, e := key(), end()
			if ok && len(perms) > 0 && rng.Intn(2) == 0 {
				p := perms[rng.Intn(len(perms))]
				k, e = p.Key, p.RangeEnd
			}
			err := s.RoleRevokePermission(role, k, e)
			i := slices.IndexFunc(perms, func(x Permission) bool { return bytes.Equal(x.Key, k) && bytes.Equal(x.RangeEnd, e) })
			switch {
			case !ok:
				wantErr(t, step, "revoke from absent role", err, ErrRoleNotFound)
			case i < 0:
				wantErr(t, step, "revoke ungranted permission", err, ErrPermissionNotGranted)
			default:
				wantErr(t, step, "revoke permission", err, nil)
				m.roles[role] = slices.Delete(perms, i, i+1)
				bump()
			}
		case x < 73: // restart
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			_ = db.Close()
			db, s = openStore(t, path)
			counts["restart"]++
		case x < 75: // password
			name, pw := userName(), fmt.Sprint("pw", rng.Intn(3))
			rev, err := s.CheckPassword(name, pw)
			u := m.users[name]
			if m.enabled {
				counts["password"]++
			}
			switch {
			case !m.enabled:
				wantErr(t, step, "password while off", err, ErrAuthNotEnabled)
			case u == nil:
				wantErr(t, step, "absent user's password", err, ErrAuthFailed)
			case u.noPassword:
				wantErr(t, step, "no-password user's password", err, ErrNoPasswordUser)
			case u.password != pw:
				wantErr(t, step, "wrong password", err, ErrAuthFailed)
			default:
				if err != nil || rev != m.revision {
					t.Fatalf("step %d: password of %s: %d %v, want revision %d", step, name, rev, err, m.revision)
				}
			}
		default: // permission checks
			name := userName()
			rev := m.revision
			if rng.Intn(5) == 0 {
				rev = uint64(rng.Int63n(int64(m.revision)))
			}
			k, e, write := key(), end(), rng.Intn(2) == 0
			if len(e) > 0 && !(len(e) == 1 && e[0] == 0) && bytes.Compare(k, e) >= 0 {
				e = nil // requests name a valid range; the server sees to that
			}
			err := s.IsPermitted(name, rev, k, e, write)
			switch {
			case !m.enabled:
				wantErr(t, step, "permission while off", err, nil)
			case rev == 0:
				wantErr(t, step, "permission with no user", err, ErrUserEmpty)
			case rev < m.revision:
				wantErr(t, step, "permission with an old token", err, ErrAuthOldRevision)
			case m.users[name] == nil:
				wantErr(t, step, "permission of absent user", err, ErrPermissionDenied)
			case m.modelPermitted(name, k, e, write):
				wantErr(t, step, fmt.Sprintf("%s may write=%v [%q, %q)", name, write, k, e), err, nil)
				counts["permitted"]++
			default:
				wantErr(t, step, fmt.Sprintf("%s may not write=%v [%q, %q)", name, write, k, e), err, ErrPermissionDenied)
				counts["denied"]++
			}
			aerr := s.IsAdminPermitted(name)
			switch u := m.users[name]; {
			case !m.enabled:
				wantErr(t, step, "admin while off", aerr, nil)
			case name == "":
				wantErr(t, step, "admin with no user", aerr, ErrUserEmpty)
			case u == nil:
				wantErr(t, step, "admin of absent user", aerr, ErrUserNotFound)
			case !slices.Contains(u.roles, RootName):
				wantErr(t, step, "admin of non-root", aerr, ErrPermissionDenied)
			default:
				wantErr(t, step, "admin", aerr, nil)
			}
		}

		// The whole state, as the store reports it.
		if en, rev := s.AuthStatus(); en != m.enabled || rev != m.revision {
			t.Fatalf("step %d: status %v %d, want %v %d", step, en, rev, m.enabled, m.revision)
		}
		var users, roles []string
		for n, u := range m.users {
			users = append(users, n)
			if got, err := s.UserGet(n); err != nil || !slices.Equal(got, u.roles) {
				t.Fatalf("step %d: user %s: %v %v, want %v", step, n, got, err, u.roles)
			}
		}
		for n, perms := range m.roles {
			roles = append(roles, n)
			want := slices.Clone(perms)
			slices.SortStableFunc(want, func(x, y Permission) int { return bytes.Compare(x.Key, y.Key) })
			if n == RootName {
				want = []Permission{rootPerm}
			}
			got, err := s.RoleGet(n)
			if err != nil || len(got) != len(want) {
				t.Fatalf("step %d: role %s: %v %v, want %v", step, n, got, err, want)
			}
			for i := range got {
				if got[i].Type != want[i].Type || !bytes.Equal(got[i].Key, want[i].Key) || !bytes.Equal(got[i].RangeEnd, want[i].RangeEnd) {
					t.Fatalf("step %d: role %s: %v, want %v", step, n, got, want)
				}
			}
		}
		slices.Sort(users)
		slices.Sort(roles)
		if got := s.UserList(); !slices.Equal(got, users) {
			t.Fatalf("step %d: users %v, want %v", step, got, users)
		}
		if got := s.RoleList(); !slices.Equal(got, roles) {
			t.Fatalf("step %d: roles %v, want %v", step, got, roles)
		}
		if _, err := s.UserGet("nobody"); !errors.Is(err, ErrUserNotFound) {
			t.Fatalf("step %d: absent user: %v", step, err)
		}
		if _, err := s.RoleGet("nothing"); !errors.Is(err, ErrRoleNotFound) {
			t.Fatalf("step %d: absent role: %v", step, err)
		}
	}
	requireHappened(t, counts, "enable", "grant role", "grant permission", "restart", "password", "permitted", "denied")
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	_ = db.Close()
}

// TestAuthPermissionRules spells out etcd's rules case by case: a key
// permission, a range, an open range, ranges joined across two roles,
// read versus write, and root.
func TestAuthPermissionRules(t *testing.T) {
	_, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.UserAdd(RootName, nil, true))
	must(s.UserGrantRole(RootName, RootName))
	hashed, err := HashPassword("secret", bcrypt.MinCost)
	must(err)
	must(s.UserAdd("u", hashed, false))
	must(s.RoleAdd("r1"))
	must(s.RoleAdd("r2"))
	must(s.RoleGrantPermission("r1", &Permission{Type: PermRead, Key: []byte("key")}))
	must(s.RoleGrantPermission("r1", &Permission{Type: PermReadWrite, Key: []byte("a"), RangeEnd: []byte("c")}))
	must(s.RoleGrantPermission("r2", &Permission{Type: PermRead, Key: []byte("c"), RangeEnd: []byte("e")}))
	must(s.RoleGrantPermission("r2", &Permission{Type: PermWrite, Key: []byte("x"), RangeEnd: []byte{0}}))
	must(s.UserGrantRole("u", "r1"))
	must(s.UserGrantRole("u", "r2"))
	must(s.AuthEnable())
	_, rev := s.AuthStatus()
	if got, err := s.CheckPassword("u", "secret"); err != nil || got != rev {
		t.Fatalf("right password: %d %v, want revision %d", got, err, rev)
	}
	if _, err := s.CheckPassword("u", "Secret"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := s.CheckPassword(RootName, ""); !errors.Is(err, ErrNoPasswordUser) {
		t.Fatalf("no-password user: %v", err)
	}
	cases := []struct {
		key, end string
		write    bool
		ok       bool
	}{
		{"key", "", false, true},
		{"key", "", true, false},
		{"keyx", "", false, false},
		{"a", "", true, true},
		{"bzzz", "", true, true},
		{"c", "", true, false},
		{"a", "c", true, true},
		{"a", "e", false, true}, // [a, c) of r1 and [c, e) of r2 join
		{"a", "e", true, false},
		{"a", "e\x00", false, false},
		{"x", "\x00", true, true},
		{"x", "\x00", false, false},
		{"zzz", "", true, true},
		{"w", "\x00", true, false},
	}
	for _, c := range cases {
		var end []byte
		if c.end != "" {
			end = []byte(c.end)
		}
		err := s.IsPermitted("u", rev, []byte(c.key), end, c.write)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrPermissionDenied)) {
			t.Errorf("[%q, %q) write=%v: %v, want permitted=%v", c.key, c.end, c.write, err, c.ok)
		}
	}
	if err := s.IsPermitted(RootName, rev, []byte("anything"), []byte{0}, true); err != nil {
		t.Fatalf("root: %v", err)
	}
	// Any auth change makes tokens of the revision before stale.
	must(s.RoleRevokePermission("r2", []byte("c"), []byte("e")))
	if err := s.IsPermitted("u", rev, []byte("key"), nil, false); !errors.Is(err, ErrAuthOldRevision) {
		t.Fatalf("stale token: %v", err)
	}
	if err := s.IsPermitted("u", rev+1, []byte("a"), []byte("e"), false); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("after revoking the joining range: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestAuthPermissionCoverage checks the merged-interval check against the
// model's sweep on many small random permission sets, where ranges that
// only touch, nest or overlap are common.
func TestAuthPermissionCoverage(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	key, end := permDraws(rng)
	allowed := 0
	for round := 0; round < 20000; round++ {
		m := &authModel{users: map[string]*muser{"u": {roles: []string{"r"}}}, roles: map[string][]Permission{}}
		var ivs []interval
		for n := 1 + rng.Intn(4); n > 0; n-- {
			p := Permission{Type: PermRead, Key: key(), RangeEnd: end()}
			if !validPermRange(p.Key, p.RangeEnd) {
				continue
			}
			m.roles["r"] = append(m.roles["r"], p)
			ivs = append(ivs, permInterval(p.Key, p.RangeEnd))
		}
		merged := merge(ivs)
		k, e := key(), end()
		if len(e) > 0 && !(len(e) == 1 && e[0] == 0) && bytes.Compare(k, e) >= 0 {
			e = nil
		}
		got, want := permitted(merged, k, e), m.modelPermitted("u", k, e, false)
		if got != want {
			t.Fatalf("round %d: perms %q, request [%q, %q): permitted %v, want %v", round, m.roles["r"], k, e, got, want)
		}
		if got {
			allowed++
		}
	}
	if allowed == 0 {
		t.Fatal("no request was permitted")
	}
}
