package bench

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/wal"
	etcdwal "go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

const walEntrySize = 256

// BenchmarkWAL compares cairn's WAL with etcd's WAL package: 256-byte
// entries, fdatasync on, each op one entry (ns/op is per entry).
//
//   - batch-N: one goroutine appends N entries per call (etcd: Save with N
//     entries, which syncs once).
//   - appenders-N (cairn): N goroutines each append one entry per call;
//     group commit gathers what arrives during a sync into the next batch.
//
// Both report records/s and records per fdatasync.
func BenchmarkWAL(b *testing.B) {
	data := make([]byte, walEntrySize)
	for i := range data {
		data[i] = byte(i)
	}
	b.Run("cairn", func(b *testing.B) {
		for _, batch := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("batch-%d", batch), func(b *testing.B) {
				w, _, err := wal.Open(b.TempDir(), wal.Snapshot{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer w.Close()
				recs := make([]wal.Record, 0, batch)
				start := time.Now()
				b.ResetTimer()
				for i := 0; i < b.N; {
					recs = recs[:0]
					for j := 0; j < batch && i < b.N; j++ {
						i++
						recs = append(recs, wal.EntryRecord(wal.Entry{Term: 1, Index: uint64(i), Data: data}))
					}
					if err := w.Append(recs...); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				reportWAL(b, time.Since(start), w.Stats().Syncs)
			})
		}
		for _, g := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("appenders-%d", g), func(b *testing.B) {
				w, _, err := wal.Open(b.TempDir(), wal.Snapshot{}, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer w.Close()
				var next atomic.Int64
				var wg sync.WaitGroup
				errs := make(chan error, g)
				start := time.Now()
				b.ResetTimer()
				for k := 0; k < g; k++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							if err := w.Append(wal.EntryRecord(wal.Entry{Term: 1, Index: uint64(i), Data: data})); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				reportWAL(b, time.Since(start), w.Stats().Syncs)
			})
		}
	})
	b.Run("etcd", func(b *testing.B) {
		for _, batch := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("batch-%d", batch), func(b *testing.B) {
				w, err := etcdwal.Create(zap.NewNop(), b.TempDir(), []byte("metadata"))
				if err != nil {
					b.Fatal(err)
				}
				defer w.Close()
				ents := make([]*raftpb.Entry, 0, batch)
				syncs := int64(0)
				start := time.Now()
				b.ResetTimer()
				for i := 0; i < b.N; {
					ents = ents[:0]
					for j := 0; j < batch && i < b.N; j++ {
						i++
						term, index := uint64(1), uint64(i)
						ents = append(ents, &raftpb.Entry{Term: &term, Index: &index, Data: data})
					}
					// With entries, Save always syncs.
					if err := w.Save(&raftpb.HardState{}, ents); err != nil {
						b.Fatal(err)
					}
					syncs++
				}
				b.StopTimer()
				reportWAL(b, time.Since(start), syncs)
			})
		}
	})
}

func reportWAL(b *testing.B, elapsed time.Duration, syncs int64) {
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
	if syncs > 0 {
		b.ReportMetric(float64(b.N)/float64(syncs), "records/sync")
	}
}
