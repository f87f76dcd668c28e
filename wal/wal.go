package wal

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/vfs"
)

// DefaultSegmentSize is the size segments are preallocated to.
const DefaultSegmentSize = 64 << 20

// Errors.
var (
	ErrClosed           = errors.New("wal: closed")
	ErrSnapshotNotFound = errors.New("wal: snapshot marker not found")
	// ErrInstalledAfterStart: the WAL holds a snapshot installed after the
	// marker replay was asked to start from.
	ErrInstalledAfterStart = errors.New("wal: replay starts before an installed snapshot")
	ErrReleased            = errors.New("wal: entries after the snapshot were released")
)

// FatalError wraps the write or sync error that stopped the WAL.
type FatalError struct{ Err error }

func (e *FatalError) Error() string { return "wal: write failed, the WAL is stopped: " + e.Err.Error() }
func (e *FatalError) Unwrap() error { return e.Err }

// Options configures Open. A nil *Options means the defaults.
type Options struct {
	// SegmentSize is the size segments are preallocated to (default 64 MiB).
	SegmentSize int64
	// FS is the file system (default vfs.Default).
	FS vfs.FS
	// PrepareInline makes the next segment on the appending goroutine at a
	// cut instead of ahead of time in the background: slower, but the order
	// of file operations is fixed, so crash tests replay exactly.
	PrepareInline bool
	// OnSync, if set, is told how long each append's fdatasync took (for
	// etcd's wal_fsync_duration metric). It runs under the WAL's lock.
	OnSync func(time.Duration)
	// OnWrite, if set, is told each append's bytes and how long their
	// write took (etcd's wal_write_bytes_total and wal_write_duration
	// metrics). It runs under the WAL's lock.
	OnWrite func(n int, d time.Duration)
	// NoSync skips the fdatasync of appends (etcd's --unsafe-no-fsync): a
	// crash may lose what Append returned for. New segments are still
	// synced.
	NoSync bool
}

// State is what replay rebuilds: the raft state to restart from.
type State struct {
	HardState HardState
	Metadata  []byte
	// Snapshot is the marker replay started from (zero: the beginning).
	Snapshot Snapshot
	// Entries after the snapshot, in index order, as the log holds them
	// once later appends have replaced what they truncated.
	Entries []Entry
}

// WAL is an open write-ahead log. Its methods may be called from many
// goroutines.
type WAL struct {
	dir  string
	fs   vfs.FS
	opts Options

	mu       sync.Mutex
	queue    []*appendReq
	flushing bool
	idle     *sync.Cond // signalled when flushing ends
	err      error      // fatal: every later call returns it
	closed   bool
	segments []segmentName // in sequence order; the last is being written

	// The writer's state, touched only by the goroutine flushing (or under
	// mu when none is).
	file      vfs.File
	off       int64 // where the next batch goes
	size      int64 // the segment's preallocated size
	chain     uint32
	lastIndex uint64    // the last entry index written
	hs        HardState // latest, rewritten at the start of each segment
	md        []byte
	snap      *Snapshot
	buf       []byte
	stats     Stats
	spare     chan spare    // the next segment, being prepared; nil if none
	lastSync  time.Duration // how long the last batch's fdatasync took
}

// heldSyncLimit: a lone entry's batch is written and synced with held
// system calls (vfs.HeldFile) only while the last sync took less. A slow
// disk then costs a stop-the-world at most one slow sync: the batches
// after it release their P again until a sync is quick.
const heldSyncLimit = 10 * time.Millisecond

// spare is a segment file made ahead of time: zero-filled and synced, so
// that appends into it are plain overwrites. (Writing into fallocated space
// makes every fdatasync also record which blocks became written; on the
// machines measured that made small appends 1.6-3x slower.)
type spare struct {
	f    vfs.File
	path string
	size int64
	err  error
}

// Stats counts the WAL's work.
type Stats struct {
	Records int64 // records written
	Batches int64 // batches written (one write + one fdatasync each)
	Syncs   int64 // fdatasync calls
	// HeldSyncs counts the batches written and synced with held system
	// calls: a lone entry's, while syncs are quick (see heldSyncLimit).
	HeldSyncs int64
	Cuts      int64 // segments started
}

type appendReq struct {
	recs []Record
	done chan error
}

// segmentName is a parsed segment file name.
type segmentName struct {
	seq, first uint64
}

func (s segmentName) String() string { return fmt.Sprintf("%016x-%016x.wal", s.seq, s.first) }

func parseSegmentName(name string) (segmentName, bool) {
	var s segmentName
	if !strings.HasSuffix(name, ".wal") || len(name) != 16+1+16+4 {
		return s, false
	}
	if _, err := fmt.Sscanf(name, "%016x-%016x.wal", &s.seq, &s.first); err != nil {
		return s, false
	}
	return s, s.String() == name
}

// Open opens the WAL in dir, creating it if there is none, repairs a torn
// tail, and replays it: it returns the state after the snapshot marker from
// (a zero Snapshot replays from the beginning). A WAL with damage other
// than a torn tail is refused with a *CorruptError.
func Open(dir string, from Snapshot, opts *Options) (*WAL, *State, error) {
	w := &WAL{dir: dir}
	if opts != nil {
		w.opts = *opts
	}
	if w.opts.FS == nil {
		w.opts.FS = vfs.Default
	}
	if w.opts.SegmentSize <= 0 {
		w.opts.SegmentSize = DefaultSegmentSize
	}
	w.fs = w.opts.FS
	w.idle = sync.NewCond(&w.mu)
	if err := w.fs.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, err
	}
	segs, err := listSegments(w.fs, dir, true)
	if err != nil {
		return nil, nil, err
	}
	if len(segs) == 0 {
		w.lastIndex = from.Index
		if err := w.cut(segmentName{seq: 0, first: from.Index + 1}); err != nil {
			return nil, nil, err
		}
		return w, &State{Snapshot: from}, nil
	}
	// A segment's name is a lower bound on the entries it holds: entries
	// below it went to earlier segments. If those were released, the log
	// after from is not all here.
	if segs[0].first > from.Index+1 {
		return nil, nil, fmt.Errorf("%w: the oldest segment starts at index %d, replay from %d needs %d", ErrReleased, segs[0].first, from.Index, from.Index+1)
	}
	// Replay starts at the segment holding the entry after from: the
	// segments before it hold entries up to from only, and each segment
	// begins with the metadata, hard state and snapshot marker current when
	// it was cut. Should from's marker be in none of the segments read, the
	// whole log is read instead.
	start := 0
	for i, s := range segs {
		if s.first <= from.Index+1 {
			start = i
		}
	}
	st, err := w.replay(segs, start, from, true)
	if errors.Is(err, ErrSnapshotNotFound) && start > 0 {
		st, err = w.replay(segs, 0, from, true)
	}
	if err != nil {
		return nil, nil, err
	}
	w.prepareSpare()
	return w, st, nil
}

// Verify checks a whole WAL without opening it for writing: every batch,
// record and checksum, and the chain across segments. A torn tail is not an
// error (Open would cut it off); anything else is a *CorruptError.
func Verify(dir string, fs vfs.FS) error {
	_, err := ReadAll(dir, fs)
	return err
}

// ReadAll reads a whole WAL as Verify checks it, and returns what it
// holds: the entries from its oldest segment on (as later appends left
// them), the last hard state and metadata. Its Snapshot is zero.
func ReadAll(dir string, fs vfs.FS) (*State, error) {
	if fs == nil {
		fs = vfs.Default
	}
	segs, err := listSegments(fs, dir, false)
	if err != nil {
		return nil, err
	}
	w := &WAL{dir: dir, fs: fs}
	return w.replay(segs, 0, Snapshot{}, false)
}

// listSegments returns the segments in dir in sequence order, checking that
// the sequence has no gap. Segments left half-made by a crash are removed
// if repair (by Open), else passed over (a reader writes nothing).
func listSegments(fs vfs.FS, dir string, repair bool) ([]segmentName, error) {
	names, err := fs.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []segmentName
	for _, n := range names {
		if strings.HasSuffix(n, ".wal.tmp") {
			// A segment being made when the process stopped: never renamed
			// into place, so nothing in it was acknowledged.
			if repair {
				if err := fs.Remove(filepath.Join(dir, n)); err != nil {
					return nil, err
				}
			}
			continue
		}
		if s, ok := parseSegmentName(n); ok {
			segs = append(segs, s)
		}
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].seq < segs[j].seq })
	for i := 1; i < len(segs); i++ {
		if segs[i].seq != segs[i-1].seq+1 {
			return nil, &CorruptError{File: segs[i].String(), Msg: fmt.Sprintf("segment %d is missing", segs[i-1].seq+1)}
		}
	}
	return segs, nil
}

// replay reads the segments from segs[start] on, in order, and rebuilds
// the state after from. With repair, it leaves the WAL ready to append (a
// torn tail cut off); without (Verify), it only reads, and the log may
// start at any index.
func (w *WAL) replay(segs []segmentName, start int, from Snapshot, repair bool) (*State, error) {
	st := &State{Snapshot: from}
	// What the segments before start would have set: a segment is named for
	// the index after the last entry before it, and begins with the
	// metadata, hard state and marker then current.
	w.lastIndex, w.hs, w.md, w.snap, w.file = 0, HardState{}, nil, nil, nil
	if start > 0 {
		w.lastIndex = segs[start].first - 1
	}
	foundSnap := from.Index == 0 && from.Term == 0
	var gapErr error // reported after the marker check: a missing marker says more
	var chain uint32
	visit := func(r Record) error {
		switch r.Type {
		case TypeEntry:
			e, err := r.Entry()
			if err != nil {
				return err
			}
			w.lastIndex = e.Index
			if e.Index <= from.Index {
				return nil
			}
			if n := len(st.Entries); n > 0 && e.Index <= st.Entries[n-1].Index {
				// A later append at this index truncates the log there.
				if e.Index <= st.Entries[0].Index {
					st.Entries = st.Entries[:0]
				} else {
					st.Entries = st.Entries[:e.Index-st.Entries[0].Index]
				}
			}
			want := from.Index + 1
			if n := len(st.Entries); n > 0 {
				want = st.Entries[n-1].Index + 1
			} else if !repair && gapErr == nil {
				want = e.Index // Verify: older segments may have been released
			}
			if e.Index != want {
				if gapErr == nil {
					gapErr = fmt.Errorf("%w: entry %d follows %d: the log has a gap", ErrCorrupt, e.Index, want-1)
				}
				st.Entries = st.Entries[:0]
			}
			st.Entries = append(st.Entries, e)
		case TypeHardState:
			hs, err := r.HardState()
			if err != nil {
				return err
			}
			st.HardState, w.hs = hs, hs
		case TypeSnapshot, TypeInstalled:
			s, err := r.Snapshot()
			if err != nil {
				return err
			}
			if s.Installed {
				if repair && s.Index > from.Index {
					// Replay must start at the newest installed snapshot:
					// the log before it is gone.
					return fmt.Errorf("%w: a snapshot installed at term %d index %d follows the replay's start at index %d", ErrInstalledAfterStart, s.Term, s.Index, from.Index)
				}
				// The log written before it is replaced.
				st.Entries, gapErr = st.Entries[:0], nil
				w.lastIndex = s.Index
			}
			s.Installed = false // carried into new segments as a plain marker
			w.snap = &s
			if s.Index == from.Index && s.Term == from.Term {
				foundSnap = true
				st.Snapshot = s
			}
		case TypeMetadata:
			md, _ := r.Metadata()
			st.Metadata, w.md = md, md
		}
		return nil
	}
	for i, s := range segs[start:] {
		last := start+i == len(segs)-1
		path := filepath.Join(w.dir, s.String())
		data, err := vfs.ReadFile(w.fs, path)
		if err != nil {
			return nil, err
		}
		h, why := decodeSegmentHeader(data)
		if why != "" {
			return nil, &CorruptError{File: s.String(), Msg: why}
		}
		if h.seq != s.seq || h.first != s.first {
			return nil, &CorruptError{File: s.String(), Msg: "segment header does not match its name"}
		}
		if i > 0 && h.prevCRC != chain {
			return nil, &CorruptError{File: s.String(), Msg: "segment does not continue the previous segment's checksum chain"}
		}
		chain = h.prevCRC
		end, how, err := scanSegment(data, s.String(), &chain, last, visit)
		if err != nil {
			return nil, err
		}
		if !last || !repair {
			continue
		}
		f, err := w.fs.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		size := max(int64(len(data)), w.opts.SegmentSize)
		if how == endTorn {
			// Cut the torn batch off: truncate, preallocate zeros again,
			// sync, so the next batch starts on zeros.
			if err := f.Truncate(end); err == nil {
				err = f.Allocate(end, size-end)
				if err == nil {
					err = f.Sync()
				}
				if err != nil {
					_ = f.Close()
					return nil, err
				}
			} else {
				_ = f.Close()
				return nil, err
			}
		}
		w.file, w.off, w.size, w.chain = f, end, size, chain
	}
	if !foundSnap || gapErr != nil {
		if w.file != nil {
			_ = w.file.Close()
		}
		if !foundSnap {
			return nil, fmt.Errorf("%w: term %d index %d", ErrSnapshotNotFound, from.Term, from.Index)
		}
		return nil, gapErr
	}
	w.segments = segs
	return st, nil
}

// Append writes records and returns once they are durable. Records from
// concurrent calls that arrive while a write is in flight go out together
// in the next batch, in the order their calls queued; one call's records
// stay together and in order.
func (w *WAL) Append(recs ...Record) error {
	if len(recs) == 0 {
		return nil
	}
	for i := range recs {
		if recs[i].size() > maxRecordSize {
			return fmt.Errorf("wal: record of %d bytes is larger than %d", recs[i].size(), maxRecordSize)
		}
	}
	req := &appendReq{recs: recs, done: make(chan error, 1)}
	w.mu.Lock()
	switch {
	case w.err != nil:
		err := w.err
		w.mu.Unlock()
		return err
	case w.closed:
		w.mu.Unlock()
		return ErrClosed
	}
	w.queue = append(w.queue, req)
	if w.flushing {
		w.mu.Unlock()
		return <-req.done
	}
	// No write in flight: this caller writes, for itself and everyone who
	// queues meanwhile, until the queue is empty.
	w.flushing = true
	for len(w.queue) > 0 {
		batch := w.queue
		w.queue = nil
		w.mu.Unlock()
		err := w.writeBatch(batch)
		w.mu.Lock()
		if err != nil {
			w.err = &FatalError{Err: err}
			for _, r := range batch {
				r.done <- w.err
			}
			for _, r := range w.queue {
				r.done <- w.err
			}
			w.queue = nil
			break
		}
		for _, r := range batch {
			r.done <- nil
		}
	}
	w.flushing = false
	w.idle.Broadcast()
	w.mu.Unlock()
	return <-req.done
}

// writeBatch writes the queued requests as one batch (starting a new
// segment first if it would not fit) and syncs it.
func (w *WAL) writeBatch(reqs []*appendReq) error {
	var recs []Record
	for _, r := range reqs {
		recs = append(recs, r.recs...)
	}
	size := batchHeaderSize
	for i := range recs {
		size += recordSize(&recs[i])
	}
	if w.off+int64(size) > w.size {
		// Each segment begins with what replay needs that older segments
		// held: metadata, hard state, the latest snapshot marker.
		var carry []Record
		if w.md != nil {
			carry = append(carry, MetadataRecord(w.md))
		}
		if !w.hs.IsEmpty() {
			carry = append(carry, HardStateRecord(w.hs))
		}
		if w.snap != nil {
			carry = append(carry, SnapshotRecord(*w.snap))
		}
		if err := w.cut(segmentName{seq: w.segments[len(w.segments)-1].seq + 1, first: w.lastIndex + 1}); err != nil {
			return err
		}
		recs = append(carry, recs...)
	}
	entries := 0
	for i := range recs {
		r := &recs[i]
		switch r.Type {
		case TypeEntry:
			entries++
			w.lastIndex = le.Uint64(r.payload[8:])
		case TypeHardState:
			w.hs, _ = r.HardState()
		case TypeSnapshot, TypeInstalled:
			s, _ := r.Snapshot()
			if s.Installed {
				w.lastIndex = s.Index
			}
			// A new segment carries it as a plain marker: the log before
			// it is in older segments, and the entries after it in the
			// new one must not be dropped.
			s.Installed = false
			w.snap = &s
		case TypeMetadata:
			w.md = r.payload
		}
	}
	w.buf, w.chain = encodeBatch(w.buf[:0], recs, w.chain)
	if end := w.off + int64(len(w.buf)); end > w.size {
		// A batch larger than a segment gets a segment of its own size.
		if err := w.file.Allocate(w.size, end-w.size); err != nil {
			return err
		}
		w.size = end
	}
	if err := failpoint.Hit("wal/beforeWrite"); err != nil {
		return err
	}
	// A lone request's batch (one entry) on an idle member is written and
	// synced holding the goroutine's P: waking the Go runtime's monitor
	// thread for it cost that request a third of its CPU time (see
	// vfs.HeldFile for the price, and heldSyncLimit for its bound).
	held, _ := w.file.(vfs.HeldFile)
	if entries != 1 || w.lastSync >= heldSyncLimit {
		held = nil
	}
	var err error
	var wstart time.Time
	if w.opts.OnWrite != nil {
		wstart = time.Now()
	}
	if held != nil {
		_, err = held.WriteAtHeld(w.buf, w.off)
	} else {
		_, err = w.file.WriteAt(w.buf, w.off)
	}
	if err != nil {
		return err
	}
	if w.opts.OnWrite != nil {
		w.opts.OnWrite(len(w.buf), time.Since(wstart))
	}
	w.off += int64(len(w.buf))
	if err := failpoint.Hit("wal/beforeSync"); err != nil {
		return err
	}
	start := time.Now()
	switch {
	case w.opts.NoSync:
	case held != nil:
		err = held.SyncHeld()
	default:
		err = w.file.Sync()
	}
	if err != nil {
		return err
	}
	w.lastSync = time.Since(start)
	if w.opts.OnSync != nil {
		w.opts.OnSync(w.lastSync)
	}
	if held != nil {
		w.stats.HeldSyncs++
	}
	w.stats.Records += int64(len(recs))
	w.stats.Batches++
	w.stats.Syncs++
	return nil
}

// cut starts a new segment: the spare made ahead of time (zero-filled,
// synced) gets its header, is synced, renamed into place, and the directory
// synced. The previous segment is already durable: every batch was synced.
func (w *WAL) cut(name segmentName) error {
	final := filepath.Join(w.dir, name.String())
	var sp spare
	if w.spare != nil {
		sp = <-w.spare
		w.spare = nil
	}
	if sp.f == nil || sp.err != nil {
		sp = w.makeSpare()
		if sp.err != nil {
			return sp.err
		}
	}
	f := sp.f
	fail := func(err error) error {
		_ = f.Close()
		_ = w.fs.Remove(sp.path)
		return err
	}
	if _, err := f.WriteAt(encodeSegmentHeader(segmentHeader{seq: name.seq, first: name.first, prevCRC: w.chain}), 0); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := failpoint.Hit("wal/beforeRename"); err != nil {
		return fail(err)
	}
	if err := w.fs.Rename(sp.path, final); err != nil {
		return fail(err)
	}
	if err := w.fs.SyncDir(w.dir); err != nil {
		_ = f.Close()
		return err
	}
	if w.file != nil {
		if err := w.file.Close(); err != nil {
			_ = f.Close()
			return err
		}
	}
	w.file, w.off, w.size = f, segmentHeaderSize, sp.size
	w.mu.Lock()
	w.segments = append(w.segments, name)
	w.mu.Unlock()
	w.stats.Cuts++
	w.prepareSpare()
	return nil
}

// prepareSpare starts making the next segment.
func (w *WAL) prepareSpare() {
	ch := make(chan spare, 1)
	w.spare = ch
	if w.opts.PrepareInline {
		ch <- w.makeSpare()
		return
	}
	go func() { ch <- w.makeSpare() }()
}

// makeSpare writes a zero-filled segment file under a temporary name and
// syncs it. Open removes such files left by a crash.
func (w *WAL) makeSpare() spare {
	sp := spare{path: filepath.Join(w.dir, "next.wal.tmp"), size: w.opts.SegmentSize}
	f, err := w.fs.OpenFile(sp.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		sp.err = err
		return sp
	}
	zeros := make([]byte, min(sp.size, 1<<20))
	for off := int64(0); off < sp.size && err == nil; off += int64(len(zeros)) {
		_, err = f.WriteAt(zeros[:min(int64(len(zeros)), sp.size-off)], off)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		_ = f.Close()
		_ = w.fs.Remove(sp.path)
		sp.err = err
		return sp
	}
	sp.f = f
	return sp
}

// dropSpare waits for a spare being made and removes it.
func (w *WAL) dropSpare() {
	if w.spare == nil {
		return
	}
	sp := <-w.spare
	w.spare = nil
	if sp.f != nil {
		_ = sp.f.Close()
		_ = w.fs.Remove(sp.path)
	}
}

// ReleaseTo removes whole segments that hold only entries below index (the
// segment holding index is kept, and so is the one being written), once a
// snapshot covers them, oldest first, as long as more than keep segments
// remain (keep 0: no such floor). Removals are made durable before it
// returns.
func (w *WAL) ReleaseTo(index uint64, keep int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	n := 0
	for n+1 < len(w.segments) && w.segments[n+1].first <= index && len(w.segments)-n > keep {
		n++
	}
	if n == 0 {
		return nil
	}
	for _, s := range w.segments[:n] {
		if err := w.fs.Remove(filepath.Join(w.dir, s.String())); err != nil {
			return err
		}
	}
	w.segments = append([]segmentName(nil), w.segments[n:]...)
	return w.fs.SyncDir(w.dir)
}

// Segments returns the names of the WAL's segment files, oldest first.
func (w *WAL) Segments() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, len(w.segments))
	for i, s := range w.segments {
		out[i] = s.String()
	}
	return out
}

// Stats returns the WAL's counters.
func (w *WAL) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.flushing {
		w.idle.Wait()
	}
	return w.stats
}

// Close waits for the write in flight, then closes the segment. Appends
// after Close fail with ErrClosed.
func (w *WAL) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	for w.flushing {
		w.idle.Wait()
	}
	w.dropSpare()
	if w.file == nil {
		return nil
	}
	return w.file.Close()
}
