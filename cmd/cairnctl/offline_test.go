package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/testmember"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/server"
)

// filled is a member with history (overwrites, deletions, a compaction),
// a lease with keys, a user and a role, stopped; its data directory and a
// snapshot (plain, and compressed) of it.
type filled struct {
	dataDir, snap, snapZ string
	rev, compacted       int64
	leaseID              int64
}

func fill(t *testing.T) filled {
	t.Helper()
	f := filled{dataDir: t.TempDir()}
	s := testmember.Start(t, func(cfg *server.Config) { cfg.DataDir = f.dataDir })
	ep := s.ClientURLs()[0]
	ctl := func(args ...string) string { return ctlAt(t, ep, args...) }
	for i := range 60 {
		ctl("put", fmt.Sprintf("k%02d", i%20), fmt.Sprintf("v%d", i))
	}
	ctl("del", "k0", "--prefix")
	ctl("compaction", "30")
	f.compacted = 30
	out := ctl("lease", "grant", "600", "-w", "json")
	_, err := fmt.Sscanf(out[strings.Index(out, `"ID":`):], `"ID":%d`, &f.leaseID)
	require.NoError(t, err, out)
	for i := range 3 {
		ctl("put", fmt.Sprintf("l%d", i), "v", "--lease", fmt.Sprintf("%x", f.leaseID))
	}
	ctl("role", "add", "r")
	ctl("role", "grant-permission", "r", "read", "k", "--prefix")
	ctl("user", "add", "u:pw")
	ctl("user", "grant-role", "u", "r")
	dir := t.TempDir()
	f.snap, f.snapZ = filepath.Join(dir, "snap.db"), filepath.Join(dir, "snap.db.zst")
	ctl("snapshot", "save", f.snap)
	ctl("snapshot", "save", f.snapZ, "--compress")
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}})
	require.NoError(t, err)
	resp, err := cli.Get(t.Context(), "k", clientv3.WithPrefix())
	require.NoError(t, err)
	f.rev = resp.Header.Revision
	cli.Close()
	s.Stop()
	return f
}

// TestSnapshotOffline: snapshot status reads both forms alike; a restore
// with --bump-revision serves the keys above the bump; check finds the
// data directory whole and a damaged one not; defrag --data-dir shrinks a
// page file with free pages; inspect shows keys at a revision, their
// history and the WAL.
func TestSnapshotOffline(t *testing.T) {
	f := fill(t)
	plain := ctlIn("", "snapshot", "status", f.snap, "-w", "json")
	require.Equal(t, 0, plain.code, plain.err)
	compressed := ctlIn("", "snapshot", "status", f.snapZ, "-w", "json")
	require.Equal(t, 0, compressed.code, compressed.err)
	require.Equal(t, plain.out, compressed.out, "a compressed snapshot's status is the snapshot's")
	require.Contains(t, plain.out, fmt.Sprintf(`"revision":%d`, f.rev))
	st, err := os.Stat(f.snapZ)
	require.NoError(t, err)
	raw, err := os.Stat(f.snap)
	require.NoError(t, err)
	require.Less(t, st.Size(), raw.Size(), "compressed")
	r := ctlIn("", "snapshot", "status", f.snap, "-w", "table")
	require.Regexp(t, `\| +HASH +\| REVISION \| TOTAL KEYS \| TOTAL SIZE \|`, r.out)

	// Restore: refusals, then a member on the restored directory.
	restored := filepath.Join(t.TempDir(), "restored")
	r = ctlIn("", "snapshot", "restore", f.snapZ, "--data-dir", restored, "--bump-revision", "10")
	require.Equal(t, exitBadArgs, r.code)
	require.Contains(t, r.err, "--mark-compacted required")
	damaged := filepath.Join(t.TempDir(), "damaged.db")
	data, err := os.ReadFile(f.snap)
	require.NoError(t, err)
	data[len(data)/2] ^= 0xff
	require.NoError(t, os.WriteFile(damaged, data, 0o600))
	r = ctlIn("", "snapshot", "restore", damaged, "--data-dir", restored)
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.err, "integrity check failed")
	_, err = os.Stat(restored)
	require.True(t, os.IsNotExist(err), "nothing left of a failed restore")
	r = ctlIn("", "snapshot", "restore", f.snapZ, "--data-dir", restored, "--name", "m1",
		"--initial-cluster", "m1=http://127.0.0.1:12380", "--initial-advertise-peer-urls", "http://127.0.0.1:12380",
		"--bump-revision", "1000", "--mark-compacted")
	require.Equal(t, 0, r.code, r.err)
	r = ctlIn("", "check", "--data-dir", restored)
	require.Equal(t, 0, r.code, r.out+r.err)
	require.Contains(t, r.out, fmt.Sprintf("PASS: store: revision %d, compacted at %d, 13 keys, 1 leases", f.rev+1000, f.rev+1000))
	s := testmember.Start(t, func(cfg *server.Config) {
		cfg.DataDir, cfg.Name, cfg.InitialAdvertisePeerURLs = restored, "m1", []string{"http://127.0.0.1:12380"}
	})
	ep := s.ClientURLs()[0]
	require.Equal(t, "v59\n", ctlAt(t, ep, "get", "k19", "--print-value-only"))
	r = ctlIn("", "--endpoints", ep, "get", "k19", "--rev", fmt.Sprint(f.rev))
	require.Contains(t, r.err, "required revision has been compacted")
	require.Contains(t, ctlAt(t, ep, "lease", "timetolive", fmt.Sprintf("%x", f.leaseID), "--keys"), "attached keys([l0 l1 l2])")
	s.Stop()

	// check, on the original directory (left as it was) and on a damaged
	// copy.
	db0 := mustRead(t, pageFileOf(f.dataDir))
	r = ctlIn("", "check", "--data-dir", f.dataDir)
	require.Equal(t, 0, r.code, r.out+r.err)
	require.Equal(t, db0, mustRead(t, pageFileOf(f.dataDir)), "check writes nothing")
	require.Contains(t, r.out, "PASS: WAL: entries 1 to ")
	bad := t.TempDir()
	copyTree(t, f.dataDir, bad)
	db := pageFileOf(bad)
	page, err := os.ReadFile(db)
	require.NoError(t, err)
	for p := 2 * 4096; p+4096 <= len(page); p += 4096 { // every page but the metas
		for i := p; i < p+64; i++ {
			page[i] ^= 0x5a
		}
	}
	require.NoError(t, os.WriteFile(db, page, 0o600))
	r = ctlIn("", "check", "--data-dir", bad)
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.out, "FAIL: page file")

	// inspect: the keys at the compaction and now, a key's history, the WAL.
	r = ctlIn("", "inspect", "keys", "--data-dir", f.dataDir, "--rev", "30", "k19")
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, "key=\"k19\" create_rev=21 mod_rev=21 version=1 lease=0 value=\"v19\"\n", r.out)
	r = ctlIn("", "inspect", "keys", "--data-dir", f.dataDir, "k0", "--prefix")
	require.Equal(t, 0, r.code, r.err)
	require.Equal(t, "", r.out, "deleted")
	r = ctlIn("", "inspect", "keys", "--data-dir", f.dataDir, "k05", "--history")
	require.Equal(t, 0, r.code, r.err)
	require.Contains(t, r.out, "put key=\"k05\"")
	require.Contains(t, r.out, "delete key=\"k05\"")
	r = ctlIn("", "inspect", "wal", "--data-dir", f.dataDir)
	require.Equal(t, 0, r.code, r.err)
	require.Contains(t, r.out, `put:{key:"k19"`)
	r = ctlIn("", "inspect", "keys", "--data-dir", f.dataDir, "--rev", "5")
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.err, "outside what the page file holds")

	// defrag --data-dir: the deletions and the compaction left free pages.
	before := fileSize(t, pageFileOf(f.dataDir))
	r = ctlIn("", "defrag", "--data-dir", f.dataDir)
	require.Equal(t, 0, r.code, r.err)
	require.Less(t, fileSize(t, pageFileOf(f.dataDir)), before)
	r = ctlIn("", "check", "--data-dir", f.dataDir)
	require.Equal(t, 0, r.code, r.out+r.err)
}

// TestMigrateThroughEtcdFormat: a snapshot written as an etcd snapshot
// and read back is the same store: every revision, the compaction, the
// leases and the auth state.
func TestMigrateThroughEtcdFormat(t *testing.T) {
	f := fill(t)
	etcdSnap := filepath.Join(t.TempDir(), "etcd.db")
	r := ctlIn("", "migrate", "to-etcd", f.snapZ, "--output", etcdSnap)
	require.Equal(t, 0, r.code, r.err)
	require.Contains(t, r.out, "revisions, 1 leases, 1 users, 1 roles")
	r = ctlIn("", "migrate", "to-etcd", f.snap, "--output", etcdSnap)
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.err, "exists")
	back := filepath.Join(t.TempDir(), "back")
	r = ctlIn("", "migrate", "from-etcd", etcdSnap, "--data-dir", back)
	require.Equal(t, 0, r.code, r.err)
	data := append([]byte(nil), mustRead(t, etcdSnap)...)
	data[len(data)-1] ^= 1
	tampered := filepath.Join(t.TempDir(), "tampered.db")
	require.NoError(t, os.WriteFile(tampered, data, 0o600))
	r = ctlIn("", "migrate", "from-etcd", tampered, "--data-dir", filepath.Join(t.TempDir(), "x"))
	require.Equal(t, exitError, r.code)
	require.Contains(t, r.err, "integrity check failed")

	want := dumpOf(t, f.dataDir)
	got := dumpOf(t, back)
	require.Equal(t, want.revs, got.revs)
	require.Equal(t, want.leases, got.leases)
	require.Equal(t, want.auth, got.auth)
	require.Equal(t, want.compacted, got.compacted)
	r = ctlIn("", "check", "--data-dir", back)
	require.Equal(t, 0, r.code, r.out+r.err)
}

type dumped struct {
	revs      []string
	compacted int64
	leases    []engine.LeaseRecord
	auth      engine.AuthRecord
}

// dumpOf reads every record of a data directory's store.
func dumpOf(t *testing.T, dataDir string) dumped {
	t.Helper()
	db, err := pagefile.Open(pageFileOf(dataDir), &pagefile.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	var d dumped
	require.NoError(t, db.View(func(tx *pagefile.Tx) error {
		dump, err := engine.NewDump(tx)
		if err != nil {
			return err
		}
		if err := dump.Revisions(func(main, sub int64, tomb bool, kv engine.KeyValue) error {
			d.revs = append(d.revs, fmt.Sprintf("%d.%d %v %q %q %d %d %d %x", main, sub, tomb, kv.Key, kv.Value,
				kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease))
			return nil
		}); err != nil {
			return err
		}
		d.compacted, _ = dump.Compacted()
		if d.leases, err = dump.Leases(); err != nil {
			return err
		}
		d.auth, err = dump.Auth()
		return err
	}))
	return d
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	return st.Size()
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// copyTree copies the files under src into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, filepath.Walk(src, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	}))
}
