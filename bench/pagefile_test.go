package bench

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cairn-kv/cairn/pagefile"
	bolt "go.etcd.io/bbolt"
)

// The page-file workloads: 16-byte keys, 256-byte values, fdatasync on.
const (
	keySize   = 16
	valueSize = 256
)

var sizeKeys = flag.Int("bench.sizekeys", 1_000_000, "keys inserted by the file-size benchmarks (-short: 100,000)")

// kvStore is what a workload needs of a page file.
type kvStore interface {
	// update runs one write transaction over the bucket.
	update(fn func(put func(k, v []byte) error, del func(k []byte) error) error) error
	// view runs one read transaction: get, and scan (n keys from a seek,
	// returning how many it saw).
	view(fn func(get func(k []byte) []byte, scan func(from []byte, n int) int) error) error
	// inUse is the bytes of pages below the high-water mark.
	inUse() int64
	// writes is the number of write calls commits have made (data and meta).
	writes() int64
	compact(dst string) (kvStore, error)
	close() error
}

var bucketName = []byte("key")

// cursor is what both page files' cursors offer.
type cursor interface {
	Seek(seek []byte) (key, value []byte)
	Next() (key, value []byte)
}

// scan reads up to n keys from the first one >= from and returns how many.
func scan(c cursor, from []byte, n int) int {
	i := 0
	for k, _ := c.Seek(from); k != nil && i < n; k, _ = c.Next() {
		i++
	}
	return i
}

// --- cairn -----------------------------------------------------------------

type cairnStore struct{ db *pagefile.DB }

func openCairn(path string, noSync bool) (kvStore, error) {
	db, err := pagefile.Open(path, &pagefile.Options{NoSync: noSync})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *pagefile.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	})
	return &cairnStore{db}, err
}

func (s *cairnStore) update(fn func(put func(k, v []byte) error, del func(k []byte) error) error) error {
	return s.db.Update(func(tx *pagefile.Tx) error {
		b := tx.Bucket(bucketName)
		return fn(b.Put, b.Delete)
	})
}

func (s *cairnStore) view(fn func(get func(k []byte) []byte, scan func(from []byte, n int) int) error) error {
	return s.db.View(func(tx *pagefile.Tx) error {
		b := tx.Bucket(bucketName)
		return fn(b.Get, func(from []byte, n int) int { return scan(b.Cursor(), from, n) })
	})
}

func (s *cairnStore) inUse() int64 { return s.db.Size() }

func (s *cairnStore) writes() int64 { return int64(s.db.Stats().TxStats.Write) }

func (s *cairnStore) compact(dst string) (kvStore, error) {
	if err := s.db.Compact(dst); err != nil {
		return nil, err
	}
	return openCairn(dst, true)
}

func (s *cairnStore) close() error { return s.db.Close() }

// --- bbolt, configured as etcd configures it ---------------------------------

type boltStore struct {
	db   *bolt.DB
	fill float64
}

// openBolt opens bbolt with etcd's backend options: MAP_POPULATE, no
// freelist sync, the hashmap freelist. fill is the bucket's FillPercent
// (etcd uses 0.9 for its in-order revision keys, bbolt's default 0.5
// otherwise).
func openBolt(path string, noSync bool, fill float64) (kvStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		MmapFlags:      syscall.MAP_POPULATE,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		NoSync:         noSync,
		NoGrowSync:     noSync,
	})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketName)
		return err
	})
	return &boltStore{db, fill}, err
}

func (s *boltStore) update(fn func(put func(k, v []byte) error, del func(k []byte) error) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		b.FillPercent = s.fill
		return fn(b.Put, b.Delete)
	})
}

func (s *boltStore) view(fn func(get func(k []byte) []byte, scan func(from []byte, n int) int) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketName)
		return fn(b.Get, func(from []byte, n int) int { return scan(b.Cursor(), from, n) })
	})
}

func (s *boltStore) inUse() int64 {
	var n int64
	_ = s.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

func (s *boltStore) writes() int64 {
	st := s.db.Stats()
	return st.TxStats.GetWrite()
}

func (s *boltStore) compact(dst string) (kvStore, error) {
	out, err := bolt.Open(dst, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		return nil, err
	}
	if err := bolt.Compact(out, s.db, 32<<20); err != nil {
		return nil, err
	}
	if err := out.Sync(); err != nil {
		return nil, err
	}
	return &boltStore{db: out, fill: s.fill}, nil
}

func (s *boltStore) close() error { return s.db.Close() }

// --- workloads ----------------------------------------------------------------

type impl struct {
	name string
	open func(path string, noSync bool, sequential bool) (kvStore, error)
}

var impls = []impl{
	{"cairn", func(p string, ns, _ bool) (kvStore, error) { return openCairn(p, ns) }},
	{"bbolt", func(p string, ns, seq bool) (kvStore, error) {
		fill := bolt.DefaultFillPercent
		if seq {
			fill = 0.9
		}
		return openBolt(p, ns, fill)
	}},
}

func seqKey(buf []byte, i uint64) []byte {
	binary.BigEndian.PutUint64(buf[8:], i)
	return buf
}

func randKey(buf []byte, rng *rand.Rand) []byte {
	rng.Read(buf)
	return buf
}

func mustOpen(b *testing.B, im impl, noSync, seq bool) kvStore {
	b.Helper()
	s, err := im.open(filepath.Join(b.TempDir(), "db"), noSync, seq)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.close() })
	return s
}

// insert puts n keys in transactions of per puts.
func insert(s kvStore, n, per int, seq bool, rng *rand.Rand, start uint64) error {
	key := make([]byte, keySize)
	val := make([]byte, valueSize)
	rng.Read(val)
	for done := 0; done < n; {
		batch := min(per, n-done)
		err := s.update(func(put func(k, v []byte) error, _ func([]byte) error) error {
			for i := 0; i < batch; i++ {
				k := key
				if seq {
					seqKey(key, start+uint64(done+i))
				} else {
					randKey(key, rng)
				}
				if err := put(k, val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		done += batch
	}
	return nil
}

// BenchmarkPagefile compares cairn's page file with bbolt. Insert
// workloads report ns per put and the write calls each commit made (data
// and meta: a deterministic measure of how scattered commits are, where the
// timings of fdatasync-bound work are noisy); reads ns per get; scans ns per
// 1,000-key scan; the size workloads report bytes in use.
func BenchmarkPagefile(b *testing.B) {
	for _, im := range impls {
		b.Run(im.name, func(b *testing.B) {
			for _, order := range []string{"seq", "rand"} {
				for _, per := range []int{1, 100, 1000} {
					b.Run(fmt.Sprintf("insert-%s-tx%d", order, per), func(b *testing.B) {
						seq := order == "seq"
						s := mustOpen(b, im, false, seq)
						rng := rand.New(rand.NewSource(1))
						b.SetBytes(keySize + valueSize)
						w0 := s.writes()
						b.ResetTimer()
						if err := insert(s, b.N, per, seq, rng, 0); err != nil {
							b.Fatal(err)
						}
						b.StopTimer()
						commits := (b.N + per - 1) / per
						b.ReportMetric(float64(s.writes()-w0)/float64(commits), "writes/commit")
					})
				}
			}
			b.Run("get-rand", func(b *testing.B) { benchReads(b, im, false) })
			b.Run("scan-1000", func(b *testing.B) { benchReads(b, im, true) })
			b.Run("size-1M-rand", func(b *testing.B) { benchSize(b, im, false) })
			b.Run("size-1M-seq", func(b *testing.B) { benchSize(b, im, true) })
		})
	}
}

const readKeys = 200_000

// benchReads loads readKeys random keys, then times random point reads or
// 1,000-key scans from random places, renewing the read transaction every
// 1,000 operations.
func benchReads(b *testing.B, im impl, scan bool) {
	s := mustOpen(b, im, true, false)
	rng := rand.New(rand.NewSource(2))
	keys := make([][]byte, readKeys)
	val := make([]byte, valueSize)
	for i := 0; i < readKeys; i += 10_000 {
		err := s.update(func(put func(k, v []byte) error, _ func([]byte) error) error {
			for j := i; j < i+10_000; j++ {
				keys[j] = randKey(make([]byte, keySize), rng)
				if err := put(keys[j], val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for done := 0; done < b.N; {
		batch := min(1000, b.N-done)
		err := s.view(func(get func([]byte) []byte, scanFn func([]byte, int) int) error {
			for i := 0; i < batch; i++ {
				k := keys[rng.Intn(readKeys)]
				if scan {
					if scanFn(k, 1000) == 0 {
						return fmt.Errorf("empty scan")
					}
				} else if get(k) == nil {
					return fmt.Errorf("key %x missing", k)
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		done += batch
	}
}

// benchSize inserts sizeKeys keys (1,000 per transaction, fdatasync off:
// only the layout is measured), reports the bytes in use, deletes every
// other key, compacts into a new file and reports its bytes in use.
func benchSize(b *testing.B, im impl, seq bool) {
	n := *sizeKeys
	if testing.Short() && n > 100_000 {
		n = 100_000
	}
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		s, err := im.open(filepath.Join(dir, "db"), true, seq)
		if err != nil {
			b.Fatal(err)
		}
		rng := rand.New(rand.NewSource(3))
		keys := make([][]byte, 0, n)
		key := make([]byte, keySize)
		val := make([]byte, valueSize)
		for done := 0; done < n; done += 1000 {
			err := s.update(func(put func(k, v []byte) error, _ func([]byte) error) error {
				for j := done; j < done+1000 && j < n; j++ {
					if seq {
						seqKey(key, uint64(j))
					} else {
						randKey(key, rng)
					}
					keys = append(keys, append([]byte(nil), key...))
					if err := put(key, val); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		inserted := s.inUse()
		for done := 0; done < n; done += 2000 {
			err := s.update(func(_ func(k, v []byte) error, del func([]byte) error) error {
				for j := done; j < done+2000 && j < n; j += 2 {
					if err := del(keys[j]); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		c, err := s.compact(filepath.Join(dir, "compacted"))
		if err != nil {
			b.Fatal(err)
		}
		compacted := c.inUse()
		_ = c.close()
		_ = s.close()
		_ = os.RemoveAll(dir)
		b.ReportMetric(float64(inserted), "bytes-inserted")
		b.ReportMetric(float64(compacted), "bytes-compacted")
	}
}
