package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/server"
)

// Migration between etcd v3 and cairn: etcd's backend is a bbolt file,
// read and written here with go.etcd.io/bbolt (and nowhere else in cairn).
// Both stores keep the same buckets under the same names, and revisions
// under the same keys (main revision, '_', sub revision, big-endian, with
// 't' for a deletion); they differ in how values are encoded: etcd's are
// protobufs (mvccpb.KeyValue, leasepb.Lease, authpb.User and Role), and
// etcd's compaction marks are revision keys where cairn's are numbers.

func (c *ctl) migrateCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate <from-etcd|to-etcd>",
		Short: "Moves a store from etcd v3 to cairn, or back",
	}
	var o restoreOptions
	from := &cobra.Command{
		Use:   "from-etcd <etcd snapshot file | etcd data dir> [options]",
		Short: "Makes a cairn member's data directory from an etcd v3 snapshot or a stopped etcd member's data",
		Long: `Writes a new cairn data directory (--data-dir) from etcd's: every key with its history
since etcd's last compaction (the same revisions), leases, users, roles and whether
auth is on. The member is in a new cluster of the members of --initial-cluster, as
snapshot restore makes one; restore each member of the cluster the same way.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fail(exitBadArgs, errors.New("migrate from-etcd takes one etcd snapshot file or data directory"))
			}
			cfg, opts, err := o.config()
			if err != nil {
				return err
			}
			var n migrated
			err = server.RestoreFrom(cfg, opts,
				func(path string) error {
					var err error
					n, err = fromEtcd(args[0], path, o.skipHashCheck)
					return err
				})
			if err != nil {
				return fail(exitError, err)
			}
			fmt.Fprintf(c.out, "Migrated %s from %s into %s\n", n, args[0], cfg.DataDir)
			return nil
		},
	}
	o.flags(from)
	var dataDir, output string
	to := &cobra.Command{
		Use:   "to-etcd [<cairn snapshot file> | --data-dir <dir>] --output <file>",
		Short: "Writes an etcd v3 snapshot from a cairn snapshot or a stopped member's data",
		Long: `Writes an etcd v3 snapshot file (a bbolt file with its SHA-256 after it, as
etcdctl snapshot save writes one) holding every key with its history since the last
compaction, leases, users, roles and the auth state; etcdutl snapshot restore makes
etcd members from it.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" || (len(args) == 1) == (dataDir != "") || len(args) > 1 {
				return fail(exitBadArgs, errors.New("migrate to-etcd takes a cairn snapshot file or --data-dir, and --output"))
			}
			var db *pagefile.DB
			var err error
			src := dataDir
			if dataDir != "" {
				db, err = c.openPageFile(dataDir, true, false)
			} else {
				var done func()
				src = args[0]
				db, done, err = openSnapshot(args[0])
				if err == nil {
					defer done()
				}
			}
			if err != nil {
				return fail(exitError, err)
			}
			if dataDir != "" {
				defer db.Close()
			}
			n, err := toEtcd(db, output)
			if err != nil {
				return fail(exitError, err)
			}
			fmt.Fprintf(c.out, "Migrated %s from %s into etcd snapshot %s\n", n, src, output)
			return nil
		},
	}
	to.Flags().StringVar(&dataDir, "data-dir", "", "The data directory of a stopped cairn member to read")
	to.Flags().StringVar(&output, "output", "", "The etcd snapshot file to write")
	cmd.AddCommand(from, to)
	return cmd
}

// migrated counts what a migration carried.
type migrated struct{ revisions, leases, users, roles int }

func (m migrated) String() string {
	return fmt.Sprintf("%d revisions, %d leases, %d users, %d roles", m.revisions, m.leases, m.users, m.roles)
}

// etcd's bucket and key names.
var (
	etcdKey      = []byte("key")
	etcdMeta     = []byte("meta")
	etcdLease    = []byte("lease")
	etcdAuth     = []byte("auth")
	etcdUsers    = []byte("authUsers")
	etcdRoles    = []byte("authRoles")
	etcdBuckets  = [][]byte{etcdKey, etcdMeta, etcdLease, etcdAuth, etcdUsers, etcdRoles, []byte("members"), []byte("members_removed"), []byte("cluster"), []byte("alarm")}
	etcdFinished = []byte("finishedCompactRev")
	etcdSched    = []byte("scheduledCompactRev")
	etcdCIndex   = []byte("consistent_index")
	etcdAuthOn   = []byte("authEnabled")
	etcdAuthRev  = []byte("authRevision")
)

// etcdRev reads etcd's revision key: main, '_', sub, and 't' for a
// deletion.
func etcdRev(k []byte) (main, sub int64, tomb bool, err error) {
	if (len(k) != 17 && len(k) != 18) || k[8] != '_' || len(k) == 18 && k[17] != 't' {
		return 0, 0, false, fmt.Errorf("bad etcd revision key %x", k)
	}
	return int64(binary.BigEndian.Uint64(k)), int64(binary.BigEndian.Uint64(k[9:])), len(k) == 18, nil
}

// etcdRevKey is etcd's key of a revision.
func etcdRevKey(main, sub int64, tomb bool) []byte {
	k := binary.BigEndian.AppendUint64(nil, uint64(main))
	k = append(k, '_')
	k = binary.BigEndian.AppendUint64(k, uint64(sub))
	if tomb {
		k = append(k, 't')
	}
	return k
}

// etcdDB is the bbolt file of an etcd snapshot or data directory: a
// snapshot's in a temporary copy without the hash after it (checked unless
// skip), as a restore takes a snapshot apart; bbolt files are whole pages.
func etcdDB(src string, skip bool) (path string, done func(), err error) {
	st, err := os.Stat(src)
	if err != nil {
		return "", nil, err
	}
	if st.IsDir() {
		return filepath.Join(src, "member", "snap", "db"), func() {}, nil
	}
	dir, err := os.MkdirTemp("", "cairnctl-etcd-")
	if err != nil {
		return "", nil, err
	}
	done = func() { os.RemoveAll(dir) }
	path = filepath.Join(dir, "db")
	if err := server.ExtractSnapshot(src, path, skip); err != nil {
		done()
		return "", nil, err
	}
	return path, done, nil
}

// fromEtcd writes a cairn page file at path from the etcd snapshot or
// data directory src.
func fromEtcd(src, path string, skip bool) (migrated, error) {
	var n migrated
	file, done, err := etcdDB(src, skip)
	if err != nil {
		return n, err
	}
	defer done()
	edb, err := bolt.Open(file, 0o400, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return n, fmt.Errorf("%s is in use: stop the etcd member first", file)
	}
	if err != nil {
		return n, fmt.Errorf("%s: not an etcd backend: %w", file, err)
	}
	defer edb.Close()
	db, err := pagefile.Open(path, nil)
	if err != nil {
		return n, err
	}
	defer db.Close()
	err = edb.View(func(etx *bolt.Tx) error {
		for _, b := range [][]byte{etcdKey, etcdMeta} {
			if etx.Bucket(b) == nil {
				return fmt.Errorf("%s: no %q bucket: not an etcd v3 backend", src, b)
			}
		}
		return db.Update(func(tx *pagefile.Tx) error {
			l, err := engine.NewLoad(tx)
			if err != nil {
				return err
			}
			if err := etx.Bucket(etcdKey).ForEach(func(k, v []byte) error {
				main, sub, tomb, err := etcdRev(k)
				if err != nil {
					return err
				}
				var kv mvccpb.KeyValue
				if err := proto.Unmarshal(v, &kv); err != nil {
					return fmt.Errorf("revision %d.%d: %w", main, sub, err)
				}
				n.revisions++
				return l.Revision(main, sub, tomb, engine.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision,
					ModRevision: kv.ModRevision, Version: kv.Version, Value: kv.Value, Lease: kv.Lease})
			}); err != nil {
				return err
			}
			var finished, scheduled int64
			meta := etx.Bucket(etcdMeta)
			for _, f := range []struct {
				key []byte
				rev *int64
			}{{etcdFinished, &finished}, {etcdSched, &scheduled}} {
				if v := meta.Get(f.key); v != nil {
					main, _, _, err := etcdRev(v)
					if err != nil {
						return fmt.Errorf("meta %s: %w", f.key, err)
					}
					*f.rev = main
				}
			}
			if err := l.Compacted(finished, max(scheduled, finished)); err != nil {
				return err
			}
			if b := etx.Bucket(etcdLease); b != nil {
				if err := b.ForEach(func(k, v []byte) error {
					le, err := decodeEtcdLease(v)
					if err != nil {
						return fmt.Errorf("lease %x: %w", k, err)
					}
					n.leases++
					return l.Lease(le)
				}); err != nil {
					return err
				}
			}
			a, err := etcdAuthOf(etx)
			if err != nil {
				return err
			}
			n.users, n.roles = len(a.Users), len(a.Roles)
			return l.Auth(a)
		})
	})
	if err != nil {
		return n, err
	}
	return n, db.Close()
}

// etcdAuthOf reads etcd's auth state, users and roles.
func etcdAuthOf(etx *bolt.Tx) (engine.AuthRecord, error) {
	a := engine.AuthRecord{Revision: 1}
	if b := etx.Bucket(etcdAuth); b != nil {
		a.Enabled = bytes.Equal(b.Get(etcdAuthOn), []byte{1})
		if v := b.Get(etcdAuthRev); len(v) == 8 {
			a.Revision = binary.BigEndian.Uint64(v)
		}
	}
	if b := etx.Bucket(etcdUsers); b != nil {
		if err := b.ForEach(func(k, v []byte) error {
			var u authpb.User
			if err := proto.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("user %q: %w", k, err)
			}
			rec := engine.UserRecord{Name: string(u.Name), Roles: u.Roles, NoPassword: u.Options.GetNoPassword()}
			if !rec.NoPassword {
				rec.Password = u.Password
			}
			a.Users = append(a.Users, rec)
			return nil
		}); err != nil {
			return a, err
		}
	}
	if b := etx.Bucket(etcdRoles); b != nil {
		if err := b.ForEach(func(k, v []byte) error {
			var r authpb.Role
			if err := proto.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("role %q: %w", k, err)
			}
			rec := engine.RoleRecord{Name: string(r.Name)}
			for _, p := range r.KeyPermission {
				rec.Perms = append(rec.Perms, engine.Permission{Type: engine.PermType(p.PermType), Key: p.Key, RangeEnd: p.RangeEnd})
			}
			a.Roles = append(a.Roles, rec)
			return nil
		}); err != nil {
			return a, err
		}
	}
	return a, nil
}

// decodeEtcdLease reads etcd's leasepb.Lease: ID (1), TTL (2),
// RemainingTTL (3), varints.
func decodeEtcdLease(b []byte) (engine.LeaseRecord, error) {
	var le engine.LeaseRecord
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return le, protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.VarintType {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return le, protowire.ParseError(m)
			}
			b = b[m:]
			continue
		}
		v, m := protowire.ConsumeVarint(b)
		if m < 0 {
			return le, protowire.ParseError(m)
		}
		b = b[m:]
		switch num {
		case 1:
			le.ID = int64(v)
		case 2:
			le.TTL = int64(v)
		case 3:
			le.Remaining = int64(v)
		}
	}
	return le, nil
}

// encodeEtcdLease writes etcd's leasepb.Lease.
func encodeEtcdLease(le engine.LeaseRecord) []byte {
	var b []byte
	for _, f := range []struct {
		num protowire.Number
		v   int64
	}{{1, le.ID}, {2, le.TTL}, {3, le.Remaining}} {
		if f.v != 0 {
			b = protowire.AppendTag(b, f.num, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(f.v))
		}
	}
	return b
}

// toEtcd writes the store in db as an etcd v3 snapshot file at output
// (through output.part, renamed once whole and synced): etcd's bbolt
// backend, then the SHA-256 of it.
func toEtcd(db *pagefile.DB, output string) (migrated, error) {
	var n migrated
	if _, err := os.Stat(output); err == nil {
		return n, fmt.Errorf("%s exists", output)
	}
	part := output + ".part"
	os.Remove(part)
	defer os.Remove(part)
	edb, err := bolt.Open(part, 0o600, nil)
	if err != nil {
		return n, err
	}
	err = db.View(func(tx *pagefile.Tx) error {
		d, err := engine.NewDump(tx)
		if err != nil {
			return err
		}
		return edb.Update(func(etx *bolt.Tx) error {
			for _, b := range etcdBuckets {
				if _, err := etx.CreateBucket(b); err != nil {
					return err
				}
			}
			keys := etx.Bucket(etcdKey)
			keys.FillPercent = 1 // revisions come in order: full pages, as etcd's own
			if err := d.Revisions(func(main, sub int64, tomb bool, kv engine.KeyValue) error {
				ekv := &mvccpb.KeyValue{Key: kv.Key}
				if !tomb {
					ekv = &mvccpb.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision,
						Version: kv.Version, Value: kv.Value, Lease: kv.Lease}
				}
				v, err := proto.Marshal(ekv)
				if err != nil {
					return err
				}
				n.revisions++
				return keys.Put(etcdRevKey(main, sub, tomb), v)
			}); err != nil {
				return err
			}
			finished, scheduled := d.Compacted()
			meta := etx.Bucket(etcdMeta)
			if finished > 0 {
				if err := meta.Put(etcdFinished, etcdRevKey(finished, 0, false)); err != nil {
					return err
				}
			}
			if scheduled > 0 {
				if err := meta.Put(etcdSched, etcdRevKey(scheduled, 0, false)); err != nil {
					return err
				}
			}
			if err := meta.Put(etcdCIndex, binary.BigEndian.AppendUint64(nil, d.ConsistentIndex())); err != nil {
				return err
			}
			leases, err := d.Leases()
			if err != nil {
				return err
			}
			for _, le := range leases {
				if err := etx.Bucket(etcdLease).Put(binary.BigEndian.AppendUint64(nil, uint64(le.ID)), encodeEtcdLease(le)); err != nil {
					return err
				}
			}
			n.leases = len(leases)
			a, err := d.Auth()
			if err != nil {
				return err
			}
			n.users, n.roles = len(a.Users), len(a.Roles)
			return putEtcdAuth(etx, a)
		})
	})
	if cerr := edb.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, err
	}
	if err := appendHash(part); err != nil {
		return n, err
	}
	if err := os.Rename(part, output); err != nil {
		return n, err
	}
	return n, vfs.Default.SyncDir(filepath.Dir(output))
}

// putEtcdAuth writes the auth state, users and roles as etcd keeps them.
func putEtcdAuth(etx *bolt.Tx, a engine.AuthRecord) error {
	on := []byte{0}
	if a.Enabled {
		on = []byte{1}
	}
	auth := etx.Bucket(etcdAuth)
	if err := auth.Put(etcdAuthOn, on); err != nil {
		return err
	}
	if err := auth.Put(etcdAuthRev, binary.BigEndian.AppendUint64(nil, a.Revision)); err != nil {
		return err
	}
	for _, u := range a.Users {
		pu := &authpb.User{Name: []byte(u.Name), Password: u.Password, Roles: u.Roles}
		if u.NoPassword {
			pu.Options = &authpb.UserAddOptions{NoPassword: true}
		}
		v, err := proto.Marshal(pu)
		if err != nil {
			return err
		}
		if err := etx.Bucket(etcdUsers).Put([]byte(u.Name), v); err != nil {
			return err
		}
	}
	for _, r := range a.Roles {
		pr := &authpb.Role{Name: []byte(r.Name)}
		for _, p := range r.Perms {
			pr.KeyPermission = append(pr.KeyPermission, &authpb.Permission{PermType: authpb.Permission_Type(p.Type), Key: p.Key, RangeEnd: p.RangeEnd})
		}
		v, err := proto.Marshal(pr)
		if err != nil {
			return err
		}
		if err := etx.Bucket(etcdRoles).Put([]byte(r.Name), v); err != nil {
			return err
		}
	}
	return nil
}

// appendHash appends the file's SHA-256 to it, as the Snapshot RPC ends a
// snapshot, and syncs it.
func appendHash(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if _, err := f.Write(h.Sum(nil)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}
