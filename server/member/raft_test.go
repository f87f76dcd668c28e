package member

import (
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/vfs"
)

// syncGate is a file system whose WAL syncs can be held: while closed,
// each Sync of WAL records (a file written with anything but zeros since
// its last sync: not a spare segment being zero-filled) reports on held
// and waits until release is closed.
type syncGate struct {
	vfs.FS
	mu      sync.Mutex
	closed  bool
	held    chan struct{}
	release chan struct{}
}

type gatedFile struct {
	vfs.File
	g       *syncGate
	records atomic.Bool // written with records since the last sync
}

func (f *gatedFile) WriteAt(p []byte, off int64) (int, error) {
	if slices.ContainsFunc(p, func(b byte) bool { return b != 0 }) {
		f.records.Store(true)
	}
	return f.File.WriteAt(p, off)
}

func (g *syncGate) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := g.FS.OpenFile(name, flag, perm)
	if err != nil || !strings.Contains(name, "/wal/") {
		return f, err
	}
	return &gatedFile{File: f, g: g}, nil
}

func (f *gatedFile) Sync() error {
	f.g.mu.Lock()
	closed := f.g.closed
	f.g.mu.Unlock()
	if closed && f.records.Swap(false) {
		f.g.held <- struct{}{}
		<-f.g.release
	}
	return f.File.Sync()
}

// TestRaftSteppedDuringFsync: while a Ready's WAL write waits on its
// fsync, the raft lock is free, and another proposal reaches raft and the
// WAL right after; both apply once the fsync returns.
func TestRaftSteppedDuringFsync(t *testing.T) {
	g := &syncGate{FS: vfs.Default, held: make(chan struct{}), release: make(chan struct{})}
	m, _ := openTest(t, t.TempDir(), func(c *Config) { c.FS = g })
	released := false
	open := func() {
		if !released {
			released = true
			g.mu.Lock()
			g.closed = false
			g.mu.Unlock()
			close(g.release)
		}
	}
	t.Cleanup(open) // before the member stops, should the test fail
	ctx := ctxT(t)
	_, err := put(ctx, m, "warm", "v")
	require.NoError(t, err)

	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	errs := make(chan error, 2)
	go func() { _, err := put(ctx, m, "a", "1"); errs <- err }()
	<-g.held // a's entry is being synced
	require.True(t, m.raftMu.TryLock(), "raftMu is held across the WAL's fsync")
	last := m.r.Status().LastIndex
	m.raftMu.Unlock()
	go func() { _, err := put(ctx, m, "b", "2"); errs <- err }()
	require.True(t, eventually(func() bool {
		m.raftMu.Lock()
		defer m.raftMu.Unlock()
		return m.r.Status().LastIndex == last+1
	}), "b's proposal did not reach raft while a's fsync waited")

	open()
	for range 2 {
		require.NoError(t, <-errs)
	}
	for k, v := range map[string]string{"a": "1", "b": "2"} {
		got, err := get(ctx, m, k)
		require.NoError(t, err)
		require.Equal(t, v, string(got))
	}
}
