package pagefile

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// sampleFile builds a small database (page size 1024, two commits, an
// overflow value) and returns its bytes, the state of its last commit and
// the ids of every page its tree and freelist use.
func sampleFile(t testing.TB) ([]byte, state, map[pgid]bool) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	db, err := Open(path, &Options{PageSize: 1024, NoSync: true, InitialMmapSize: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		err := db.Update(func(tx *Tx) error {
			for _, bn := range []string{"x", "y"} {
				b, err := tx.CreateBucketIfNotExists([]byte(bn))
				if err != nil {
					return err
				}
				for i := 0; i < 60; i++ {
					if err := b.Put([]byte(fmt.Sprintf("%s%03d", bn, i*7%60)), []byte(fmt.Sprintf("value-%d-%d", round, i))); err != nil {
						return err
					}
				}
			}
			return tx.Bucket([]byte("x")).Put([]byte("big"), bytes.Repeat([]byte{'B'}, 3000))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	used := map[pgid]bool{}
	var st state
	_ = db.View(func(tx *Tx) error {
		st = dumpTx(tx)
		tx.walkPages(tx.base.root, true, func(id, n pgid) {
			for i := id; i < id+n; i++ {
				used[i] = true
			}
		})
		used[tx.base.freelist] = true
		return nil
	})
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data, st, used
}

// openBytes writes data to a file and opens it, checks it and reads all of
// it; it returns the first error and what it read. It must never panic.
func openBytes(t testing.TB, data []byte) (state, error) {
	path := filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := Open(path, &Options{NoSync: true, InitialMmapSize: 1 << 16})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return nil, err
	}
	var st state
	err = db.View(func(tx *Tx) error {
		st = dumpTx(tx)
		return nil
	})
	return st, err
}

// TestOpenTruncated cuts the file anywhere below its high-water mark (the
// preallocated tail past it holds nothing). A zero-length file is a new one.
func TestOpenTruncated(t *testing.T) {
	data, _, _ := sampleFile(t)
	m0, err0 := decodeMeta(data, 0)
	m1, err1 := decodeMeta(data[1024:], 1)
	if err0 != nil || err1 != nil {
		t.Fatal(err0, err1)
	}
	hw := int(max(m0.highWater, m1.highWater)) * 1024
	if _, err := openBytes(t, data[:hw]); err != nil {
		t.Fatalf("cut at the high-water mark: %v", err)
	}
	for n := 1; n < hw; n += 97 {
		if _, err := openBytes(t, data[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d of %d bytes: %v, want a corruption error", n, len(data), err)
		}
	}
}

func TestOpenZeroed(t *testing.T) {
	data, _, _ := sampleFile(t)
	if _, err := openBytes(t, make([]byte, len(data))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("zeroed file: %v, want a corruption error", err)
	}
	// Zeroing just the pages after the metas is found by Check.
	z := bytes.Clone(data)
	clear(z[2*1024:])
	if _, err := openBytes(t, z); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("zeroed data pages: %v, want a corruption error", err)
	}
}

func TestOpenNotAPageFile(t *testing.T) {
	if _, err := openBytes(t, bytes.Repeat([]byte("not a database "), 1000)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("text file: %v, want a corruption error", err)
	}
}

// TestOpenBitFlips flips one bit at a time. A flip in a page the tree or
// freelist uses must be reported by Open or Check; a flip anywhere else
// (a meta, whose twin then takes over, or a free page) must leave a file
// that holds the last or the previous commit. Nothing may panic.
func TestOpenBitFlips(t *testing.T) {
	seed := testseed.Seed(t)
	rng := rand.New(rand.NewSource(seed))
	data, last, used := sampleFile(t)
	for i := 0; i < 400; i++ {
		off := rng.Intn(len(data))
		flipped := bytes.Clone(data)
		flipped[off] ^= 1 << rng.Intn(8)
		id := pgid(off / 1024)
		st, err := openBytes(t, flipped)
		switch {
		case used[id]:
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip at byte %d (page %d, in use): %v, want a corruption error", off, id, err)
			}
		case err != nil:
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip at byte %d (page %d): %v is not a corruption error", off, id, err)
			}
		default:
			if id >= 2 && diffStates(last, st) != "" {
				t.Fatalf("flip in free page %d changed the contents", id)
			}
		}
	}
}

// FuzzOpen feeds arbitrary bytes to Open, Check, a full read and a write:
// errors are fine, panics and hangs are not. The seed corpus is a valid file
// and damaged versions of it.
func FuzzOpen(f *testing.F) {
	data, _, _ := sampleFile(f)
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add(data[:2048])
	for _, off := range []int{10, 50, 1024 + 50, 2*1024 + 40, 3*1024 + 40, len(data) - 100} {
		flipped := bytes.Clone(data)
		flipped[off] ^= 0x10
		f.Add(flipped)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 1<<20 {
			return
		}
		path := filepath.Join(t.TempDir(), "db")
		if err := os.WriteFile(path, in, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := Open(path, &Options{NoSync: true, InitialMmapSize: 1 << 16})
		if err != nil {
			return
		}
		defer db.Close()
		_ = db.Check()
		_ = db.View(func(tx *Tx) error {
			_ = dumpTx(tx)
			return nil
		})
		_ = db.Update(func(tx *Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("x"))
			if err != nil {
				return err
			}
			for i := 0; i < 20; i++ {
				_ = b.Put([]byte{byte(i)}, []byte("v"))
				_ = b.Delete([]byte{byte(i * 3)})
			}
			return nil
		})
	})
}
