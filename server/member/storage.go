package member

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
)

// Defragment rewrites the page file without free pages while the member
// goes on serving reads and writes (engine.Store.Defragment: the copying
// runs here, its short steps on the applier, and only the switch to the
// copy holds writes). One runs at a time; a second waits for the first. A
// failure after the switch leaves the store without its file: the member
// fails and stops.
func (m *Member) Defragment() error {
	m.defragMu.Lock()
	defer m.defragMu.Unlock()
	if err := failpoint.Hit("member/defragment"); err != nil {
		return err
	}
	m.log.Info("defragmenting the page file")
	start := time.Now()
	m.metrics.defragInflight.Set(1)
	defer m.metrics.defragInflight.Set(0)
	st, err := m.eng.Defragment(m.OnApplier, m.openPageFile)
	if errors.Is(err, engine.ErrStoreUnusable) {
		m.Fail(fmt.Errorf("defragmenting: %w", err))
	}
	if err != nil {
		return err
	}
	m.metrics.defragDuration.Observe(time.Since(start).Seconds())
	m.log.Info("defragmented the page file", "size", m.eng.BackendSize(), "in-use", m.eng.BackendInUse(),
		"took", time.Since(start).String(), "rounds", st.Rounds, "carried", st.Carried, "carried-held", st.Final, "writes-held", st.Held.String())
	return nil
}

// SnapshotFile is a compacted copy of the page file, made for a Snapshot
// (or a follower): read it with ReadAt, then Close, which removes it.
type SnapshotFile struct {
	vfs.File
	fs   vfs.FS
	path string
	size int64
}

// Size is the copy's length in bytes.
func (f *SnapshotFile) Size() int64 { return f.size }

// Close closes and removes the copy.
func (f *SnapshotFile) Close() error {
	err := f.File.Close()
	if rerr := f.fs.Remove(f.path); err == nil {
		err = rerr
	}
	return err
}

// Snapshot writes a compacted copy of the page file as of its latest
// commit (made on the applier, so it holds everything applied) beside it,
// from one read transaction: writes go on meanwhile.
func (m *Member) Snapshot() (*SnapshotFile, error) {
	start := time.Now()
	defer func() { m.metrics.snapshotDuration.Observe(time.Since(start).Seconds()) }()
	var tx *pagefile.Tx
	if err := m.OnApplier(func() (err error) {
		tx, err = m.eng.SnapshotTx()
		return err
	}); err != nil {
		return nil, err
	}
	path := filepath.Join(m.snapDir, snapshotCopyPrefix+strconv.FormatInt(time.Now().UnixNano(), 36)+snapshotCopySuffix)
	err := tx.CompactTo(path, nil)
	tx.Rollback()
	if err != nil {
		_ = m.fs.Remove(path)
		return nil, fmt.Errorf("copying the page file: %w", err)
	}
	f, err := m.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		_ = m.fs.Remove(path)
		return nil, err
	}
	size, err := f.Size()
	if err != nil {
		f.Close()
		_ = m.fs.Remove(path)
		return nil, err
	}
	return &SnapshotFile{File: f, fs: m.fs, path: path, size: size}, nil
}

// A snapshot copy is named snapshot-<base-36 nanoseconds>.tmp in the snap
// directory; one left by a crash is removed at the next start.
const (
	snapshotCopyPrefix = "snapshot-"
	snapshotCopySuffix = ".tmp"
)

// removeSnapshotCopies removes the snapshot copies a crash left in dir.
func removeSnapshotCopies(fs vfs.FS, dir string) error {
	names, err := fs.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if strings.HasPrefix(n, snapshotCopyPrefix) && strings.HasSuffix(n, snapshotCopySuffix) {
			if err := fs.Remove(filepath.Join(dir, n)); err != nil {
				return err
			}
		}
	}
	return nil
}

// bootstrapDefrag defragments the page file at start if that frees at
// least --experimental-bootstrap-defrag-threshold-megabytes (before any
// goroutine of the member runs).
func (m *Member) bootstrapDefrag() error {
	threshold := int64(m.cfg.BootstrapDefragThresholdMegabytes) << 20
	if threshold == 0 {
		return nil
	}
	size, inUse := m.eng.BackendSize(), m.eng.BackendInUse()
	if free := size - inUse; free < threshold {
		m.log.Info("skipping defragmentation", "current-db-size-bytes", size, "current-db-size-in-use-bytes", inUse,
			"experimental-bootstrap-defrag-threshold-bytes", threshold)
		return nil
	}
	direct := func(f func() error) error { return f() } // no applier runs yet
	if _, err := m.eng.Defragment(direct, m.openPageFile); err != nil {
		return fmt.Errorf("defragmenting at start: %w", err)
	}
	m.log.Info("defragmented the page file at start", "size-before", size, "size", m.eng.BackendSize())
	return nil
}
