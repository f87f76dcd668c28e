package vfs

import (
	"errors"
	"os"
	"sync"
	"syscall"
)

// ErrInjected is the default error an ErrorFS returns (an EIO).
var ErrInjected = &os.PathError{Op: "injected", Path: "", Err: syscall.EIO}

// ErrNoSpace is an injected ENOSPC.
var ErrNoSpace = &os.PathError{Op: "injected", Path: "", Err: syscall.ENOSPC}

// FaultOp is a kind of operation an ErrorFS can fail.
type FaultOp uint8

const (
	FaultWrite FaultOp = iota + 1
	FaultSync
	FaultTruncate // Truncate and Allocate
	FaultRead
	FaultRename
	FaultSyncDir
	FaultOpen
)

// ErrorFS wraps an FS and fails chosen operations. Each Inject arms one rule:
// the n-th operation of a kind from now on (n = 1 is the next one) fails with
// err, and, if sticky, every one after it too.
type ErrorFS struct {
	FS FS

	mu    sync.Mutex
	rules []*faultRule
	count map[FaultOp]int
}

type faultRule struct {
	op     FaultOp
	at     int // fire when count reaches this
	err    error
	sticky bool
}

// NewErrorFS wraps fs.
func NewErrorFS(fs FS) *ErrorFS { return &ErrorFS{FS: fs, count: map[FaultOp]int{}} }

// Inject fails the n-th next operation of kind op with err.
func (e *ErrorFS) Inject(op FaultOp, n int, err error, sticky bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rules = append(e.rules, &faultRule{op: op, at: e.count[op] + n, err: err, sticky: sticky})
}

// Reset removes every rule.
func (e *ErrorFS) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rules = nil
}

// Count returns how many operations of a kind have been attempted.
func (e *ErrorFS) Count(op FaultOp) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.count[op]
}

func (e *ErrorFS) check(op FaultOp) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.count[op]++
	n := e.count[op]
	for _, r := range e.rules {
		if r.op == op && (n == r.at || (r.sticky && n > r.at)) {
			return r.err
		}
	}
	return nil
}

func (e *ErrorFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if err := e.check(FaultOpen); err != nil {
		return nil, err
	}
	f, err := e.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &errFile{File: f, e: e}, nil
}

func (e *ErrorFS) Remove(name string) error { return e.FS.Remove(name) }
func (e *ErrorFS) Rename(oldname, newname string) error {
	if err := e.check(FaultRename); err != nil {
		return err
	}
	return e.FS.Rename(oldname, newname)
}
func (e *ErrorFS) MkdirAll(dir string, perm os.FileMode) error { return e.FS.MkdirAll(dir, perm) }
func (e *ErrorFS) SyncDir(dir string) error {
	if err := e.check(FaultSyncDir); err != nil {
		return err
	}
	return e.FS.SyncDir(dir)
}
func (e *ErrorFS) ReadDir(dir string) ([]string, error)  { return e.FS.ReadDir(dir) }
func (e *ErrorFS) Stat(name string) (os.FileInfo, error) { return e.FS.Stat(name) }

type errFile struct {
	File
	e *ErrorFS
}

func (f *errFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.e.check(FaultRead); err != nil {
		return 0, err
	}
	return f.File.ReadAt(p, off)
}

// WriteAt fails before writing anything, or, for a short write, after
// writing half of p.
func (f *errFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.e.check(FaultWrite); err != nil {
		if errors.Is(err, errShortWrite) {
			n, werr := f.File.WriteAt(p[:len(p)/2], off)
			if werr != nil {
				return n, werr
			}
			return n, ErrInjected
		}
		return 0, err
	}
	return f.File.WriteAt(p, off)
}

func (f *errFile) WritevAt(bufs [][]byte, off int64) (int, error) {
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

func (f *errFile) Sync() error {
	if err := f.e.check(FaultSync); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *errFile) Truncate(size int64) error {
	if err := f.e.check(FaultTruncate); err != nil {
		return err
	}
	return f.File.Truncate(size)
}

func (f *errFile) Allocate(off, n int64) error {
	if err := f.e.check(FaultTruncate); err != nil {
		return err
	}
	return f.File.Allocate(off, n)
}

// errShortWrite, injected for FaultWrite, makes the write land half its
// bytes and then fail.
var errShortWrite = errors.New("vfs: injected short write")

// ErrShortWrite is the error to inject for a short write.
var ErrShortWrite = errShortWrite
