package pagefile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestPutGetReopen(t *testing.T) {
	db := openTest(t, nil)
	err := db.Update(func(tx *Tx) error {
		b, err := tx.CreateBucket([]byte("kv"))
		if err != nil {
			return err
		}
		for i := 0; i < 1000; i++ {
			if err := b.Put([]byte(fmt.Sprintf("k%05d", i)), []byte(fmt.Sprintf("v%d", i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, nil)
	err = db.View(func(tx *Tx) error {
		b := tx.Bucket([]byte("kv"))
		if b == nil {
			return errors.New("bucket missing")
		}
		for i := 0; i < 1000; i++ {
			if got := b.Get([]byte(fmt.Sprintf("k%05d", i))); string(got) != fmt.Sprintf("v%d", i) {
				return fmt.Errorf("k%05d = %q", i, got)
			}
		}
		if b.Get([]byte("nope")) != nil {
			return errors.New("absent key found")
		}
		n := 0
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if want := fmt.Sprintf("k%05d", n); string(k) != want {
				return fmt.Errorf("cursor at %d: %q, want %q", n, k, want)
			}
			n++
		}
		if n != 1000 {
			return fmt.Errorf("cursor saw %d keys", n)
		}
		for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
			n--
			if want := fmt.Sprintf("k%05d", n); string(k) != want {
				return fmt.Errorf("reverse cursor at %d: %q, want %q", n, k, want)
			}
		}
		if k, _ := c.Seek([]byte("k00500x")); string(k) != "k00501" {
			return fmt.Errorf("seek: %q", k)
		}
		if k, _ := c.Seek([]byte("z")); k != nil {
			return fmt.Errorf("seek past end: %q", k)
		}
		if s := b.Stats(); s.KeyN != 1000 || s.Depth < 2 {
			return fmt.Errorf("stats %+v", s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDeleteEverythingThenReuse(t *testing.T) {
	db := openTest(t, &Options{NoSync: true})
	var sizes []int64
	for round := 0; round < 12; round++ {
		err := db.Update(func(tx *Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			for i := 0; i < 5000; i++ {
				if err := b.Put([]byte(fmt.Sprintf("%08d", i*7919%5000)), bytes.Repeat([]byte{'x'}, 100)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *Tx) error {
			b := tx.Bucket([]byte("b"))
			for i := 0; i < 5000; i++ {
				if err := b.Delete([]byte(fmt.Sprintf("%08d", i))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Check(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		_ = db.View(func(tx *Tx) error {
			if k, _ := tx.Bucket([]byte("b")).Cursor().First(); k != nil {
				t.Fatalf("bucket not empty: %q", k)
			}
			return nil
		})
		sizes = append(sizes, db.Size())
	}
	// Churn of the same size reuses pages: the file stops growing.
	if sizes[len(sizes)-1] != sizes[3] {
		t.Fatalf("file kept growing under steady churn: sizes by round %v", sizes)
	}
	t.Logf("sizes by round: %v", sizes)
}

func TestBuckets(t *testing.T) {
	db := openTest(t, nil)
	err := db.Update(func(tx *Tx) error {
		if _, err := tx.CreateBucket(nil); !errors.Is(err, ErrBucketNameRequired) {
			return fmt.Errorf("empty name: %v", err)
		}
		for _, n := range []string{"c", "a", "b"} {
			b, err := tx.CreateBucket([]byte(n))
			if err != nil {
				return err
			}
			if err := b.Put([]byte("k"), []byte(n)); err != nil {
				return err
			}
		}
		if _, err := tx.CreateBucket([]byte("a")); !errors.Is(err, ErrBucketExists) {
			return fmt.Errorf("duplicate: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *Tx) error {
		if err := tx.DeleteBucket([]byte("b")); err != nil {
			return err
		}
		if err := tx.DeleteBucket([]byte("b")); !errors.Is(err, ErrBucketNotFound) {
			return fmt.Errorf("second delete: %v", err)
		}
		var names []string
		if err := tx.ForEach(func(name []byte, b *Bucket) error {
			names = append(names, string(name)+"="+string(b.Get([]byte("k"))))
			return nil
		}); err != nil {
			return err
		}
		if fmt.Sprint(names) != "[a=a c=c]" {
			return fmt.Errorf("buckets %v", names)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, nil)
	_ = db.View(func(tx *Tx) error {
		if tx.Bucket([]byte("b")) != nil || string(tx.Bucket([]byte("c")).Get([]byte("k"))) != "c" {
			t.Fatal("bucket state lost across reopen")
		}
		if err := tx.Bucket([]byte("a")).Put([]byte("x"), nil); !errors.Is(err, ErrTxNotWritable) {
			t.Fatalf("put in read tx: %v", err)
		}
		return nil
	})
}

func TestLargeValues(t *testing.T) {
	db := openTest(t, nil)
	sizes := []int{0, 1, 4000, 4096, 10000, 2 << 20, 3<<20 + 17}
	err := db.Update(func(tx *Tx) error {
		b, _ := tx.CreateBucket([]byte("big"))
		for i, n := range sizes {
			if err := b.Put([]byte{byte(i + 1)}, bytes.Repeat([]byte{byte(i)}, n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	db = reopen(t, db, nil)
	_ = db.View(func(tx *Tx) error {
		b := tx.Bucket([]byte("big"))
		for i, n := range sizes {
			v := b.Get([]byte{byte(i + 1)})
			if v == nil || !bytes.Equal(v, bytes.Repeat([]byte{byte(i)}, n)) {
				t.Fatalf("value %d (%d bytes) came back as %d bytes", i, n, len(v))
			}
		}
		return nil
	})
	// Overwrite the big ones with small ones: the overflow runs are freed.
	err = db.Update(func(tx *Tx) error {
		b := tx.Bucket([]byte("big"))
		for i := range sizes {
			if err := b.Put([]byte{byte(i + 1)}, []byte("small")); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := db.Stats(); s.FreePageN+s.PendingPageN < 1000 {
		t.Fatalf("overflow pages not freed: %+v", s)
	}
}

func TestKeyLimits(t *testing.T) {
	db := openTest(t, nil)
	_ = db.Update(func(tx *Tx) error {
		b, _ := tx.CreateBucket([]byte("b"))
		if err := b.Put(nil, []byte("v")); !errors.Is(err, ErrKeyRequired) {
			t.Fatalf("empty key: %v", err)
		}
		if err := b.Put(make([]byte, MaxKeySize+1), nil); !errors.Is(err, ErrKeyTooLarge) {
			t.Fatalf("huge key: %v", err)
		}
		if err := b.Put(bytes.Repeat([]byte{'k'}, MaxKeySize), []byte("v")); err != nil {
			t.Fatalf("max key: %v", err)
		}
		return nil
	})
}

func TestRollbackLeavesNoTrace(t *testing.T) {
	db := openTest(t, nil)
	_ = db.Update(func(tx *Tx) error {
		b, _ := tx.CreateBucket([]byte("b"))
		return b.Put([]byte("keep"), []byte("1"))
	})
	before := fmt.Sprint(db.freelist.free, db.freelist.pending)
	boom := errors.New("boom")
	err := db.Update(func(tx *Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := 0; i < 3000; i++ {
			_ = b.Put([]byte(fmt.Sprint(i)), make([]byte, 100))
		}
		_ = b.Delete([]byte("keep"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("update returned %v", err)
	}
	_ = db.View(func(tx *Tx) error {
		b := tx.Bucket([]byte("b"))
		if string(b.Get([]byte("keep"))) != "1" || b.Get([]byte("1")) != nil {
			t.Fatal("rolled back changes are visible")
		}
		return nil
	})
	if after := fmt.Sprint(db.freelist.free, db.freelist.pending); after != before {
		t.Fatalf("rollback changed the free pages: %s -> %s", before, after)
	}
}

func TestWriteToAndCompact(t *testing.T) {
	db := openTest(t, &Options{NoSync: true})
	fill(t, db, 20000)
	dir := t.TempDir()

	// A consistent copy taken while a writer goes on.
	tx, err := db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.Update(func(w *Tx) error { return w.Bucket([]byte("b")).Delete([]byte(fmt.Sprintf("%08d", 5))) })
	f, _ := os.Create(filepath.Join(dir, "copy"))
	if _, err := tx.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	_ = tx.Rollback()
	cp, err := Open(filepath.Join(dir, "copy"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkAndClose(t, cp) })
	_ = cp.View(func(tx *Tx) error {
		if tx.Bucket([]byte("b")).Get([]byte(fmt.Sprintf("%08d", 5))) == nil {
			t.Fatal("copy does not hold the snapshot's state")
		}
		return nil
	})

	// Delete most keys, then compact: the copy is smaller and identical.
	_ = db.Update(func(tx *Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := 0; i < 20000; i += 3 {
			_ = b.Delete([]byte(fmt.Sprintf("%08d", i)))
		}
		return nil
	})
	dst := filepath.Join(dir, "compact")
	if err := db.Compact(dst); err != nil {
		t.Fatal(err)
	}
	if err := db.Compact(dst); err == nil {
		t.Fatal("compact over an existing file succeeded")
	}
	cdb, err := Open(dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { checkAndClose(t, cdb) })
	if cdb.Size() >= db.Size() {
		t.Fatalf("compacted %d bytes, original %d", cdb.Size(), db.Size())
	}
	assertSameContents(t, db, cdb)
}

func fill(t testing.TB, db *DB, n int) {
	t.Helper()
	err := db.Update(func(tx *Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("b"))
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := b.Put([]byte(fmt.Sprintf("%08d", i)), bytes.Repeat([]byte{byte(i)}, 50+i%200)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func dump(t testing.TB, db *DB) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	err := db.View(func(tx *Tx) error {
		return tx.ForEach(func(name []byte, b *Bucket) error {
			m := map[string]string{}
			out[string(name)] = m
			return b.ForEach(func(k, v []byte) error {
				m[string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func assertSameContents(t testing.TB, a, b *DB) {
	t.Helper()
	da, dbb := dump(t, a), dump(t, b)
	if len(da) != len(dbb) {
		t.Fatalf("bucket count %d vs %d", len(da), len(dbb))
	}
	for name, m := range da {
		o := dbb[name]
		if len(m) != len(o) {
			t.Fatalf("bucket %q: %d keys vs %d", name, len(m), len(o))
		}
		for k, v := range m {
			if o[k] != v {
				t.Fatalf("bucket %q key %q differs", name, k)
			}
		}
	}
}

// TestStatsAndSyncInsideUpdate: neither waits for the write transaction
// that calls them.
func TestStatsAndSyncInsideUpdate(t *testing.T) {
	db := openTest(t, nil)
	fill(t, db, 100)
	err := db.Update(func(tx *Tx) error {
		if s := db.Stats(); s.CommitN != 1 {
			return fmt.Errorf("stats inside update: %+v", s)
		}
		return db.Sync()
	})
	if err != nil {
		t.Fatal(err)
	}
}
