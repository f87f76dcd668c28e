package pagefile

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/invariants"
	"github.com/cairn-kv/cairn/internal/vfs"
)

// Tx is a read-only or read-write transaction, for use by one goroutine at a
// time (open one transaction per goroutine). A read transaction sees one
// committed state for its whole life, whatever commits meanwhile. There is
// at most one write transaction at a time. A transaction must be ended with
// Commit or Rollback (Update and View do it for you); an open read
// transaction keeps the pages it can see from being reused.
type Tx struct {
	db       *DB // nil once the transaction has ended
	writable bool
	managed  bool
	base     meta // the committed state the transaction began from
	meta     meta // writers: the state being built
	mapping  *mapping
	data     []byte // the map, as of the transaction's start

	dir     *Bucket                        // the bucket directory: name -> root page
	dirB    Bucket                         // what dir points to
	buckets []*Bucket                      // buckets opened in this transaction, by name
	roots   map[string]pgid                // readers: bucket roots of this state known when it began (shared, read-only)
	bucketA [4]*Bucket                     // buckets' first backing array
	pages   map[pgid][]byte                // writers: page runs written at commit
	run     struct{ from, next, end pgid } // writers: the commit's reserved run
	err     error                          // sticky: corruption met by a read path
	scratch Cursor                         // reused by Get, Put and Delete (a Tx is not shared between goroutines)
	track   *Changes                       // writers: where a commit records what it changed (nil: nowhere)
	changed ChangeSet                      // writers: what this transaction changed, if it records

	stats TxStats
}

// TxStats counts a transaction's work.
type TxStats struct {
	CursorCount int           // cursors created
	PageCount   int           // page runs allocated at commit
	PageAlloc   int           // bytes allocated at commit
	Rebalance   time.Duration // time merging small nodes
	Spill       time.Duration // time splitting and serializing nodes
	Write       int           // write calls, the meta's included (adjacent pages share one)
	WriteTime   time.Duration // time in writes and syncs
}

// scratchCursor returns the transaction's reusable cursor, reset to b.
func (tx *Tx) scratchCursor(b *Bucket) *Cursor {
	c := &tx.scratch
	c.bucket = b
	if c.stack == nil {
		c.stack = make([]elemRef, 0, 8)
	}
	c.stack = c.stack[:0]
	return c
}

// ID returns the transaction id: the id of the committed state a read
// transaction sees, or the id a write transaction will commit as.
func (tx *Tx) ID() int { return int(tx.meta.txid) }

// Size returns the size in bytes of the database as the transaction sees it.
func (tx *Tx) Size() int64 { return int64(tx.meta.highWater) * int64(tx.pageSizeOr()) }

func (tx *Tx) pageSizeOr() int {
	if tx.db != nil {
		return tx.db.pageSize
	}
	return int(tx.meta.pageSize)
}

// Writable reports whether the transaction can change the database.
func (tx *Tx) Writable() bool { return tx.writable }

// DB returns the transaction's database, or nil once it has ended.
func (tx *Tx) DB() *DB { return tx.db }

// Err returns the corruption error a read path met, if any. Update and View
// return it; Commit refuses to commit after one.
func (tx *Tx) Err() error { return tx.err }

// Stats returns the transaction's counters.
func (tx *Tx) Stats() TxStats { return tx.stats }

// Bucket returns the named bucket, or nil if it does not exist.
func (tx *Tx) Bucket(name []byte) *Bucket {
	if i, ok := tx.findBucket(name); ok {
		return tx.buckets[i]
	}
	if tx.db == nil {
		return nil
	}
	if root, ok := tx.roots[string(name)]; ok {
		return tx.openBucket(name, root)
	}
	defer tx.recoverCorrupt(nil)
	v := tx.dir.Get(name)
	if v == nil {
		return nil
	}
	root := decodeBucketHeader(v, name)
	if !tx.writable {
		// Later readers of this state skip the directory look-up.
		if roots := tx.db.publishRoot(tx.base.txid, name, root); roots != nil {
			tx.roots = roots
		}
	}
	return tx.openBucket(name, root)
}

func (tx *Tx) openBucket(name []byte, root pgid) *Bucket {
	b := &Bucket{tx: tx, name: bytes.Clone(name), root: root}
	if tx.writable {
		b.nodes = map[pgid]*node{}
	}
	if tx.buckets == nil {
		tx.buckets = tx.bucketA[:0]
	}
	if i, ok := tx.findBucket(name); ok {
		tx.buckets[i] = b
	} else {
		tx.buckets = slices.Insert(tx.buckets, i, b)
	}
	return b
}

// findBucket returns where name is, or would be, among the buckets opened.
func (tx *Tx) findBucket(name []byte) (int, bool) {
	return slices.BinarySearchFunc(tx.buckets, name, func(b *Bucket, name []byte) int { return bytes.Compare(b.name, name) })
}

// CreateBucket creates a new, empty bucket.
func (tx *Tx) CreateBucket(name []byte) (*Bucket, error) {
	switch {
	case tx.db == nil:
		return nil, ErrTxClosed
	case !tx.writable:
		return nil, ErrTxNotWritable
	case len(name) == 0:
		return nil, ErrBucketNameRequired
	case len(name) > MaxKeySize:
		return nil, ErrKeyTooLarge
	case tx.Bucket(name) != nil:
		return nil, ErrBucketExists
	case tx.err != nil:
		return nil, tx.err
	}
	if err := tx.dir.Put(name, encodeBucketHeader(0)); err != nil {
		return nil, err
	}
	b := tx.openBucket(name, 0)
	b.rootNode = &node{bucket: b, leaf: true, appendOnly: true}
	tx.recordBucket(name)
	return b, nil
}

// CreateBucketIfNotExists returns the named bucket, creating it if needed.
func (tx *Tx) CreateBucketIfNotExists(name []byte) (*Bucket, error) {
	if tx.db != nil && tx.writable {
		if b := tx.Bucket(name); b != nil {
			return b, nil
		}
	}
	return tx.CreateBucket(name)
}

// DeleteBucket removes a bucket and frees its pages. Bucket handles to it
// become unusable.
func (tx *Tx) DeleteBucket(name []byte) (err error) {
	switch {
	case tx.db == nil:
		return ErrTxClosed
	case !tx.writable:
		return ErrTxNotWritable
	}
	b := tx.Bucket(name)
	if b == nil {
		if tx.err != nil {
			return tx.err
		}
		return ErrBucketNotFound
	}
	defer tx.recoverCorrupt(&err)
	if b.root != 0 {
		tx.freeTree(b.root, 0)
	}
	b.deleted = true
	b.rootNode, b.nodes = nil, nil
	if i, ok := tx.findBucket(name); ok {
		tx.buckets = slices.Delete(tx.buckets, i, i+1)
	}
	tx.recordBucket(name)
	return tx.dir.Delete(name)
}

// freeTree frees every page of the committed tree under id.
func (tx *Tx) freeTree(id pgid, depth int) {
	if depth > maxDepth {
		corruptf(id, "tree deeper than %d levels (a cycle?)", maxDepth)
	}
	p := tx.page(id)
	if pageType(p) == typeBranch {
		for i := 0; i < pageCount(p); i++ {
			_, child := branchElem(p, id, i)
			tx.freeTree(child, depth+1)
		}
	}
	tx.freePage(id)
}

// ForEach calls fn with every bucket, in name order.
func (tx *Tx) ForEach(fn func(name []byte, b *Bucket) error) error {
	if tx.db == nil {
		return ErrTxClosed
	}
	var names [][]byte
	if err := tx.dir.ForEach(func(k, _ []byte) error {
		names = append(names, k)
		return nil
	}); err != nil {
		return err
	}
	for _, name := range names {
		b := tx.Bucket(name)
		if b == nil {
			return tx.err
		}
		if err := fn(name, b); err != nil {
			return err
		}
	}
	return tx.err
}

// page returns the run of pages starting at id from the map, checking that
// it lies below the transaction's high-water mark and names itself.
func (tx *Tx) page(id pgid) []byte {
	if id < 2 || id >= tx.base.highWater {
		corruptf(id, "page id outside the file (high-water mark %d)", tx.base.highWater)
	}
	ps := uint64(tx.db.pageSize)
	off := uint64(id) * ps
	if off+ps > uint64(len(tx.data)) {
		corruptf(id, "page past the end of the map")
	}
	p := tx.data[off : off+ps : off+ps]
	if pageID(p) != id {
		corruptf(id, "page header names page %d", pageID(p))
	}
	if ov := uint64(pageOverflow(p)); ov > 0 {
		if ov >= uint64(tx.base.highWater-id) {
			corruptf(id, "overflow run of %d pages past the high-water mark", ov)
		}
		end := off + (1+ov)*ps
		p = tx.data[off:end:end]
	}
	return p
}

// freePage marks the committed run at id freed by this transaction.
func (tx *Tx) freePage(id pgid) {
	if id == 0 {
		return
	}
	p := tx.page(id)
	tx.db.freelist.freePages(tx.meta.txid, id, pgid(pageOverflow(p))+1)
}

// allocate takes a run of pages for size bytes and returns its buffer, to be
// written at commit.
func (tx *Tx) allocate(size int) (pgid, []byte, error) {
	ps := tx.db.pageSize
	n := pgid((size + ps - 1) / ps)
	var id pgid
	if tx.run.next+n <= tx.run.end {
		id = tx.run.next
		tx.run.next += n
	} else {
		id = tx.db.freelist.allocate(n)
	}
	if id == 0 {
		if r := &tx.run; r.next < r.end && tx.runIsLast() {
			// The run is an extension, the file's last pages, and has
			// pages left: it grows to fit, so that it stays last and
			// releaseRun can give back its unused end by lowering the
			// high-water mark (pages taken past it would leave that end
			// in the middle, neither free nor in use).
			extra := n - (r.end - r.next)
			tx.meta.highWater += extra
			tx.db.freelist.growExtend(r.from, extra)
			r.end += extra
			id = r.next
			r.next += n
		} else {
			id = tx.meta.highWater
			tx.meta.highWater += n
			tx.db.freelist.noteExtend(id, n)
		}
	}
	buf := tx.db.pagePool.get(int(n) * ps)
	tx.pages[id] = buf
	tx.stats.PageCount++
	tx.stats.PageAlloc += len(buf)
	return id, buf, nil
}

// seal stamps a page run's header and checksum.
func (tx *Tx) seal(buf []byte, typ uint16, count int, id pgid) {
	sealPage(buf, typ, count, id, tx.meta.txid, len(buf)/tx.db.pageSize-1)
}

// Commit writes the transaction's changes and makes them durable:
//
//  1. merge small nodes and spill changed nodes to newly allocated pages,
//     bottom-up, never over a page a committed tree still uses;
//  2. write the freelist to new pages;
//  3. grow the file if needed;
//  4. write the dirty pages in page order, adjacent pages in one pwrite;
//  5. fdatasync;
//  6. write the meta page into slot txid % 2;
//  7. fdatasync.
//
// A crash before step 7 completes leaves the previous transaction, which no
// step touched. An error in steps 1–3 rolls back and leaves the database
// usable; an error writing or syncing is fatal (see FatalError).
func (tx *Tx) Commit() error {
	if tx.managed {
		return ErrManagedTx
	}
	return tx.commit()
}

func (tx *Tx) commit() (err error) {
	switch {
	case tx.db == nil:
		return ErrTxClosed
	case !tx.writable:
		return ErrTxNotWritable
	case tx.err != nil:
		err := tx.err
		tx.rollback()
		return err
	}
	db := tx.db
	if err := tx.prepare(); err != nil {
		tx.rollback()
		return err
	}
	if err := tx.grow(); err != nil {
		tx.rollback()
		return err
	}
	start := time.Now()
	if err := tx.writeAndSync(); err != nil {
		db.failed = &FatalError{Err: err}
		tx.rollback()
		return db.failed
	}
	tx.stats.WriteTime += time.Since(start)
	if invariants.Enabled {
		db.verifyCommitLocked(tx)
	}
	db.freelist.commit()
	if err := db.publish(tx); err != nil {
		// The commit is durable; only the new map failed. Later
		// transactions cannot read the new pages, so stop writing.
		db.failed = &FatalError{Err: err}
		tx.close()
		return db.failed
	}
	if tx.track != nil && tx.changed != nil && !tx.track.stopped.Load() {
		tx.track.merge(tx.changed)
	}
	tx.close()
	if invariants.Enabled && tx.meta.highWater <= 1<<14 {
		// Strict mode: every commit on a file that passed Check leaves
		// one that passes.
		err := db.Check()
		if err != nil && db.checkedGood {
			panic(fmt.Sprintf("pagefile: commit %d left a bad file: %v", tx.meta.txid, err))
		}
		db.checkedGood = err == nil
	}
	return failpoint.Hit("pagefile/afterCommit")
}

// prepare runs steps 1 and 2: everything in memory.
func (tx *Tx) prepare() (err error) {
	defer tx.recoverCorrupt(&err)
	start := time.Now()
	var touched []*Bucket // in name order
	for _, b := range tx.buckets {
		if b.rootNode != nil {
			touched = append(touched, b)
		}
	}
	for _, b := range touched {
		b.rebalance()
	}
	tx.dir.rebalance()
	tx.stats.Rebalance += time.Since(start)

	// Reserve one run for everything the commit writes, so it goes to disk
	// as one write (and frees, later, as one run).
	tx.reserveRun(touched)

	start = time.Now()
	for _, b := range touched {
		root, err := b.spill()
		if err != nil {
			return err
		}
		if root != b.root {
			if err := tx.dir.Put(b.name, encodeBucketHeader(root)); err != nil {
				return err
			}
		}
	}
	tx.dir.rebalance()
	root, err := tx.dir.spill()
	if err != nil {
		return err
	}
	tx.meta.root = root
	tx.stats.Spill += time.Since(start)

	return tx.writeFreelist()
}

// writeFreelist frees the old freelist run, takes one for the new, gives
// back the reserved run's unused end and encodes what is left.
//
// The new run is sized before its pages are taken and the reserved run is
// given back, and each of the two can add one extent to what the freelist
// then holds. Taking pages from the front of a free extent that adjoins an
// extent pending from an earlier transaction splits the one extent the two
// made when merged; giving back the unused end adds one more.
func (tx *Tx) writeFreelist() error {
	fl := tx.db.freelist
	tx.freePage(tx.meta.freelist)
	free, held := fl.persisted(tx.meta.txid)
	id, buf, err := tx.allocate(freelistBytes(len(free)+2, len(held)))
	if err != nil {
		return err
	}
	tx.releaseRun()
	free, held = fl.persisted(tx.meta.txid)
	if need := freelistBytes(len(free), len(held)); need > len(buf) {
		// Not reached (above); a commit that would write a short
		// freelist fails instead.
		return fmt.Errorf("pagefile: the freelist needs %d bytes, %d were taken for it", need, len(buf))
	}
	encodeFreelist(buf, free, held)
	tx.seal(buf, typeFreelist, 0, id)
	tx.meta.freelist = id
	return nil
}

// smallCommitPages is the largest commit that extends the file for a
// contiguous run rather than filling scattered free pages.
const smallCommitPages = 64

// reserveRun estimates the pages the commit will write (every materialized
// node, split as spill will split it, the directory path and the freelist)
// and reserves a free run that long, best fit, or (small commits, when free
// pages are scarce) a run at the end of the file. Spill then fills it in order; when the
// estimate falls short, allocation goes on page by page.
func (tx *Tx) reserveRun(touched []*Bucket) {
	ps := tx.db.pageSize
	var need, nodes pgid
	count := func(b *Bucket) {
		for _, n := range b.nodes {
			need += n.estimatePages(ps)
			nodes++
		}
		if b.rootNode != nil && b.rootNode.pgid == 0 {
			need += b.rootNode.estimatePages(ps)
			nodes++
		}
	}
	for _, b := range touched {
		count(b)
	}
	count(tx.dir)
	fl := tx.db.freelist
	extents := len(fl.free) + fl.pendingExtents() + int(nodes) + 8
	need += pgid((freelistBytes(extents, 0) + ps - 1) / ps)
	if tx.dir.rootNode == nil {
		need++ // the directory leaf that will name the buckets' new roots
	}
	if start, n := fl.reserve(need, max(need/2, 2)); n > 0 {
		tx.run.from, tx.run.next, tx.run.end = start, start, start+n
		return
	}
	// No run: while free pages are few, a small commit takes a fresh run at
	// the end of the file, so that commits settle into recycling whole runs
	// rather than interleaving page by page. Otherwise pages are taken first
	// fit: free pages first, then consecutive pages past the high-water mark
	// (contiguous anyway). The file grows by at most a couple of small
	// commits' worth beyond what first fit alone would use.
	if need <= smallCommitPages && fl.freeCount() <= 2*need {
		start := tx.meta.highWater
		tx.meta.highWater += need
		fl.noteExtend(start, need)
		tx.run.from, tx.run.next, tx.run.end = start, start, start+need
	}
}

// runIsLast reports whether the reserved run is an extension (taken past
// the committed high-water mark) that is still the file's last pages:
// its unused end is given back by lowering the mark, not to the free list.
func (tx *Tx) runIsLast() bool {
	return tx.run.end == tx.meta.highWater && tx.run.from >= tx.base.highWater
}

// releaseRun gives back the unused end of the reserved run.
func (tx *Tx) releaseRun() {
	r, last := tx.run, tx.runIsLast()
	tx.run.from, tx.run.next, tx.run.end = 0, 0, 0
	if r.next == r.end {
		return
	}
	fl := tx.db.freelist
	if last {
		tx.meta.highWater = r.next
		fl.shrinkExtend(r.from, r.end-r.next)
		return
	}
	fl.unreserve(r.from, r.next, r.end-r.next)
}

// grow extends the file to hold every page below the new high-water mark.
func (tx *Tx) grow() error {
	db := tx.db
	need := int64(tx.meta.highWater) * int64(db.pageSize)
	if need <= db.fileSize {
		return nil
	}
	if err := failpoint.Hit("pagefile/grow"); err != nil {
		return err
	}
	size := db.growSize(need)
	if err := db.file.Allocate(db.fileSize, size-db.fileSize); err != nil {
		return err
	}
	db.fileSize = size
	return nil
}

// writeAndSync runs steps 4 to 7.
func (tx *Tx) writeAndSync() error {
	db := tx.db
	ps := int64(db.pageSize)
	ids := make([]pgid, 0, len(tx.pages))
	for id := range tx.pages {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var run [][]byte
	var runStart, next pgid
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		tx.stats.Write++
		_, err := vfs.WritevAt(db.file, run, int64(runStart)*ps)
		run = run[:0]
		return err
	}
	for _, id := range ids {
		buf := tx.pages[id]
		if len(run) > 0 && id != next {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(run) == 0 {
			runStart = id
		}
		run = append(run, buf)
		next = id + pgid(len(buf)/db.pageSize)
	}
	if err := flush(); err != nil {
		return err
	}
	if err := failpoint.Hit("pagefile/beforeDataSync"); err != nil {
		return err
	}
	if err := db.sync(); err != nil {
		return err
	}
	if err := failpoint.Hit("pagefile/beforeMetaWrite"); err != nil {
		return err
	}
	slot := pgid(tx.meta.txid % 2)
	var mbuf [metaSize]byte
	encodeMeta(mbuf[:], &tx.meta, slot)
	tx.stats.Write++
	if _, err := db.file.WriteAt(mbuf[:], int64(slot)*ps); err != nil {
		return err
	}
	if err := failpoint.Hit("pagefile/beforeMetaSync"); err != nil {
		return err
	}
	return db.sync()
}

// Rollback ends the transaction, discarding a writer's changes.
func (tx *Tx) Rollback() error {
	if tx.managed {
		return ErrManagedTx
	}
	if tx.db == nil {
		return ErrTxClosed
	}
	tx.rollback()
	return nil
}

func (tx *Tx) rollback() {
	if tx.db == nil {
		return
	}
	tx.run.from, tx.run.next, tx.run.end = 0, 0, 0
	if tx.writable {
		tx.db.freelist.rollback(tx.meta.txid)
	}
	tx.close()
}

// close releases the transaction's hold on the database.
func (tx *Tx) close() {
	db := tx.db
	if db == nil {
		return
	}
	if tx.writable {
		for _, buf := range tx.pages {
			db.pagePool.put(buf)
		}
		tx.pages = nil
		db.endWrite(tx)
	} else {
		db.endRead(tx)
	}
	tx.db = nil
	tx.dir, tx.buckets, tx.roots = nil, nil, nil
}

// WriteTo writes a consistent copy of the whole database, as of the state
// the transaction began from, to w. The copy opens as an ordinary page file.
// A read transaction does not block writers while it copies.
func (tx *Tx) WriteTo(w io.Writer) (int64, error) {
	if tx.db == nil {
		return 0, ErrTxClosed
	}
	ps := tx.db.pageSize
	m := tx.base
	var total int64
	// Two metas for the same tree: the transaction's own in its slot, and
	// the same state one id earlier in the other, so that the copy opens
	// even if one of them is damaged later.
	metas := make([]byte, 2*ps)
	for slot := pgid(0); slot < 2; slot++ {
		mm := m
		if pgid(mm.txid%2) != slot {
			mm.txid--
		}
		encodeMeta(metas[int(slot)*ps:], &mm, slot)
	}
	n, err := w.Write(metas)
	total += int64(n)
	if err != nil {
		return total, err
	}
	const chunk = 4 << 20
	end := int64(m.highWater) * int64(ps)
	// The map is advised random: each chunk is asked for whole, one ahead
	// of its write, rather than faulted in a page at a time.
	if start := int64(2 * ps); start < end {
		_ = vfs.MadviseWillNeed(tx.data[start:min(start+chunk, end)])
	}
	for off := int64(2 * ps); off < end; off += chunk {
		hi := min(off+chunk, end)
		if hi < end {
			_ = vfs.MadviseWillNeed(tx.data[hi:min(hi+chunk, end)])
		}
		n, err := w.Write(tx.data[off:hi])
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// recoverCorrupt turns a corruption met in a read path into the
// transaction's error (and into *err, if err is not nil). Any other panic
// goes on. Use it directly in a defer: recover only works there.
func (tx *Tx) recoverCorrupt(err *error) {
	if r := recover(); r != nil {
		cp, ok := r.(corruptPanic)
		if !ok {
			panic(r)
		}
		if tx.err == nil {
			tx.err = cp.err
		}
		if err != nil {
			*err = cp.err
		}
	}
}
