// Package vfs is the file-system seam under every component that persists
// data. Production code uses Default (the operating system); tests swap in a
// Recorder, which logs every mutation so that crash images can be rebuilt at
// any point, or an ErrorFS, which injects I/O errors.
//
// Sync semantics are explicit, because crash safety depends on them:
//
//   - File.Sync makes the file's data and size durable (fdatasync). Nothing
//     written to a file is durable before a Sync of that file returns.
//   - Creating, renaming or removing a file changes its directory; the change
//     is durable only after SyncDir of that directory returns.
//
// A failed Sync must never be retried: the kernel may have dropped the dirty
// pages, so a later successful Sync proves nothing. Callers treat it as fatal.
package vfs

import (
	"errors"
	"io"
	"os"
)

// File is an open file. Implementations must be safe for concurrent ReadAt
// calls; writes come from one goroutine at a time.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's data and size durable (fdatasync).
	Sync() error
	// Truncate sets the file's size, zero-filling when it grows.
	Truncate(size int64) error
	// Allocate reserves disk space for [off, off+n), growing the file's size
	// to at least off+n, so that writes there do not fail for lack of space.
	Allocate(off, n int64) error
	// Size returns the file's current size.
	Size() (int64, error)
	// Fd returns the operating system's descriptor, for mmap and flock.
	Fd() uintptr
}

// FS opens files and changes directories.
type FS interface {
	// OpenFile opens name with os.OpenFile's flags.
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	Remove(name string) error
	Rename(oldname, newname string) error
	MkdirAll(dir string, perm os.FileMode) error
	// SyncDir makes the directory's entries durable (creates, renames, removes).
	SyncDir(dir string) error
	// ReadDir lists the names in dir, sorted.
	ReadDir(dir string) ([]string, error)
	Stat(name string) (os.FileInfo, error)
}

// VectorWriter is implemented by files that can write several buffers at
// consecutive offsets with one system call (pwritev).
type VectorWriter interface {
	WritevAt(bufs [][]byte, off int64) (int, error)
}

// WritevAt writes bufs back to back starting at off, with one call when the
// file supports it.
func WritevAt(f File, bufs [][]byte, off int64) (int, error) {
	if vw, ok := f.(VectorWriter); ok {
		return vw.WritevAt(bufs, off)
	}
	total := 0
	for _, b := range bufs {
		n, err := f.WriteAt(b, off+int64(total))
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// HeldFile is implemented by files that can also write and sync with raw
// system calls, which keep the calling goroutine's P instead of handing it
// back to the Go scheduler for the call's duration. That spares the
// scheduler's bookkeeping and, after the process was idle, the wake-up of
// its monitor thread (which then polls every 20 µs until the process is
// idle again). The price: while the call runs, its P runs nothing else and
// a stop-the-world (a GC phase) waits for the call to end. The WAL uses it
// only for a lone request's small batch, and only while syncs are quick.
type HeldFile interface {
	WriteAtHeld(p []byte, off int64) (int, error)
	SyncHeld() error
}

// RangeSyncer is implemented by files that can start the writeback of a
// range and wait for it (sync_file_range), without Sync's metadata and
// disk cache flush: it keeps the dirty data of a long sequential write
// bounded without stopping the writer at each step. It makes nothing
// durable; that still takes Sync.
type RangeSyncer interface {
	// StartWriteback starts writing [off, off+n) to the disk and returns.
	StartWriteback(off, n int64) error
	// WaitWriteback writes [off, off+n) to the disk and waits until it is
	// written.
	WaitWriteback(off, n int64) error
}

// Writeback keeps a long sequential write's dirty data within two steps:
// each time the write passes a step, the writeback of the step just
// written starts and the one before it is waited for, so that the disk
// takes the file as it comes while the writer goes on (a Sync of the whole
// at the end would write it all at once, and every other sync on the disk
// would wait behind it). A file that is not a RangeSyncer is synced at each
// step instead. The write is durable only once the file is synced.
type Writeback struct {
	f    File
	step int64
	next int64 // the start of the step not yet started
}

// NewWriteback returns a Writeback of f from offset 0.
func NewWriteback(f File, step int64) *Writeback { return &Writeback{f: f, step: step} }

// Wrote tells it that the file is written up to end.
func (w *Writeback) Wrote(end int64) error {
	rs, ranged := w.f.(RangeSyncer)
	for end-w.next >= w.step {
		if !ranged {
			w.next = end
			return w.f.Sync()
		}
		if err := rs.StartWriteback(w.next, w.step); err != nil {
			return err
		}
		if w.next >= w.step {
			if err := rs.WaitWriteback(w.next-w.step, w.step); err != nil {
				return err
			}
		}
		w.next += w.step
	}
	return nil
}

// ReadFile returns the whole contents of the file at path.
func ReadFile(fs FS, path string) ([]byte, error) {
	f, err := fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return nil, err
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return data, nil
}
