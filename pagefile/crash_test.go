package pagefile

import (
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/cairn-kv/cairn/internal/vfs"
)

var crashPoints = flag.Int("pagefile.crashpoints", 1200, "crash points TestCrash checks (0: every recorded operation)")

// TestCrash records every write and sync of a random workload, then for each
// crash point rebuilds the file as a disk could hold it after a power loss
// there (unsynced writes dropped, kept as a prefix, kept as a random subset
// of 512-byte sectors, or with a torn sector). Each image must open, pass
// Check, and hold exactly the last committed transaction, or the one being
// committed if the crash fell inside its commit.
func TestCrash(t *testing.T) {
	seed := testseed.Seed(t)
	rng := rand.New(rand.NewSource(seed))
	root := t.TempDir()
	rec := vfs.NewRecorder(root)
	pageSize := []int{1024, 4096}[rng.Intn(2)]
	opts := func(fs vfs.FS) *Options {
		return &Options{FS: fs, PageSize: pageSize, InitialMmapSize: 1 << 20}
	}
	db, err := Open(filepath.Join(root, "db"), opts(rec))
	if err != nil {
		t.Fatal(err)
	}

	// A commit's operations are (start, end]: a crash after end must show
	// it, a crash at or before start must not.
	type commit struct {
		id         int
		start, end int
	}
	snapshots := map[int]state{}
	var commits []commit
	_ = db.View(func(tx *Tx) error {
		snapshots[tx.ID()] = state{}
		commits = append(commits, commit{id: tx.ID(), start: 0, end: rec.Len()})
		return nil
	})
	cur := state{}
	for rec.Len() < *crashPoints || len(commits) < 50 {
		tx, err := db.Begin(true)
		if err != nil {
			t.Fatal(err)
		}
		next := cur.clone()
		for i, n := 0, 1+rng.Intn(40); i < n; i++ {
			bn := []string{"a", "b"}[rng.Intn(2)]
			if next[bn] == nil {
				if _, err := tx.CreateBucket([]byte(bn)); err != nil {
					t.Fatal(err)
				}
				next[bn] = map[string]string{}
			}
			b := tx.Bucket([]byte(bn))
			k := fmt.Sprintf("k%04d", rng.Intn(800))
			switch r := rng.Intn(10); {
			case r < 6:
				v := fmt.Sprintf("%d-%0*d", len(commits), rng.Intn(100), 0)
				if rng.Intn(30) == 0 {
					v = string(make([]byte, 3*pageSize+rng.Intn(pageSize)))
				}
				if err := b.Put([]byte(k), []byte(v)); err != nil {
					t.Fatal(err)
				}
				next[bn][k] = v
			case r < 9:
				if err := b.Delete([]byte(k)); err != nil {
					t.Fatal(err)
				}
				delete(next[bn], k)
			default:
				if err := tx.DeleteBucket([]byte(bn)); err != nil {
					t.Fatal(err)
				}
				delete(next, bn)
			}
		}
		id, start := tx.ID(), rec.Len()
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		snapshots[id] = next
		commits = append(commits, commit{id: id, start: start, end: rec.Len()})
		cur = next
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	total := rec.Len()
	points := vfs.CrashPoints(total, *crashPoints, rng)
	t.Logf("page size %d, %d commits, %d operations, %d crash points", pageSize, len(commits), total, len(points))

	empty := t.TempDir()
	img := filepath.Join(t.TempDir(), "img")
	rp := rec.Replayer(empty)
	outcomes := map[string]int{}
	for i, k := range points {
		if err := rp.Advance(k); err != nil {
			t.Fatal(err)
		}
		mode := vfs.AllCrashModes[i%len(vfs.AllCrashModes)]
		if err := rp.Image(img, mode, rand.New(rand.NewSource(seed+int64(k)))); err != nil {
			t.Fatal(err)
		}
		// The newest commit finished by k, and the one in flight, if any.
		// Inside the file's creation, either outcome is the empty tx 1.
		ci := max(0, sort.Search(len(commits), func(i int) bool { return commits[i].end > k })-1)
		allowed := []int{commits[ci].id}
		if ci+1 < len(commits) && commits[ci+1].start < k {
			allowed = append(allowed, commits[ci+1].id)
		}
		got, err := openCrashImage(filepath.Join(img, "db"), opts(nil), snapshots)
		if err != nil {
			t.Fatalf("crash point %d/%d (%v, seed %d): %v", k, total, mode, seed, err)
		}
		if got != allowed[0] && (len(allowed) == 1 || got != allowed[1]) {
			t.Fatalf("crash point %d/%d (%v, seed %d): recovered tx %d, want one of %v", k, total, mode, seed, got, allowed)
		}
		if got == allowed[0] {
			outcomes["previous"]++
		} else {
			outcomes["new"]++
		}
	}
	t.Logf("outcomes: %v", outcomes)
}

// openCrashImage opens an image, checks it and compares it with the
// snapshot of the transaction it recovered; it returns that id.
func openCrashImage(path string, opts *Options, snapshots map[int]state) (int, error) {
	db, err := Open(path, opts)
	if err != nil {
		return 0, fmt.Errorf("open: %w", err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return 0, fmt.Errorf("check: %w", err)
	}
	id := 0
	err = db.View(func(tx *Tx) error {
		id = tx.ID()
		want, ok := snapshots[id]
		if !ok {
			return fmt.Errorf("recovered tx %d, which never committed", id)
		}
		if diff := diffStates(want, dumpTx(tx)); diff != "" {
			return fmt.Errorf("tx %d: %s", id, diff)
		}
		return nil
	})
	return id, err
}

// TestCrashOpenMissingFile: an image whose file creation never became
// durable opens as a new, empty database.
func TestCrashOpenMissingFile(t *testing.T) {
	dir := t.TempDir()
	_, err := os.Stat(filepath.Join(dir, "db"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	id, err := openCrashImage(filepath.Join(dir, "db"), nil, map[int]state{1: {}})
	if err != nil || id != 1 {
		t.Fatalf("id %d, %v", id, err)
	}
}
