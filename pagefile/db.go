package pagefile

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cairn-kv/cairn/internal/invariants"
	"github.com/cairn-kv/cairn/internal/vfs"
	"golang.org/x/sys/unix"
)

// Options configures Open. A nil *Options means the defaults.
type Options struct {
	// PageSize of a new file; an existing file keeps its own. Default: the
	// operating system's page size.
	PageSize int
	// NoSync skips fdatasync. A crash may then lose or tear anything: for
	// tests and benchmarks of CPU cost only.
	NoSync bool
	// ReadOnly opens the file for reading, under a shared lock.
	ReadOnly bool
	// InitialMmapSize is the address space reserved for the map (default
	// 1 GiB). The file grows into it without remapping; past it the map is
	// replaced, and readers on the old map keep it until they end, so growth
	// never waits for readers.
	InitialMmapSize int
	// AllocSize is the step the file grows by once it is larger than it
	// (default 16 MiB), so most commits do not change the file's size.
	AllocSize int
	// Timeout is how long Open waits for another process's lock (0: fail at
	// once with ErrLocked).
	Timeout time.Duration
	// FS is the file system (default vfs.Default); tests pass recording or
	// error-injecting ones.
	FS vfs.FS
	// Mlock locks the file's pages in memory (mlock of the map, up to the
	// file's size, again as it grows), so that reads never wait on the
	// disk (etcd's --experimental-memory-mlock).
	Mlock bool
}

const (
	defaultMmapSize  = 1 << 30
	defaultAllocSize = 16 << 20
)

// DB is a page file: one writer, any number of readers.
//
// Lock order: rwlock, then mu; rwlock, then a Changes' mu.
type DB struct {
	path     string
	opts     Options
	fs       vfs.FS
	file     vfs.File
	pageSize int

	// rwlock is held by the write transaction for its whole life. It guards
	// freelist, fileSize, failed and track.
	rwlock   sync.Mutex
	freelist *freelist
	fileSize int64
	failed   error    // set once a write or sync failed; every later writer gets it
	track    *Changes // where write transactions record what they change (Tx.TrackChanges)
	// checkedGood (invariants builds only): the latest committed state
	// passed Check, so the next commit must leave a file that passes too.
	// A file that was damaged when opened is not the commit's to answer for.
	checkedGood bool

	pagePool pagePool

	// mu guards the committed state that transactions start from.
	mu struct {
		sync.Mutex
		meta     meta         // latest committed
		mmap     *mapping     // current map; covers meta.highWater
		readers  map[txid]int // open read transactions by snapshot
		nreaders int
		drained  *sync.Cond // signalled when nreaders drops to 0
		closed   bool
		stats    Stats
		// free and pending pages as of the latest commit (the freelist
		// itself belongs to the writer)
		freeN, pendingN int
		// roots has the root pages of buckets read transactions opened
		// in the latest committed state (nil after each commit); never
		// changed once published, so read transactions share it unlocked.
		roots map[string]pgid
	}
}

// mapping is one mmap of the file. Transactions hold a reference; a mapping
// replaced by a larger one is unmapped when its last reference goes.
type mapping struct {
	data    []byte
	refs    int // guarded by DB.mu
	retired bool
	locked  int // bytes mlocked from the start (Options.Mlock)
}

// lockPages mlocks m up to the file's size (Options.Mlock; the caller
// holds what keeps the file's size still: Open, or a commit).
func (db *DB) lockPages(m *mapping) error {
	if !db.opts.Mlock {
		return nil
	}
	to := int(min(db.fileSize, int64(len(m.data))))
	if to <= m.locked {
		return nil
	}
	if err := vfs.Mlock(m.data[m.locked:to]); err != nil {
		return fmt.Errorf("pagefile: mlock: %w", err)
	}
	m.locked = to
	return nil
}

// Stats counts the database's activity.
type Stats struct {
	FreePageN    int // pages free for reuse
	PendingPageN int // pages freed but still visible to readers or the previous meta
	FreeAlloc    int // bytes in free pages
	TxN          int // read transactions started
	OpenTxN      int // read transactions open
	CommitN      int // write transactions committed
	Remaps       int // times the map was replaced by a larger one
	TxStats      TxStats
}

// Open opens or creates the page file at path.
func Open(path string, opts *Options) (*DB, error) {
	db := &DB{path: path}
	if opts != nil {
		db.opts = *opts
	}
	o := &db.opts
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.PageSize == 0 {
		o.PageSize = os.Getpagesize()
	}
	if !validPageSize(o.PageSize) {
		return nil, fmt.Errorf("pagefile: invalid page size %d (a power of two from %d to %d)", o.PageSize, minPageSize, maxPageSize)
	}
	if o.InitialMmapSize <= 0 {
		o.InitialMmapSize = defaultMmapSize
	}
	if o.AllocSize <= 0 {
		o.AllocSize = defaultAllocSize
	}
	db.fs = o.FS
	db.mu.readers = map[txid]int{}
	db.mu.drained = sync.NewCond(&db.mu.Mutex)

	if !o.ReadOnly {
		if err := db.createIfMissing(); err != nil {
			return nil, err
		}
	}
	flag := os.O_RDWR
	if o.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := db.fs.OpenFile(path, flag, 0o600)
	if err != nil {
		return nil, err
	}
	db.file = f
	if err := db.lock(); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := db.load(); err != nil {
		_ = f.Close()
		return nil, err
	}
	if invariants.Enabled && db.mu.meta.highWater <= 1<<14 {
		db.checkedGood = db.Check() == nil
	}
	return db, nil
}

func (db *DB) lock() error {
	deadline := time.Now().Add(db.opts.Timeout)
	for {
		err := vfs.Flock(db.file, !db.opts.ReadOnly)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return err
		}
		if time.Now().After(deadline) {
			return ErrLocked
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// load reads (or, for an empty file, writes) the metas and the freelist,
// and maps the file.
func (db *DB) load() error {
	size, err := db.file.Size()
	if err != nil {
		return err
	}
	if size == 0 {
		return &CorruptError{Msg: "file is empty"}
	}
	db.fileSize = size
	m, err := db.readMeta(size)
	if err != nil {
		return err
	}
	db.pageSize = int(m.pageSize)
	if int64(m.highWater)*int64(db.pageSize) > size {
		return &CorruptError{Msg: fmt.Sprintf("file is %d bytes, shorter than its %d pages", size, m.highWater)}
	}
	mp, err := db.mapFile(int64(m.highWater) * int64(db.pageSize))
	if err != nil {
		return err
	}
	db.mu.mmap = mp
	if err := db.lockPages(mp); err != nil {
		return err
	}
	db.mu.meta = *m

	// The freelist, checked against the file.
	fl, err := db.readFreelist(m, mp.data)
	if err != nil {
		db.unmapAll()
		return err
	}
	db.freelist = fl
	db.mu.freeN, db.mu.pendingN = fl.count()
	return nil
}

// readMeta returns the valid meta with the highest transaction id. Page 0
// tells the page size; if it is damaged, page 1 is looked for at every
// possible page size.
func (db *DB) readMeta(size int64) (*meta, error) {
	read := func(off int64) []byte {
		buf := make([]byte, metaSize)
		if off+metaSize > size {
			return nil
		}
		if _, err := db.file.ReadAt(buf, off); err != nil {
			return nil
		}
		return buf
	}
	var metas []*meta
	var firstErr error
	m0, err := decodeMeta(read(0), 0)
	if err == nil {
		metas = append(metas, m0)
	} else {
		firstErr = err
	}
	sizes := []int{db.opts.PageSize}
	if m0 != nil {
		sizes = []int{int(m0.pageSize)}
	} else {
		for ps := minPageSize; ps <= maxPageSize; ps *= 2 {
			sizes = append(sizes, ps)
		}
	}
	for _, ps := range sizes {
		m1, err := decodeMeta(read(int64(ps)), 1)
		if err == nil && int(m1.pageSize) == ps {
			metas = append(metas, m1)
			break
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	var best *meta
	for _, m := range metas {
		if m0 != nil && m.pageSize != m0.pageSize {
			continue
		}
		if best == nil || m.txid > best.txid {
			best = m
		}
	}
	if best == nil {
		if errors.Is(firstErr, ErrVersionMismatch) {
			return nil, firstErr
		}
		return nil, &CorruptError{Msg: "no valid meta page: " + errString(firstErr)}
	}
	return best, nil
}

func errString(err error) string {
	if err == nil {
		return "none found"
	}
	return err.Error()
}

func (db *DB) readFreelist(m *meta, data []byte) (fl *freelist, err error) {
	tx := &Tx{db: db, base: *m, meta: *m, data: data}
	defer catchCorrupt(&err)
	p := tx.page(m.freelist)
	if pageType(p) != typeFreelist {
		return nil, &CorruptError{Page: m.freelist, Msg: "meta's freelist page is not a freelist"}
	}
	if !pageChecksumOK(p) {
		return nil, &CorruptError{Page: m.freelist, Msg: "freelist checksum mismatch"}
	}
	free, held, err := decodeFreelist(p, m.freelist, m.highWater)
	if err != nil {
		return nil, err
	}
	fl = newFreelist()
	fl.free = free
	if len(held) > 0 {
		fl.pending[m.txid] = held
	}
	fl.freeN, fl.pendingN = fl.recount()
	return fl, nil
}

// createIfMissing makes a new, empty page file at the path if there is none
// (or only an empty one): two metas, an empty freelist and an empty bucket
// directory. It writes them under a temporary name, syncs, renames into
// place and syncs the directory, so a crash leaves no file or a whole one.
func (db *DB) createIfMissing() error {
	fi, err := db.fs.Stat(db.path)
	if err == nil && fi.Size() > 0 {
		return nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	tmp := db.path + ".creating"
	f, err := db.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	ps := db.opts.PageSize
	buf := make([]byte, 4*ps)
	m := meta{pageSize: uint32(ps), root: 3, freelist: 2, highWater: 4}
	for slot := pgid(0); slot < 2; slot++ {
		m.txid = txid(slot)
		encodeMeta(buf[int(slot)*ps:], &m, slot)
	}
	fp := buf[2*ps : 3*ps]
	encodeFreelist(fp, nil, nil)
	sealPage(fp, typeFreelist, 0, 2, 0, 0)
	sealPage(buf[3*ps:], typeLeaf, 0, 3, 0, 0)
	_, err = f.WriteAt(buf, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = db.fs.Rename(tmp, db.path)
	}
	if err == nil {
		err = db.fs.SyncDir(filepath.Dir(db.path))
	}
	if err != nil {
		_ = db.fs.Remove(tmp)
	}
	return err
}

// mapFile maps at least need bytes, rounding up to the reservation.
func (db *DB) mapFile(need int64) (*mapping, error) {
	size := int64(db.opts.InitialMmapSize)
	for size < need {
		if size < 1<<30 {
			size *= 2
		} else {
			size += 1 << 30
		}
	}
	data, err := vfs.Mmap(db.file, int(size))
	if err != nil {
		return nil, fmt.Errorf("pagefile: mmap %d bytes: %w", size, err)
	}
	_ = vfs.MadviseRandom(data)
	return &mapping{data: data}, nil
}

// growSize is the size to grow the file to so it holds need bytes.
func (db *DB) growSize(need int64) int64 {
	step := int64(db.opts.AllocSize)
	if need < step {
		// Small files double, so tests and tiny databases stay small.
		size := int64(db.pageSize) * 4
		for size < need {
			size *= 2
		}
		return size
	}
	return (need + step - 1) / step * step
}

func (db *DB) sync() error {
	if db.opts.NoSync {
		return nil
	}
	return db.file.Sync()
}

// Sync forces an fdatasync of the file (for databases opened with NoSync).
// It does not wait for an open write transaction.
func (db *DB) Sync() error { return db.file.Sync() }

// Begin starts a transaction. A write transaction waits for the previous
// one to end. Callers must end it with Commit or Rollback.
func (db *DB) Begin(writable bool) (*Tx, error) {
	if writable {
		return db.beginWrite()
	}
	return db.beginRead()
}

func (db *DB) beginRead() (*Tx, error) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.closed {
		return nil, ErrDatabaseNotOpen
	}
	tx := &Tx{db: db, base: db.mu.meta, meta: db.mu.meta, mapping: db.mu.mmap, data: db.mu.mmap.data, roots: db.mu.roots}
	tx.mapping.refs++
	db.mu.readers[tx.meta.txid]++
	db.mu.nreaders++
	db.mu.stats.TxN++
	tx.dirB = Bucket{tx: tx, root: tx.meta.root}
	tx.dir = &tx.dirB
	return tx, nil
}

// publishRoot adds a bucket's root, as a read transaction of the committed
// state txid found it, to the roots later read transactions start with, if
// that state is still the latest.
func (db *DB) publishRoot(id txid, name []byte, root pgid) map[string]pgid {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.meta.txid != id {
		return nil
	}
	roots := make(map[string]pgid, len(db.mu.roots)+1)
	maps.Copy(roots, db.mu.roots)
	roots[string(name)] = root
	db.mu.roots = roots
	return roots
}

func (db *DB) beginWrite() (*Tx, error) {
	if db.opts.ReadOnly {
		return nil, ErrDatabaseReadOnly
	}
	db.rwlock.Lock()
	if db.failed != nil {
		db.rwlock.Unlock()
		return nil, db.failed
	}
	db.mu.Lock()
	if db.mu.closed {
		db.mu.Unlock()
		db.rwlock.Unlock()
		return nil, ErrDatabaseNotOpen
	}
	tx := &Tx{db: db, writable: true, base: db.mu.meta, meta: db.mu.meta, mapping: db.mu.mmap, data: db.mu.mmap.data}
	tx.mapping.refs++
	// Pages freed by transaction t may be reused once no reader sees a
	// snapshot older than t and t is not the latest commit (whose
	// predecessor's meta is still on disk as the fallback).
	limit := tx.base.txid
	for r := range db.mu.readers {
		if r < limit {
			limit = r
		}
	}
	db.mu.Unlock()

	db.freelist.release(limit)
	if db.track != nil && db.track.stopped.Load() {
		db.track = nil
	}
	tx.track = db.track
	tx.meta.txid++
	tx.pages = map[pgid][]byte{}
	tx.dir = &Bucket{tx: tx, root: tx.meta.root, nodes: map[pgid]*node{}}
	return tx, nil
}

func (db *DB) endRead(tx *Tx) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.readers[tx.base.txid]--; db.mu.readers[tx.base.txid] == 0 {
		delete(db.mu.readers, tx.base.txid)
	}
	db.mu.nreaders--
	db.releaseMapLocked(tx.mapping)
	if db.mu.nreaders == 0 {
		db.mu.drained.Broadcast()
	}
}

func (db *DB) endWrite(tx *Tx) {
	db.mu.Lock()
	db.mu.stats.TxStats.add(&tx.stats)
	db.releaseMapLocked(tx.mapping)
	db.mu.Unlock()
	db.rwlock.Unlock()
}

func (db *DB) releaseMapLocked(m *mapping) {
	m.refs--
	if m.retired && m.refs == 0 {
		_ = vfs.Munmap(m.data)
		m.data = nil
	}
}

// publish makes a durable commit visible to new transactions, first
// replacing the map if the file outgrew it.
func (db *DB) publish(tx *Tx) error {
	need := int64(tx.meta.highWater) * int64(db.pageSize)
	var fresh *mapping
	if need > int64(len(tx.mapping.data)) {
		var err error
		if fresh, err = db.mapFile(need); err != nil {
			return err
		}
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if fresh != nil && need > int64(len(db.mu.mmap.data)) {
		old := db.mu.mmap
		db.mu.mmap = fresh
		old.retired = true
		if old.refs == 0 {
			_ = vfs.Munmap(old.data)
			old.data = nil
		}
		db.mu.stats.Remaps++
	} else if fresh != nil {
		_ = vfs.Munmap(fresh.data)
	}
	if err := db.lockPages(db.mu.mmap); err != nil {
		return err
	}
	db.mu.meta = tx.meta
	db.mu.roots = nil
	db.mu.stats.CommitN++
	db.mu.freeN, db.mu.pendingN = db.freelist.count()
	return nil
}

func (db *DB) unmapAll() {
	if db.mu.mmap != nil {
		_ = vfs.Munmap(db.mu.mmap.data)
		db.mu.mmap = nil
	}
}

// Close waits for open transactions to end, then unmaps and closes the file.
func (db *DB) Close() error {
	if !db.shut() {
		return nil
	}
	return db.file.Close()
}

// shut waits for open transactions to end, marks the database closed and
// unmaps it; it reports false if it was closed already. The file stays
// open for the caller to close (no transaction can reach it any more).
func (db *DB) shut() bool {
	db.rwlock.Lock()
	defer db.rwlock.Unlock()
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.mu.closed {
		return false
	}
	for db.mu.nreaders > 0 {
		db.mu.drained.Wait()
	}
	db.mu.closed = true
	db.unmapAll()
	return true
}

// Discard is Close for a file that has been removed or renamed over (its
// path names another file now): once the last reader ends, it unmaps the
// file and shrinks it to nothing step bytes at a time, pause apart, before
// closing it. Closing a large unlinked file frees all its blocks at once,
// and on ext4 the fdatasync of a commit elsewhere waits behind that (a
// 440 MB file: 130 ms); in 16 MiB steps each takes a few milliseconds.
func (db *DB) Discard(step int64, pause time.Duration) error {
	if !db.shut() {
		return nil
	}
	size, err := db.file.Size()
	for err == nil && size > 0 {
		size = max(0, size-step)
		if err = db.file.Truncate(size); err == nil && size > 0 {
			time.Sleep(pause)
		}
	}
	if cerr := db.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// Update runs fn in a write transaction, committing if fn returns nil and
// rolling back otherwise (or if fn panics).
func (db *DB) Update(fn func(*Tx) error) error { return db.managed(true, fn) }

// View runs fn in a read transaction.
func (db *DB) View(fn func(*Tx) error) error { return db.managed(false, fn) }

// managed runs fn in a transaction that fn may not end itself.
func (db *DB) managed(writable bool, fn func(*Tx) error) error {
	tx, err := db.Begin(writable)
	if err != nil {
		return err
	}
	defer func() {
		if tx.db != nil {
			tx.rollback()
		}
	}()
	tx.managed = true
	err = fn(tx)
	tx.managed = false
	switch {
	case err != nil:
		return err
	case writable:
		return tx.Commit()
	}
	return tx.err
}

// Path returns the file's path.
func (db *DB) Path() string { return db.path }

// FS is the file system the page file was opened on.
func (db *DB) FS() vfs.FS { return db.fs }

// PageSize returns the file's page size.
func (db *DB) PageSize() int { return db.pageSize }

// Size returns the bytes in use (the high-water mark; the file may be
// larger, preallocated).
func (db *DB) Size() int64 {
	db.mu.Lock()
	defer db.mu.Unlock()
	return int64(db.mu.meta.highWater) * int64(db.pageSize)
}

// Stats returns the database's counters, free pages as of the latest commit.
// It does not wait for an open write transaction.
func (db *DB) Stats() Stats {
	db.mu.Lock()
	defer db.mu.Unlock()
	s := db.mu.stats
	free, pending := db.mu.freeN, db.mu.pendingN
	s.FreePageN, s.PendingPageN = free, pending
	s.FreeAlloc = free * db.pageSize
	s.OpenTxN = db.mu.nreaders
	return s
}

func (s *TxStats) add(o *TxStats) {
	s.CursorCount += o.CursorCount
	s.PageCount += o.PageCount
	s.PageAlloc += o.PageAlloc
	s.Rebalance += o.Rebalance
	s.Spill += o.Spill
	s.Write += o.Write
	s.WriteTime += o.WriteTime
}

// pagePool recycles page-sized buffers between commits.
type pagePool struct {
	mu   sync.Mutex
	bufs [][]byte
}

func (p *pagePool) get(n int) []byte {
	p.mu.Lock()
	if k := len(p.bufs); k > 0 && len(p.bufs[k-1]) == n {
		b := p.bufs[k-1]
		p.bufs = p.bufs[:k-1]
		p.mu.Unlock()
		return b
	}
	p.mu.Unlock()
	return make([]byte, n)
}

func (p *pagePool) put(b []byte) {
	p.mu.Lock()
	if len(p.bufs) < 4096 {
		p.bufs = append(p.bufs, b)
	}
	p.mu.Unlock()
}
