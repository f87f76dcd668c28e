package vfs

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Default is the operating system's file system.
var Default FS = osFS{}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &osFile{File: f}, nil
}

func (osFS) Remove(name string) error                    { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error        { return os.Rename(oldname, newname) }
func (osFS) MkdirAll(dir string, perm os.FileMode) error { return os.MkdirAll(dir, perm) }
func (osFS) Stat(name string) (os.FileInfo, error)       { return os.Stat(name) }

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(filepath.Clean(dir))
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	return errors.Join(serr, cerr)
}

func (osFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	sort.Strings(names)
	return names, nil
}

type osFile struct {
	*os.File
}

func (f *osFile) Sync() error { return unix.Fdatasync(int(f.File.Fd())) }

// WriteAtHeld is WriteAt with raw pwrite calls (HeldFile).
func (f *osFile) WriteAtHeld(p []byte, off int64) (int, error) {
	if unsafe.Sizeof(uintptr(0)) < 8 {
		// A 32-bit system call takes the offset in two words.
		return f.WriteAt(p, off)
	}
	fd := f.File.Fd()
	done := 0
	for done < len(p) {
		r, _, e := unix.RawSyscall6(unix.SYS_PWRITE64, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done), uintptr(off+int64(done)), 0, 0)
		switch {
		case e == unix.EINTR:
		case e != 0:
			return done, &os.PathError{Op: "write", Path: f.Name(), Err: e}
		case r == 0:
			return done, &os.PathError{Op: "write", Path: f.Name(), Err: io.ErrShortWrite}
		default:
			done += int(r)
		}
	}
	return done, nil
}

// SyncHeld is Sync with a raw fdatasync call (HeldFile).
func (f *osFile) SyncHeld() error {
	for {
		_, _, e := unix.RawSyscall(unix.SYS_FDATASYNC, f.File.Fd(), 0, 0)
		if e != unix.EINTR {
			if e != 0 {
				return &os.PathError{Op: "sync", Path: f.Name(), Err: e}
			}
			return nil
		}
	}
}

// StartWriteback starts the writeback of [off, off+n) (RangeSyncer).
func (f *osFile) StartWriteback(off, n int64) error {
	return unix.SyncFileRange(int(f.File.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}

// WaitWriteback writes [off, off+n) back and waits for it (RangeSyncer).
func (f *osFile) WaitWriteback(off, n int64) error {
	return unix.SyncFileRange(int(f.File.Fd()), off, n,
		unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}

func (f *osFile) Allocate(off, n int64) error {
	err := unix.Fallocate(int(f.File.Fd()), 0, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		// Some file systems (tmpfs on old kernels) cannot preallocate:
		// growing the size is the part callers rely on.
		size, serr := f.Size()
		if serr != nil {
			return serr
		}
		if off+n > size {
			return f.File.Truncate(off + n)
		}
		return nil
	}
	return err
}

func (f *osFile) Size() (int64, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// WritevAt writes with pwritev, IOV_MAX buffers at a time.
func (f *osFile) WritevAt(bufs [][]byte, off int64) (int, error) {
	const iovMax = 1024
	total := 0
	for len(bufs) > 0 {
		chunk := bufs
		if len(chunk) > iovMax {
			chunk = chunk[:iovMax]
		}
		want := 0
		for _, b := range chunk {
			want += len(b)
		}
		n, err := unix.Pwritev(int(f.File.Fd()), chunk, off+int64(total))
		total += n
		if err != nil {
			return total, err
		}
		if n < want {
			// A short vectored write: finish the rest one buffer at a time.
			rest := skipBytes(chunk, n)
			for _, b := range rest {
				m, err := f.File.WriteAt(b, off+int64(total))
				total += m
				if err != nil {
					return total, err
				}
			}
		}
		bufs = bufs[len(chunk):]
	}
	return total, nil
}

// skipBytes returns bufs without their first n bytes.
func skipBytes(bufs [][]byte, n int) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n >= len(b) {
			n -= len(b)
			continue
		}
		out = append(out, b[n:])
		n = 0
	}
	return out
}

// Mmap maps the first length bytes of f read-only and shared, so writes
// through the file are visible in the mapping. Pages past the end of the file
// must not be touched (the kernel raises SIGBUS).
func Mmap(f File, length int) ([]byte, error) {
	// Mapped without x/sys's unix.Mmap, whose Munmap unmaps only whole
	// mappings: Munmap below unmaps in pieces.
	p, err := unix.MmapPtr(int(f.Fd()), 0, nil, uintptr(length), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*byte)(p), length), nil
}

// Mlock locks a mapping's pages in memory (unlocked with the mapping).
func Mlock(b []byte) error { return unix.Mlock(b) }

// Munmap releases a mapping made by Mmap, munmapStep bytes at a time.
// Unmapping holds the process's address-space lock for writing, which
// every page fault (in any map) and every mmap waits for, for as long as
// it takes to drop the pages mapped: a 2.65 GB map read through took
// 200-570 ms in one call, and a page fault meanwhile waited up to 52-163
// ms; in 64 MiB steps no fault waited more than 4-10 ms.
func Munmap(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), munmapStep)
		if err := unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(n)); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

const munmapStep = 64 << 20

// Madvise hints how a mapping will be read.
func MadviseRandom(b []byte) error { return unix.Madvise(b, unix.MADV_RANDOM) }

// Flock takes an advisory lock on f without waiting: exclusive for a writer,
// shared for read-only users. It fails with unix.EWOULDBLOCK when another
// process holds a conflicting lock.
func Flock(f File, exclusive bool) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	return unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
}

// MadviseWillNeed asks the kernel to read a mapping's pages into the page
// cache without waiting for them (the pages are not mapped until touched).
func MadviseWillNeed(b []byte) error { return unix.Madvise(b, unix.MADV_WILLNEED) }
