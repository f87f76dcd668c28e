package pagefile

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand"
	"sort"
	"sync"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
)

var modelSteps = flag.Int("pagefile.steps", 400, "write transactions in TestModel")

// state is the model of a database: bucket -> key -> value.
type state map[string]map[string]string

func (s state) clone() state {
	out := make(state, len(s))
	for b, m := range s {
		c := make(map[string]string, len(m))
		for k, v := range m {
			c[k] = v
		}
		out[b] = c
	}
	return out
}

// TestModel runs random write transactions (puts, deletes, bucket creates
// and deletes, reads and cursor walks checked as they go) that commit, roll
// back or are followed by a reopen, against a model keeping one snapshot per
// committed transaction id. Reader goroutines meanwhile check that every read
// transaction sees exactly the snapshot of its id.
func TestModel(t *testing.T) {
	seed := testseed.Seed(t)
	rng := rand.New(rand.NewSource(seed))
	pageSize := []int{1024, 4096}[rng.Intn(2)]
	opts := &Options{NoSync: true, PageSize: pageSize, InitialMmapSize: 1 << 16}
	t.Logf("page size %d, %d steps", pageSize, *modelSteps)
	db := openTest(t, opts)

	var (
		mu        sync.Mutex
		snapshots = map[int]state{}
		handle    sync.RWMutex // readers hold it shared; reopen exclusively
		stop      = make(chan struct{})
		wg        sync.WaitGroup
		failures  = make(chan string, 4)
	)
	cur := state{}
	_ = db.View(func(tx *Tx) error { snapshots[tx.ID()] = cur.clone(); return nil })

	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				handle.RLock()
				err := db.View(func(tx *Tx) error {
					mu.Lock()
					want, ok := snapshots[tx.ID()]
					mu.Unlock()
					if !ok {
						return fmt.Errorf("reader saw tx %d, which never committed", tx.ID())
					}
					got := dumpTx(tx)
					if diff := diffStates(want, got); diff != "" {
						return fmt.Errorf("reader %d at tx %d: %s", r, tx.ID(), diff)
					}
					return nil
				})
				handle.RUnlock()
				if err != nil {
					select {
					case failures <- err.Error():
					default:
					}
					return
				}
			}
		}(r)
	}

	buckets := []string{"a", "b", "c"}
	key := func() string { return fmt.Sprintf("k%03d", rng.Intn(300)) }
	value := func() string {
		switch rng.Intn(20) {
		case 0:
			return string(bytes.Repeat([]byte{byte('A' + rng.Intn(26))}, 2000+rng.Intn(9000)))
		case 1:
			return ""
		}
		return fmt.Sprintf("v%d-%s", rng.Intn(1000), bytes.Repeat([]byte{'x'}, rng.Intn(60)))
	}

	for step := 0; step < *modelSteps; step++ {
		select {
		case f := <-failures:
			t.Fatal(f)
		default:
		}
		tx, err := db.Begin(true)
		if err != nil {
			t.Fatal(err)
		}
		next := cur.clone()
		nops := 1 + rng.Intn(60)
		for i := 0; i < nops; i++ {
			bn := buckets[rng.Intn(len(buckets))]
			switch op := rng.Intn(100); {
			case op < 3:
				err := tx.DeleteBucket([]byte(bn))
				if _, ok := next[bn]; ok != (err == nil) {
					t.Fatalf("step %d: delete bucket %s: %v (exists %v)", step, bn, err, ok)
				}
				delete(next, bn)
			case op < 10:
				if _, err := tx.CreateBucketIfNotExists([]byte(bn)); err != nil {
					t.Fatal(err)
				}
				if next[bn] == nil {
					next[bn] = map[string]string{}
				}
			case op < 60:
				b := tx.Bucket([]byte(bn))
				if b == nil {
					continue
				}
				k, v := key(), value()
				put := b.Put
				if rng.Intn(2) == 0 {
					put = b.PutOwned // fresh buffers, never changed
				}
				if err := put([]byte(k), []byte(v)); err != nil {
					t.Fatal(err)
				}
				next[bn][k] = v
			case op < 80:
				b := tx.Bucket([]byte(bn))
				if b == nil {
					continue
				}
				k := key()
				if err := b.Delete([]byte(k)); err != nil {
					t.Fatal(err)
				}
				delete(next[bn], k)
			case op < 90:
				b := tx.Bucket([]byte(bn))
				if b == nil {
					continue
				}
				k := key()
				got := b.Get([]byte(k))
				want, ok := next[bn][k]
				if (got != nil) != ok || string(got) != want {
					t.Fatalf("step %d: get %s/%s in writer = %q, want %q (present %v)", step, bn, k, got, want, ok)
				}
			default:
				b := tx.Bucket([]byte(bn))
				if b == nil {
					continue
				}
				checkCursorWalk(t, rng, b, next[bn])
			}
		}
		switch r := rng.Intn(10); {
		case r < 2:
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
		default:
			mu.Lock()
			snapshots[tx.ID()] = next
			mu.Unlock()
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			cur = next
			if r == 9 {
				handle.Lock()
				db = reopen(t, db, opts)
				handle.Unlock()
				_ = db.View(func(tx *Tx) error {
					if diff := diffStates(cur, dumpTx(tx)); diff != "" {
						t.Fatalf("after reopen: %s", diff)
					}
					return nil
				})
			}
		}
	}
	close(stop)
	wg.Wait()
	select {
	case f := <-failures:
		t.Fatal(f)
	default:
	}
	if err := db.Check(); err != nil {
		t.Fatal(err)
	}
}

// checkCursorWalk seeks to a random key and walks a few steps either way,
// comparing with the sorted model.
func checkCursorWalk(t *testing.T, rng *rand.Rand, b *Bucket, m map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	seek := fmt.Sprintf("k%03d", rng.Intn(310))
	i := sort.SearchStrings(keys, seek)
	c := b.Cursor()
	k, v := c.Seek([]byte(seek))
	for steps := 0; steps < 10; steps++ {
		if i < 0 || i >= len(keys) {
			if k != nil {
				t.Fatalf("cursor at %q, model is off the end", k)
			}
			return
		}
		if string(k) != keys[i] || string(v) != m[keys[i]] {
			t.Fatalf("cursor at %q, model at %q", k, keys[i])
		}
		if rng.Intn(2) == 0 {
			k, v = c.Next()
			i++
		} else {
			k, v = c.Prev()
			i--
		}
	}
}

func dumpTx(tx *Tx) state {
	out := state{}
	_ = tx.ForEach(func(name []byte, b *Bucket) error {
		m := map[string]string{}
		out[string(name)] = m
		return b.ForEach(func(k, v []byte) error {
			m[string(k)] = string(v)
			return nil
		})
	})
	return out
}

// diffStates describes the first difference, or returns "".
func diffStates(want, got state) string {
	for b, m := range want {
		g, ok := got[b]
		if !ok {
			return fmt.Sprintf("bucket %q missing", b)
		}
		for k, v := range m {
			if gv, ok := g[k]; !ok || gv != v {
				return fmt.Sprintf("bucket %q key %q: got %.20q (present %v), want %.20q", b, k, gv, ok, v)
			}
		}
		for k := range g {
			if _, ok := m[k]; !ok {
				return fmt.Sprintf("bucket %q has extra key %q", b, k)
			}
		}
	}
	for b := range got {
		if _, ok := want[b]; !ok {
			return fmt.Sprintf("extra bucket %q", b)
		}
	}
	return ""
}
