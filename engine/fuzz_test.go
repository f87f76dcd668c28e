package engine

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/pagefile"
)

// fuzzBuckets are the buckets whose records the engine decodes as it
// opens.
var fuzzBuckets = [][]byte{keyBucket, metaBucket, leaseBucket, authBucket, authUsersBucket, authRolesBucket, membersBucket, removedBucket, alarmBucket}

var fuzzBase struct {
	once sync.Once
	file []byte
	err  error
	// records holds each bucket's records in the base file, as seeds.
	records [][3][]byte
}

// baseStore is a page file holding a record of every kind: key-values
// (one attached to a lease, one deleted), a lease, a user with a role and
// a permission, a member and a removed one, an alarm, auth on.
func baseStore(t testing.TB) []byte {
	fuzzBase.once.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-fuzz-engine-")
		if err != nil {
			fuzzBase.err = err
			return
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "db")
		db, err := pagefile.Open(path, &pagefile.Options{NoSync: true, InitialMmapSize: 1 << 22})
		if err != nil {
			fuzzBase.err = err
			return
		}
		s, err := Open(db)
		if err != nil {
			fuzzBase.err = err
			return
		}
		steps := []func() error{
			func() error { _, err := s.LeaseGrant(7, 60); return err },
			func() error {
				w := s.Write()
				defer w.End()
				if _, err := w.Put([]byte("a"), []byte("1"), 0); err != nil {
					return err
				}
				_, err := w.Put([]byte("b"), []byte("2"), 7)
				return err
			},
			func() error {
				w := s.Write()
				defer w.End()
				_, err := w.DeleteRange([]byte("a"), nil)
				return err
			},
			func() error { return s.UserAdd("root", []byte("$2a$04$hash"), false) },
			func() error { return s.RoleAdd("r") },
			func() error {
				return s.RoleGrantPermission("r", &Permission{Type: PermReadWrite, Key: []byte("a"), RangeEnd: []byte("z")})
			},
			func() error { return s.UserGrantRole("root", "r") },
			func() error {
				return s.AddMember(Member{ID: 1, Name: "m1", PeerURLs: []string{"http://127.0.0.1:2380"}}, 1)
			},
			func() error {
				return s.AddMember(Member{ID: 2, PeerURLs: []string{"http://127.0.0.1:2381"}, IsLearner: true}, 1)
			},
			s.Commit,
		}
		for _, step := range steps {
			if err := step(); err != nil {
				fuzzBase.err = err
				return
			}
		}
		if err := s.Close(); err != nil {
			fuzzBase.err = err
			return
		}
		if err := db.View(func(tx *pagefile.Tx) error {
			for i, name := range fuzzBuckets {
				if b := tx.Bucket(name); b != nil {
					_ = b.ForEach(func(k, v []byte) error {
						fuzzBase.records = append(fuzzBase.records, [3][]byte{{byte(i)}, append([]byte(nil), k...), append([]byte(nil), v...)})
						return nil
					})
				}
			}
			return nil
		}); err != nil {
			fuzzBase.err = err
			return
		}
		if err := db.Close(); err != nil {
			fuzzBase.err = err
			return
		}
		fuzzBase.file, fuzzBase.err = os.ReadFile(path)
	})
	require.NoError(t, fuzzBase.err)
	return fuzzBase.file
}

// FuzzOpenRecords writes an arbitrary record (a bucket, a key, a value)
// into a page file that holds one of every kind, or deletes one, and
// opens the engine on it: it must open or refuse, never panic; once open,
// its checker runs and every key, revision, lease, user, role and member
// is read, which must not panic either.
func FuzzOpenRecords(f *testing.F) {
	baseStore(f)
	for _, r := range fuzzBase.records {
		f.Add(r[0][0], r[1], r[2], false)
		f.Add(r[0][0], r[1], []byte{}, false)
		f.Add(r[0][0], r[1], []byte(nil), true)
	}
	f.Fuzz(func(t *testing.T, bucket uint8, key, value []byte, del bool) {
		path := filepath.Join(t.TempDir(), "db")
		require.NoError(t, os.WriteFile(path, baseStore(t), 0o600))
		db, err := pagefile.Open(path, &pagefile.Options{NoSync: true, InitialMmapSize: 1 << 22})
		require.NoError(t, err)
		defer db.Close()
		if err := db.Update(func(tx *pagefile.Tx) error {
			b, err := tx.CreateBucketIfNotExists(fuzzBuckets[int(bucket)%len(fuzzBuckets)])
			if err != nil {
				return err
			}
			if del {
				return b.Delete(key)
			}
			return b.Put(key, value)
		}); err != nil {
			return // a key the page file refuses (empty, too long)
		}
		s, err := Open(db)
		if err != nil {
			return
		}
		defer s.Close()
		_ = s.Check()
		if r, err := s.Range([]byte{0}, []byte{0}, RangeOptions{}); err == nil {
			for _, kv := range r.KVs {
				_, _ = s.Range(kv.Key, nil, RangeOptions{Rev: kv.ModRevision})
			}
		}
		_, _ = s.HashKV(0)
		for _, id := range s.Leases() {
			_, _ = s.LeaseTimeToLive(id, true)
		}
		for _, u := range s.UserList() {
			_, _ = s.UserGet(u)
			_ = s.IsPermitted(u, 0, []byte("a"), nil, false)
		}
		for _, r := range s.RoleList() {
			_, _ = s.RoleGet(r)
		}
		_ = s.Members()
		_ = s.Alarms()
	})
}
