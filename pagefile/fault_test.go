package pagefile

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/vfs"
)

func putN(db *DB, from, n int) error {
	return db.Update(func(tx *Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("b"))
		if err != nil {
			return err
		}
		for i := from; i < from+n; i++ {
			if err := b.Put([]byte(fmt.Sprintf("%08d", i)), make([]byte, 200)); err != nil {
				return err
			}
		}
		return nil
	})
}

func keyCount(t *testing.T, db *DB) int {
	t.Helper()
	n := 0
	err := db.View(func(tx *Tx) error {
		if b := tx.Bucket([]byte("b")); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNoSpaceWhileGrowing: ENOSPC while the file grows fails the commit
// cleanly; the database stays usable and loses nothing.
func TestNoSpaceWhileGrowing(t *testing.T) {
	efs := vfs.NewErrorFS(vfs.Default)
	db := openTest(t, &Options{FS: efs, InitialMmapSize: 1 << 16})
	if err := putN(db, 0, 10); err != nil {
		t.Fatal(err)
	}
	efs.Inject(vfs.FaultTruncate, 1, vfs.ErrNoSpace, true)
	if err := putN(db, 10, 5000); !errors.Is(err, vfs.ErrNoSpace) {
		t.Fatalf("commit needing growth: %v, want ENOSPC", err)
	}
	if n := keyCount(t, db); n != 10 {
		t.Fatalf("%d keys after the failed commit, want 10", n)
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
	efs.Reset()
	if err := putN(db, 10, 5000); err != nil {
		t.Fatalf("commit once space is back: %v", err)
	}
	if n := keyCount(t, db); n != 5010 {
		t.Fatalf("%d keys, want 5010", n)
	}
}

// TestWriteAndSyncErrorsAreFatal: a failed write or fdatasync fails the
// commit and every later write transaction (never retry an fsync), while
// reads go on; a reopened file holds the last commit, or for a failure
// after the meta was written, possibly the failed one.
func TestWriteAndSyncErrorsAreFatal(t *testing.T) {
	cases := []struct {
		name      string
		op        vfs.FaultOp
		n         int
		err       error
		mayCommit bool
	}{
		{"data write", vfs.FaultWrite, 1, vfs.ErrInjected, false},
		{"short data write", vfs.FaultWrite, 1, vfs.ErrShortWrite, false},
		{"data sync", vfs.FaultSync, 1, vfs.ErrInjected, false},
		{"meta sync", vfs.FaultSync, 2, vfs.ErrInjected, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			efs := vfs.NewErrorFS(vfs.Default)
			opts := &Options{FS: efs, InitialMmapSize: 1 << 16}
			db := openTest(t, opts)
			if err := putN(db, 0, 100); err != nil {
				t.Fatal(err)
			}
			efs.Inject(c.op, c.n, c.err, false)
			err := putN(db, 100, 100)
			var fatal *FatalError
			if !errors.As(err, &fatal) {
				t.Fatalf("commit: %v, want a FatalError", err)
			}
			if err := putN(db, 200, 1); !errors.As(err, &fatal) {
				t.Fatalf("next write: %v, want the FatalError again", err)
			}
			if n := keyCount(t, db); n != 100 {
				t.Fatalf("readers see %d keys, want the last commit's 100", n)
			}
			db = reopen(t, db, &Options{InitialMmapSize: 1 << 16})
			n := keyCount(t, db)
			if n != 100 && !(c.mayCommit && n == 200) {
				t.Fatalf("reopened with %d keys", n)
			}
			if err := putN(db, 300, 10); err != nil {
				t.Fatalf("write after reopen: %v", err)
			}
		})
	}
}

// TestFailpointsInCommit: an error at each named point of the commit path
// behaves as an I/O error there.
func TestFailpointsInCommit(t *testing.T) {
	for _, fp := range []string{"pagefile/beforeDataSync", "pagefile/beforeMetaWrite", "pagefile/beforeMetaSync"} {
		t.Run(filepath.Base(fp), func(t *testing.T) {
			db := openTest(t, &Options{InitialMmapSize: 1 << 16})
			if err := putN(db, 0, 50); err != nil {
				t.Fatal(err)
			}
			boom := errors.New("boom")
			failpoint.Enable(fp, func() error { return boom })
			err := putN(db, 50, 50)
			failpoint.Disable(fp)
			if !errors.Is(err, boom) {
				t.Fatalf("commit: %v, want boom", err)
			}
			db = reopen(t, db, &Options{InitialMmapSize: 1 << 16})
			// Past the meta write the new commit may be in the file.
			n := keyCount(t, db)
			if n != 50 && !(fp == "pagefile/beforeMetaSync" && n == 100) {
				t.Fatalf("reopened with %d keys", n)
			}
		})
	}
}

// TestGrowthDoesNotWaitForReaders: a reader holding the old map does not
// stop the writer from growing the file past it; both see their own state.
func TestGrowthDoesNotWaitForReaders(t *testing.T) {
	db := openTest(t, &Options{NoSync: true, InitialMmapSize: 1 << 16})
	if err := putN(db, 0, 10); err != nil {
		t.Fatal(err)
	}
	rtx, err := db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	before := len(rtx.data)
	if err := putN(db, 10, 20000); err != nil {
		t.Fatal(err)
	}
	if s := db.Stats(); s.Remaps == 0 {
		t.Fatalf("the map was never replaced (stats %+v)", s)
	}
	if n := rtx.Bucket([]byte("b")).Stats().KeyN; n != 10 || len(rtx.data) != before {
		t.Fatalf("old reader sees %d keys over %d bytes", n, len(rtx.data))
	}
	_ = rtx.Rollback()
	if n := keyCount(t, db); n != 20010 {
		t.Fatalf("new reader sees %d keys", n)
	}
}

func TestClosedAndReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if err := putN(db, 0, 3); err != nil {
		t.Fatal(err)
	}
	_ = db.Close()
	if _, err := db.Begin(false); !errors.Is(err, ErrDatabaseNotOpen) {
		t.Fatalf("begin after close: %v", err)
	}
	ro, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkAndClose(t, ro) })
	if err := putN(ro, 0, 1); !errors.Is(err, ErrDatabaseReadOnly) {
		t.Fatalf("write to read-only: %v", err)
	}
	if n := keyCount(t, ro); n != 3 {
		t.Fatalf("read-only sees %d keys", n)
	}
}
