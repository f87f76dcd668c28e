package pagefile

import (
	"path/filepath"
	"testing"
)

// openTest opens a database in a temporary directory that runs Check when
// the test ends, so every test is also an integrity test.
func openTest(t testing.TB, opts *Options) *DB {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	db, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkAndClose(t, db) })
	return db
}

// checkAndClose runs Check and closes db (a no-op if already closed).
func checkAndClose(t testing.TB, db *DB) {
	t.Helper()
	db.mu.Lock()
	closed := db.mu.closed
	db.mu.Unlock()
	if closed {
		return
	}
	if err := db.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// reopen closes db after checking it and opens the same file again, checked
// again at the test's end.
func reopen(t testing.TB, db *DB, opts *Options) *DB {
	t.Helper()
	path := db.Path()
	checkAndClose(t, db)
	db2, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkAndClose(t, db2) })
	return db2
}
