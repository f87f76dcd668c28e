package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/cairn-kv/cairn/internal/testseed"
)

func write(t *testing.T, f File, off int64, s string) {
	t.Helper()
	if _, err := f.WriteAt([]byte(s), off); err != nil {
		t.Fatal(err)
	}
}

func TestRecorderDropUnsynced(t *testing.T) {
	root := t.TempDir()
	r := NewRecorder(root)
	f, err := r.OpenFile(filepath.Join(root, "a"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, 0, "hello")
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	afterSync := r.Len()
	write(t, f, 5, " world")
	img := t.TempDir()

	// Before the SyncDir the file's name is not durable: it is gone.
	if err := r.CrashImage(img, afterSync, CrashDropUnsynced, rand.New(rand.NewSource(1))); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(img, "a")); !os.IsNotExist(err) {
		t.Fatalf("unsynced create survived: %v", err)
	}

	if err := r.SyncDir(root); err != nil {
		t.Fatal(err)
	}
	if err := r.CrashImage(img, r.Len(), CrashDropUnsynced, rand.New(rand.NewSource(1))); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(img, "a"))
	if err != nil || string(got) != "hello" {
		t.Fatalf("image = %q, %v; want the synced %q", got, err, "hello")
	}
}

func TestRecorderModesStayWithinWhatWasWritten(t *testing.T) {
	seed := testseed.Seed(t)
	root := t.TempDir()
	r := NewRecorder(root)
	name := filepath.Join(root, "f")
	f, err := r.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	_ = r.SyncDir(root)
	old := bytes.Repeat([]byte{'o'}, 4*SectorSize)
	if _, err := f.WriteAt(old, 0); err != nil {
		t.Fatal(err)
	}
	_ = f.Sync()
	neu := bytes.Repeat([]byte{'n'}, 4*SectorSize)
	if _, err := f.WriteAt(neu, 0); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(seed))
	img := t.TempDir()
	for i := 0; i < 200; i++ {
		mode := AllCrashModes[i%len(AllCrashModes)]
		if err := r.CrashImage(img, r.Len(), mode, rng); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(img, "f"))
		if len(got) != len(old) {
			t.Fatalf("%v: size %d, want %d", mode, len(got), len(old))
		}
		for s := 0; s < len(got); s += SectorSize {
			sec := got[s : s+SectorSize]
			allOld := bytes.Equal(sec, old[:SectorSize])
			allNew := bytes.Equal(sec, neu[:SectorSize])
			switch mode {
			case CrashDropUnsynced:
				if !allOld {
					t.Fatalf("drop-unsynced kept unsynced data in sector %d", s/SectorSize)
				}
			case CrashKeepPrefix, CrashKeepSectors:
				if !allOld && !allNew {
					t.Fatalf("%v: sector %d is neither old nor new", mode, s/SectorSize)
				}
			}
		}
	}
}

func TestErrorFS(t *testing.T) {
	e := NewErrorFS(Default)
	f, err := e.OpenFile(filepath.Join(t.TempDir(), "x"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	e.Inject(FaultSync, 2, ErrInjected, false)
	if err := f.Sync(); err != nil {
		t.Fatalf("first sync: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, ErrInjected) {
		t.Fatalf("second sync: %v, want injected", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("third sync (rule not sticky): %v", err)
	}
	e.Inject(FaultWrite, 1, ErrShortWrite, false)
	n, err := f.WriteAt([]byte("abcd"), 0)
	if n != 2 || err == nil {
		t.Fatalf("short write: n=%d err=%v", n, err)
	}
	e.Inject(FaultTruncate, 1, ErrNoSpace, true)
	if err := f.Allocate(0, 1<<20); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("allocate: %v", err)
	}
	if err := f.Truncate(10); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("sticky truncate: %v", err)
	}
	_ = f.Close()
}

func TestWritevAt(t *testing.T) {
	f, err := Default.OpenFile(filepath.Join(t.TempDir(), "v"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bufs := [][]byte{[]byte("ab"), []byte("cde"), []byte("f")}
	if n, err := WritevAt(f, bufs, 3); err != nil || n != 6 {
		t.Fatalf("writev: %d %v", n, err)
	}
	got := make([]byte, 9)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if string(got) != "\x00\x00\x00abcdef" {
		t.Fatalf("got %q", got)
	}
}

// TestHeld: the operating system's files write and sync with held calls
// as with WriteAt and Sync: the bytes land where asked, a read-only file
// refuses the write with a *os.PathError, and a closed one the sync.
func TestHeld(t *testing.T) {
	name := filepath.Join(t.TempDir(), "h")
	f, err := Default.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := f.(HeldFile)
	if !ok {
		t.Fatalf("%T has no held calls", f)
	}
	big := bytes.Repeat([]byte("0123456789"), 100_000)
	if n, err := h.WriteAtHeld(big, 5); err != nil || n != len(big) {
		t.Fatalf("held write: %d %v", n, err)
	}
	if n, err := h.WriteAtHeld([]byte("xy"), 1); err != nil || n != 2 {
		t.Fatalf("held write: %d %v", n, err)
	}
	if n, err := h.WriteAtHeld(nil, 0); err != nil || n != 0 {
		t.Fatalf("empty held write: %d %v", n, err)
	}
	if err := h.SyncHeld(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte("\x00xy\x00\x00"), big...); !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, want %d as written", len(got), len(want))
	}
	var pe *os.PathError
	if err := h.SyncHeld(); !errors.As(err, &pe) {
		t.Fatalf("held sync of a closed file: %v", err)
	}
	ro, err := Default.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.(HeldFile).WriteAtHeld([]byte("z"), 0); !errors.As(err, &pe) || pe.Op != "write" {
		t.Fatalf("held write to a read-only file: %v", err)
	}
}

// TestRecorderFollowsRenames: writes through a handle land in the file
// whatever its name has become, as on a real file system.
func TestRecorderFollowsRenames(t *testing.T) {
	root := t.TempDir()
	r := NewRecorder(root)
	f, err := r.OpenFile(filepath.Join(root, "a.tmp"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	write(t, f, 0, "head")
	_ = f.Sync()
	if err := r.Rename(filepath.Join(root, "a.tmp"), filepath.Join(root, "a")); err != nil {
		t.Fatal(err)
	}
	_ = r.SyncDir(root)
	write(t, f, 4, "+tail")
	_ = f.Sync()
	img := t.TempDir()
	if err := r.CrashImage(img, r.Len(), CrashDropUnsynced, rand.New(rand.NewSource(1))); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(img, "a"))
	if err != nil || string(got) != "head+tail" {
		t.Fatalf("renamed file holds %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(img, "a.tmp")); !os.IsNotExist(err) {
		t.Fatalf("old name survived the synced rename: %v", err)
	}
}

// TestMunmapInSteps: a map of more than two steps is unmapped whole: after
// Munmap no page of it is mapped any more (mincore: ENOMEM).
func TestMunmapInSteps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, err := Default.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	require.NoError(t, err)
	defer f.Close()
	size := 2*munmapStep + 3*4096
	require.NoError(t, f.Truncate(int64(size))) // sparse: reads see zeros
	b, err := Mmap(f, size)
	require.NoError(t, err)
	pieces := [][]byte{b[:4096], b[munmapStep : munmapStep+4096], b[size-4096:]}
	vec := make([]byte, 1)
	for _, p := range pieces {
		require.Zero(t, p[0])
		require.NoError(t, mincore(p, vec))
	}
	require.NoError(t, Munmap(b))
	for i, p := range pieces {
		require.ErrorIs(t, mincore(p, vec), unix.ENOMEM, "piece %d still mapped", i)
	}
}

// mincore reports whether b's pages are mapped (ENOMEM when one is not).
func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if e != 0 {
		return e
	}
	return nil
}

// rangeFile records the writeback calls Writeback makes.
type rangeFile struct {
	File
	calls []string
}

func (f *rangeFile) StartWriteback(off, n int64) error {
	f.calls = append(f.calls, fmt.Sprintf("start %d+%d", off, n))
	return nil
}

func (f *rangeFile) WaitWriteback(off, n int64) error {
	f.calls = append(f.calls, fmt.Sprintf("wait %d+%d", off, n))
	return nil
}

func (f *rangeFile) Sync() error {
	f.calls = append(f.calls, "sync")
	return nil
}

// syncFile has no range syncs.
type syncFile struct{ rf *rangeFile }

func (s syncFile) Sync() error                            { return s.rf.Sync() }
func (s syncFile) ReadAt(p []byte, o int64) (int, error)  { return 0, nil }
func (s syncFile) WriteAt(p []byte, o int64) (int, error) { return len(p), nil }
func (s syncFile) Close() error                           { return nil }
func (s syncFile) Truncate(int64) error                   { return nil }
func (s syncFile) Allocate(int64, int64) error            { return nil }
func (s syncFile) Size() (int64, error)                   { return 0, nil }
func (s syncFile) Fd() uintptr                            { return 0 }

// TestWriteback: each step passed starts its own writeback and waits for
// the step before; a write that passes several steps at once does each;
// a file without range syncs is synced once per call that passes a step.
func TestWriteback(t *testing.T) {
	f := &rangeFile{}
	w := NewWriteback(f, 10)
	for _, end := range []int64{4, 9, 10, 15, 35, 39} {
		require.NoError(t, w.Wrote(end))
	}
	require.Equal(t, []string{"start 0+10", "start 10+10", "wait 0+10", "start 20+10", "wait 10+10"}, f.calls)
	require.NoError(t, w.Wrote(40))
	require.Equal(t, "wait 20+10", f.calls[len(f.calls)-1])

	plain := &rangeFile{}
	w = NewWriteback(syncFile{plain}, 10)
	for _, end := range []int64{4, 12, 19, 45, 50} {
		require.NoError(t, w.Wrote(end))
	}
	require.Equal(t, []string{"sync", "sync"}, plain.calls)
}
