package engine

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
)

// writer is a store's writer for the tests: a goroutine that puts random
// keys and commits, and between its writes runs what Defragment hands it.
type writer struct {
	s     *Store
	rng   *rand.Rand
	tasks chan func()
	stop  chan struct{}
	done  chan struct{}
	model map[string]string // what the writer wrote; read once it stopped
	puts  atomic.Int64
	err   error
}

func startWriter(s *Store, rng *rand.Rand) *writer {
	w := &writer{s: s, rng: rng, tasks: make(chan func()), stop: make(chan struct{}), done: make(chan struct{}), model: map[string]string{}}
	go w.run()
	return w
}

func (w *writer) run() {
	defer close(w.done)
	for n := 0; ; n++ {
		select {
		case <-w.stop:
			return
		case f := <-w.tasks:
			f()
			continue
		default:
		}
		if w.err != nil {
			continue // the store is broken: only tasks
		}
		w.err = w.put(n)
	}
}

// put writes one key (sometimes deletes one) and commits every 20 writes.
func (w *writer) put(n int) error {
	tx := w.s.Write()
	k := fmt.Sprintf("k%04d", w.rng.Intn(2000))
	if w.rng.Intn(10) == 0 {
		if _, err := tx.DeleteRange([]byte(k), nil); err != nil {
			return err
		}
		delete(w.model, k)
	} else {
		v := fmt.Sprintf("v%d-%0*d", n, w.rng.Intn(300), 0)
		if _, err := tx.Put([]byte(k), []byte(v), 0); err != nil {
			return err
		}
		w.model[k] = v
	}
	tx.End()
	w.puts.Add(1)
	if n%20 == 0 {
		return w.s.Commit()
	}
	return nil
}

// onWriter runs f on the writer.
func (w *writer) onWriter(f func() error) error {
	errc := make(chan error, 1)
	select {
	case w.tasks <- func() { errc <- f() }:
	case <-w.done:
		return errors.New("the writer stopped")
	}
	return <-errc
}

func (w *writer) halt() error {
	close(w.stop)
	<-w.done
	return w.err
}

// storeContents reads every key at the current revision.
func storeContents(t *testing.T, s *Store) map[string]string {
	t.Helper()
	res, err := s.Range([]byte{0}, []byte{0}, RangeOptions{})
	require.NoError(t, err)
	got := map[string]string{}
	for _, kv := range res.KVs {
		got[string(kv.Key)] = string(kv.Value)
	}
	return got
}

// TestDefragmentWhileWriting defragments a store whose file is mostly
// free pages while a writer goes on putting, deleting and compacting and
// readers go on reading. The writer is never held but for the steps on
// it; afterwards the file is smaller, holds every write (also after a
// reopen), and readers never saw an error.
func TestDefragmentWhileWriting(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	path := filepath.Join(t.TempDir(), "db")
	db, s := openStore(t, path)
	w := startWriter(s, rng)
	for w.puts.Load() < 20000 {
		require.NoError(t, w.onWriter(func() error { return nil }))
	}
	require.NoError(t, w.onWriter(func() error {
		if err := s.Compact(s.Rev()); err != nil {
			return err
		}
		for done := false; !done; {
			var err error
			if done, err = s.CompactStep(1000); err != nil {
				return err
			}
		}
		return s.Commit()
	}))
	before := s.BackendSize()

	var readErr atomic.Value
	var readers sync.WaitGroup
	stopReads := make(chan struct{})
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stopReads:
					return
				default:
				}
				if _, err := s.Range([]byte("k0"), []byte("k1"), RangeOptions{Limit: 50}); err != nil {
					readErr.Store(err)
				}
			}
		}()
	}
	startPuts := w.puts.Load()
	st, err := s.Defragment(w.onWriter, func(p string) (*pagefile.DB, error) {
		return pagefile.Open(p, &pagefile.Options{NoSync: true, InitialMmapSize: 1 << 22})
	})
	require.NoError(t, err)
	t.Logf("%+v", st)
	during := w.puts.Load() - startPuts
	for n := w.puts.Load(); w.puts.Load() < n+2000; {
		require.NoError(t, w.onWriter(func() error { return nil }))
	}
	close(stopReads)
	readers.Wait()
	require.NoError(t, w.halt())
	require.Nil(t, readErr.Load())
	t.Logf("file %d bytes before, %d after; %d writes during the defragmentation", before, s.BackendSize(), during)
	require.Less(t, s.BackendSize(), before)
	require.Positive(t, during, "the writer went on")
	_, statErr := os.Stat(path + DefragSuffix)
	require.True(t, errors.Is(statErr, os.ErrNotExist), "the copy was renamed")

	require.Equal(t, w.model, storeContents(t, s))
	require.NoError(t, s.Check())
	require.NoError(t, s.Close())
	require.NoError(t, s.Backend().Check())
	require.NoError(t, s.Backend().Close())
	require.NoError(t, db.Close()) // the old file: closed already, or now

	db, s = openStore(t, path)
	defer db.Close()
	require.Equal(t, w.model, storeContents(t, s))
	require.NoError(t, s.Check())
	require.NoError(t, s.Close())
}

// TestDefragmentFailureKeepsTheStore: a failure before the switch (a
// failpoint), or a snapshot installed meanwhile, leaves the store on its
// own file, writable, with the copy removed.
func TestDefragmentFailureKeepsTheStore(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	path := filepath.Join(t.TempDir(), "db")
	db, s := openStore(t, path)
	defer db.Close()
	w := startWriter(s, rng)
	for w.puts.Load() < 2000 {
		require.NoError(t, w.onWriter(func() error { return nil }))
	}
	open := func(p string) (*pagefile.DB, error) { return pagefile.Open(p, &pagefile.Options{NoSync: true}) }
	injected := errors.New("injected")
	failpoint.Enable("engine/defragBeforeSwitch", func() error { return injected })
	_, err := s.Defragment(w.onWriter, open)
	failpoint.Disable("engine/defragBeforeSwitch")
	require.ErrorIs(t, err, injected)
	_, statErr := os.Stat(path + DefragSuffix)
	require.True(t, errors.Is(statErr, os.ErrNotExist), "the copy was removed")
	require.Same(t, db, s.Backend())
	for n := w.puts.Load(); w.puts.Load() < n+500; {
		require.NoError(t, w.onWriter(func() error { return nil }))
	}

	// A snapshot installed while the copy is made supersedes it.
	other := filepath.Join(t.TempDir(), "snap")
	odb, os2 := openStore(t, other)
	tx := os2.Write()
	_, err = tx.Put([]byte("from-the-snapshot"), []byte("v"), 0)
	require.NoError(t, err)
	tx.End()
	require.NoError(t, os2.Close())
	require.NoError(t, odb.Close())
	// (Installing closes the file, which waits for its readers: the copy's
	// read transaction has ended by the second step.)
	calls := 0
	onWriter := func(f func() error) error {
		if calls++; calls == 2 {
			if err := w.onWriter(func() error { return s.Install(other, open) }); err != nil {
				return err
			}
		}
		return w.onWriter(f)
	}
	_, err = s.Defragment(onWriter, open)
	require.ErrorIs(t, err, ErrDefragSuperseded)
	require.NoError(t, w.halt())
	_, statErr = os.Stat(path + DefragSuffix)
	require.True(t, errors.Is(statErr, os.ErrNotExist), "the copy was removed")
	require.Equal(t, "v", storeContents(t, s)["from-the-snapshot"], "the snapshot's state, and the writes after it")
	require.NoError(t, s.Check())
	require.NoError(t, s.Close())
	require.NoError(t, s.Backend().Close())
}

// TestDefragmentCrash records every write, sync, rename and directory
// sync of a defragmentation with writes committed between its steps, and
// rebuilds the data directory as a power loss at each point could leave
// it. The file at the store's path must open and hold the state of the
// last commit that returned (or of the one under way): a crash anywhere
// loses no acknowledged write.
func TestDefragmentCrash(t *testing.T) {
	seed := testseed.Seed(t)
	rng := rand.New(rand.NewSource(seed))
	root := t.TempDir()
	rec := vfs.NewRecorder(root)
	path := filepath.Join(root, "db")
	open := func(p string) (*pagefile.DB, error) {
		return pagefile.Open(p, &pagefile.Options{FS: rec, PageSize: 1024, InitialMmapSize: 1 << 20})
	}
	db, err := open(path)
	require.NoError(t, err)
	s, err := Open(db)
	require.NoError(t, err)

	// states[i] is the store after the i-th commit; ends[i] the recorded
	// operations once it returned.
	model := map[string]string{}
	var states []map[string]string
	var ends []int
	commit := func() {
		require.NoError(t, s.Commit())
		states = append(states, clone(model))
		ends = append(ends, rec.Len())
	}
	commit()
	n := 0
	write := func(count int) {
		for range count {
			n++
			tx := s.Write()
			k := fmt.Sprintf("k%03d", rng.Intn(400))
			v := fmt.Sprintf("v%d-%0*d", n, rng.Intn(200), 0)
			_, err := tx.Put([]byte(k), []byte(v), 0)
			require.NoError(t, err)
			tx.End()
			model[k] = v
		}
		commit()
	}
	for range 30 {
		write(40)
	}
	// Each step on the writer comes after more writes, committed.
	// (A step's own commits follow write's: they change nothing.)
	onWriter := func(f func() error) error {
		write(1 + rng.Intn(20))
		return f()
	}
	_, err = s.Defragment(onWriter, open)
	require.NoError(t, err)
	write(10)
	t.Logf("%d operations recorded, %d commits", rec.Len(), len(states))

	img := t.TempDir()
	rp := rec.Replayer(img)
	for _, k := range vfs.CrashPoints(rec.Len(), 300, rng) {
		require.NoError(t, rp.Advance(k))
		dir := filepath.Join(img, fmt.Sprint(k))
		require.NoError(t, os.MkdirAll(dir, 0o755))
		mode := vfs.AllCrashModes[rng.Intn(len(vfs.AllCrashModes))]
		require.NoError(t, rp.Image(dir, mode, rng), "crash point %d", k)
		// The last commit that returned before k, and the one after it.
		i := 0
		for i+1 < len(ends) && ends[i+1] <= k {
			i++
		}
		got, err := crashedContents(filepath.Join(dir, "db"))
		require.NoError(t, err, "crash point %d (%v), seed %d", k, mode, seed)
		ok := equalMaps(got, states[i]) || (i+1 < len(states) && equalMaps(got, states[i+1]))
		require.True(t, ok, "crash point %d (%v): the store holds neither commit %d nor the next; seed %d", k, mode, i, seed)
		require.NoError(t, os.RemoveAll(dir))
	}
	require.NoError(t, s.Close())
	require.NoError(t, s.Backend().Close())
}

func clone(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// crashedContents opens a crash image's page file as a store and reads it.
func crashedContents(path string) (map[string]string, error) {
	db, err := pagefile.Open(path, &pagefile.Options{NoSync: true})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return nil, err
	}
	s, err := Open(db)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	res, err := s.Range([]byte{0}, []byte{0}, RangeOptions{})
	if err != nil {
		return nil, err
	}
	got := map[string]string{}
	for _, kv := range res.KVs {
		got[string(kv.Key)] = string(kv.Value)
	}
	return got, nil
}
