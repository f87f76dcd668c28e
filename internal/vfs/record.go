package vfs

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// OpKind names a mutation recorded by a Recorder.
type OpKind uint8

const (
	OpCreate   OpKind = iota + 1 // a new directory entry for a file
	OpWrite                      // data written at an offset
	OpTruncate                   // size set (also used for Allocate)
	OpSync                       // file data and size made durable
	OpRemove                     // directory entry removed
	OpRename                     // directory entry moved
	OpSyncDir                    // directory entries made durable
)

func (k OpKind) String() string {
	switch k {
	case OpCreate:
		return "create"
	case OpWrite:
		return "write"
	case OpTruncate:
		return "truncate"
	case OpSync:
		return "sync"
	case OpRemove:
		return "remove"
	case OpRename:
		return "rename"
	case OpSyncDir:
		return "syncdir"
	}
	return fmt.Sprintf("op(%d)", k)
}

// Op is one recorded mutation. Paths are relative to the Recorder's root.
type Op struct {
	Kind OpKind
	Ino  int    // the file a create, write, truncate or sync is about
	Path string // file (its name when opened), or directory for OpSyncDir
	To   string // OpRename's new path
	Off  int64  // OpWrite's offset
	Data []byte // OpWrite's bytes (a copy)
	Size int64  // OpTruncate's size
}

// CrashMode says what a simulated power loss does with data that was written
// but not yet synced.
type CrashMode int

const (
	// CrashDropUnsynced loses everything written since each file's last sync.
	CrashDropUnsynced CrashMode = iota + 1
	// CrashKeepPrefix keeps an arbitrary prefix of each file's unsynced
	// operations, in order.
	CrashKeepPrefix
	// CrashKeepSectors keeps an arbitrary subset of the unsynced 512-byte
	// sectors (the disk may reorder writes between syncs).
	CrashKeepSectors
	// CrashTearSector is CrashKeepSectors where one kept sector is torn: a
	// prefix of it reached the disk and the rest is zeros or garbage.
	CrashTearSector
)

// AllCrashModes lists every mode, for tests that enumerate them.
var AllCrashModes = []CrashMode{CrashDropUnsynced, CrashKeepPrefix, CrashKeepSectors, CrashTearSector}

func (m CrashMode) String() string {
	switch m {
	case CrashDropUnsynced:
		return "drop-unsynced"
	case CrashKeepPrefix:
		return "keep-prefix"
	case CrashKeepSectors:
		return "keep-sectors"
	case CrashTearSector:
		return "tear-sector"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// SectorSize is the unit a disk writes atomically.
const SectorSize = 512

// Recorder is an FS over a real directory that logs every mutation under its
// root. The live files are ordinary files (so mmap works), but Sync and
// SyncDir only record a barrier: durability is simulated by CrashImage, which
// rebuilds what a disk could hold had power failed after any prefix of the
// log.
type Recorder struct {
	root string

	mu    sync.Mutex
	ops   []Op
	names map[string]int // live name -> file identity
	inos  int
}

// NewRecorder records mutations of files under root.
func NewRecorder(root string) *Recorder {
	return &Recorder{root: filepath.Clean(root), names: map[string]int{}}
}

// Len returns the number of operations recorded so far: the crash points are
// 0..Len().
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// Ops returns a copy of the log.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Op(nil), r.ops...)
}

func (r *Recorder) rel(name string) string {
	rel, err := filepath.Rel(r.root, filepath.Clean(name))
	if err != nil {
		return name
	}
	return rel
}

func (r *Recorder) record(op Op) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// OpenFile opens a file; writes through the handle are recorded against
// the file itself, so they follow it across renames.
func (r *Recorder) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	_, statErr := os.Stat(name)
	f, err := Default.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	rel := r.rel(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	ino, known := r.names[rel]
	if os.IsNotExist(statErr) {
		r.inos++
		ino = r.inos
		r.names[rel] = ino
		r.ops = append(r.ops, Op{Kind: OpCreate, Ino: ino, Path: rel})
	} else {
		if !known {
			// A file from before recording: a new identity, whose
			// contents the replayer reads from the base directory.
			r.inos++
			ino = r.inos
			r.names[rel] = ino
		}
		if flag&os.O_TRUNC != 0 {
			r.ops = append(r.ops, Op{Kind: OpTruncate, Ino: ino, Path: rel, Size: 0})
		}
	}
	return &recFile{File: f, r: r, path: rel, ino: ino}, nil
}

func (r *Recorder) Remove(name string) error {
	if err := Default.Remove(name); err != nil {
		return err
	}
	rel := r.rel(name)
	r.mu.Lock()
	delete(r.names, rel)
	r.ops = append(r.ops, Op{Kind: OpRemove, Path: rel})
	r.mu.Unlock()
	return nil
}

func (r *Recorder) Rename(oldname, newname string) error {
	if err := Default.Rename(oldname, newname); err != nil {
		return err
	}
	from, to := r.rel(oldname), r.rel(newname)
	r.mu.Lock()
	if ino, ok := r.names[from]; ok {
		r.names[to] = ino
		delete(r.names, from)
	}
	r.ops = append(r.ops, Op{Kind: OpRename, Path: from, To: to})
	r.mu.Unlock()
	return nil
}

func (r *Recorder) MkdirAll(dir string, perm os.FileMode) error { return Default.MkdirAll(dir, perm) }
func (r *Recorder) ReadDir(dir string) ([]string, error)        { return Default.ReadDir(dir) }
func (r *Recorder) Stat(name string) (os.FileInfo, error)       { return Default.Stat(name) }

func (r *Recorder) SyncDir(dir string) error {
	r.record(Op{Kind: OpSyncDir, Path: r.rel(dir)})
	return nil
}

type recFile struct {
	File
	r    *Recorder
	path string // the name it was opened with
	ino  int
}

func (f *recFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	if n > 0 {
		f.r.record(Op{Kind: OpWrite, Ino: f.ino, Path: f.path, Off: off, Data: append([]byte(nil), p[:n]...)})
	}
	return n, err
}

func (f *recFile) WritevAt(bufs [][]byte, off int64) (int, error) {
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

func (f *recFile) Truncate(size int64) error {
	if err := f.File.Truncate(size); err != nil {
		return err
	}
	f.r.record(Op{Kind: OpTruncate, Ino: f.ino, Path: f.path, Size: size})
	return nil
}

func (f *recFile) Allocate(off, n int64) error {
	size, err := f.File.Size()
	if err != nil {
		return err
	}
	if err := f.File.Allocate(off, n); err != nil {
		return err
	}
	if off+n > size {
		f.r.record(Op{Kind: OpTruncate, Ino: f.ino, Path: f.path, Size: off + n})
	}
	return nil
}

// Sync records a barrier; the data is already in the live file.
func (f *recFile) Sync() error {
	f.r.record(Op{Kind: OpSync, Ino: f.ino, Path: f.path})
	return nil
}

// simFile is a file's state while a crash image is rebuilt.
type simFile struct {
	durable []byte
	pending []Op // writes and truncates since the last sync
}

// CrashImage writes under dir the files as a disk could hold them had power
// failed after the first k recorded operations, choosing among the outcomes
// that mode allows with rng. The same k, mode and seed give the same image.
//
// Files whose creation (or rename into place) was not followed by a SyncDir
// of their directory may be missing from the image; files present before
// recording started must already exist under dir (copy them there first).
func (r *Recorder) CrashImage(dir string, k int, mode CrashMode, rng *rand.Rand) error {
	rp := r.Replayer(dir)
	if err := rp.Advance(k); err != nil {
		return err
	}
	return rp.Image(dir, mode, rng)
}

// CrashPoints returns the crash points 0..total, or, when limit is positive
// and smaller, limit of them chosen with rng, in order.
func CrashPoints(total, limit int, rng *rand.Rand) []int {
	points := make([]int, 0, total+1)
	for k := 0; k <= total; k++ {
		points = append(points, k)
	}
	if limit > 0 && len(points) > limit {
		rng.Shuffle(len(points), func(i, j int) { points[i], points[j] = points[j], points[i] })
		points = points[:limit]
		sort.Ints(points)
	}
	return points
}

// Replayer walks the log forward once, so that a test can take crash images
// at every point in order without replaying from the start each time.
type Replayer struct {
	ops        []Op
	pos        int
	base       string              // where files from before recording are read
	inodes     map[int]*simFile    // files by identity
	live       map[string]*simFile // names as the process saw them
	durable    map[string]*simFile // names as the disk holds them
	dirPending []dirOp             // directory ops not yet made durable
}

// dirOp is a directory change and the file it names, as of the change.
type dirOp struct {
	op Op
	in *simFile
}

// Replayer starts at crash point 0. Files that existed before recording
// started are read from base when first touched.
func (r *Recorder) Replayer(base string) *Replayer {
	return &Replayer{ops: r.Ops(), base: base, inodes: map[int]*simFile{}, live: map[string]*simFile{}, durable: map[string]*simFile{}}
}

// Pos returns the crash point the replayer stands at.
func (rp *Replayer) Pos() int { return rp.pos }

// lookup returns the file a name stands for, reading one from before
// recording from the base directory the first time.
func (rp *Replayer) lookup(name string) *simFile {
	if in, ok := rp.live[name]; ok {
		return in
	}
	data, _ := os.ReadFile(filepath.Join(rp.base, name))
	in := &simFile{durable: data}
	rp.live[name] = in
	rp.durable[name] = in
	return in
}

// file returns the file an op is about, by identity.
func (rp *Replayer) file(op Op) *simFile {
	if in, ok := rp.inodes[op.Ino]; ok {
		return in
	}
	in := rp.lookup(op.Path)
	rp.inodes[op.Ino] = in
	return in
}

func applyDir(names map[string]*simFile, d dirOp) {
	switch d.op.Kind {
	case OpCreate:
		names[d.op.Path] = d.in
	case OpRemove:
		delete(names, d.op.Path)
	case OpRename:
		names[d.op.To] = d.in
		delete(names, d.op.Path)
	}
}

// Advance moves to crash point k (at or after the current one): the first k
// operations have happened.
func (rp *Replayer) Advance(k int) error {
	if k < rp.pos || k > len(rp.ops) {
		return fmt.Errorf("vfs: cannot advance from %d to crash point %d of 0..%d", rp.pos, k, len(rp.ops))
	}
	for ; rp.pos < k; rp.pos++ {
		op := rp.ops[rp.pos]
		switch op.Kind {
		case OpCreate:
			in := &simFile{}
			rp.inodes[op.Ino] = in
			rp.live[op.Path] = in
			rp.dirPending = append(rp.dirPending, dirOp{op, in})
		case OpWrite, OpTruncate:
			in := rp.file(op)
			in.pending = append(in.pending, op)
		case OpSync:
			in := rp.file(op)
			in.durable = applyOps(in.durable, in.pending, nil)
			in.pending = nil
		case OpRemove, OpRename:
			d := dirOp{op, rp.lookup(op.Path)}
			rp.dirPending = append(rp.dirPending, d)
			applyDir(rp.live, d)
		case OpSyncDir:
			var keep []dirOp
			for _, d := range rp.dirPending {
				if filepath.Dir(d.op.Path) == op.Path || (d.op.Kind == OpRename && filepath.Dir(d.op.To) == op.Path) {
					applyDir(rp.durable, d)
				} else {
					keep = append(keep, d)
				}
			}
			rp.dirPending = keep
		}
	}
	return nil
}

// Image replaces dir's contents with what the disk could hold after a power
// loss at the current crash point.
func (rp *Replayer) Image(dir string, mode CrashMode, rng *rand.Rand) error {
	names := make(map[string]*simFile, len(rp.durable))
	for k, v := range rp.durable {
		names[k] = v
	}
	// Volatile directory ops: lost, or (past mode 1) a prefix survives.
	if mode != CrashDropUnsynced && len(rp.dirPending) > 0 {
		for _, d := range rp.dirPending[:rng.Intn(len(rp.dirPending)+1)] {
			applyDir(names, d)
		}
	}
	// Volatile file data, per file, as the mode allows. Files are visited in
	// name order so the same seed gives the same image.
	order := make([]string, 0, len(names))
	for name := range names {
		order = append(order, name)
	}
	sort.Strings(order)
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range order {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, crashFile(*names[name], mode, rng), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// crashFile returns the bytes of one file after a power loss.
func crashFile(sim simFile, mode CrashMode, rng *rand.Rand) []byte {
	if len(sim.pending) == 0 || mode == CrashDropUnsynced {
		return append([]byte(nil), sim.durable...)
	}
	switch mode {
	case CrashKeepPrefix:
		n := rng.Intn(len(sim.pending) + 1)
		return applyOps(append([]byte(nil), sim.durable...), sim.pending[:n], nil)
	default:
		// Split unsynced writes into sector pieces and keep a random subset.
		type piece struct {
			op   int
			from int // offset into op.Data
			to   int
		}
		var pieces []piece
		for i, op := range sim.pending {
			if op.Kind != OpWrite {
				continue
			}
			for from := 0; from < len(op.Data); {
				abs := op.Off + int64(from)
				next := (abs/SectorSize + 1) * SectorSize
				to := from + int(next-abs)
				if to > len(op.Data) {
					to = len(op.Data)
				}
				pieces = append(pieces, piece{i, from, to})
				from = to
			}
		}
		keep := map[piece]bool{}
		var kept []piece
		for _, p := range pieces {
			if rng.Intn(2) == 0 {
				keep[p] = true
				kept = append(kept, p)
			}
		}
		torn := piece{op: -1}
		if mode == CrashTearSector && len(kept) > 0 {
			torn = kept[rng.Intn(len(kept))]
		}
		garbage := rng.Intn(2) == 0
		cut := 0
		if torn.op >= 0 {
			cut = rng.Intn(torn.to - torn.from)
		}
		filter := func(i int, op Op) []Op {
			if op.Kind != OpWrite {
				if rng.Intn(2) == 0 {
					return []Op{op}
				}
				return nil
			}
			var outs []Op
			for _, p := range pieces {
				if p.op != i || !keep[p] {
					continue
				}
				data := append([]byte(nil), op.Data[p.from:p.to]...)
				if p == torn {
					for j := cut; j < len(data); j++ {
						if garbage {
							data[j] = byte(rng.Intn(256))
						} else {
							data[j] = 0
						}
					}
				}
				outs = append(outs, Op{Kind: OpWrite, Off: op.Off + int64(p.from), Data: data})
			}
			return outs
		}
		return applyOps(append([]byte(nil), sim.durable...), sim.pending, filter)
	}
}

// applyOps applies writes and truncates to data. filter, if set, replaces
// each op by what survives of it.
func applyOps(data []byte, ops []Op, filter func(int, Op) []Op) []byte {
	for i, op := range ops {
		list := []Op{op}
		if filter != nil {
			list = filter(i, op)
		}
		for _, o := range list {
			switch o.Kind {
			case OpWrite:
				end := o.Off + int64(len(o.Data))
				if end > int64(len(data)) {
					data = append(data, make([]byte, end-int64(len(data)))...)
				}
				copy(data[o.Off:], o.Data)
			case OpTruncate:
				if o.Size <= int64(len(data)) {
					data = data[:o.Size]
				} else {
					data = append(data, make([]byte, o.Size-int64(len(data)))...)
				}
			}
		}
	}
	return data
}
