package pagefile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cairn-kv/cairn/internal/vfs"
)

// Compact writes a defragmented copy of the database to dstPath, which must
// not exist. It reads one read transaction, so writers go on meanwhile (the
// copy holds the state as of its start), and builds the copy bottom-up in
// one sequential pass: leaves packed full in key order, then each level of
// branches above them, then the bucket directory. The copy has no free
// pages. Memory stays bounded: one partly filled node per tree level.
//
// The copy is written, synced, given its metas, synced again, and its
// directory synced before Compact returns. A crash part way leaves a file
// at dstPath that does not open (no valid meta); remove it and start again.
func (db *DB) Compact(dstPath string) error {
	return db.View(func(tx *Tx) error { return tx.CompactTo(dstPath, nil) })
}

// CompactOptions tunes a compacted copy.
type CompactOptions struct {
	// Duty is the share of the copy's time spent copying, in (0, 1]:
	// after each PaceStep bytes of pages the copy rests for as long as
	// the work took times (1-Duty)/Duty. A copy made beside a busy store
	// (an online defragmentation) so leaves it most of the CPU and the
	// disk; it takes 1/Duty times as long. 0 means 1: no rests.
	Duty float64
}

// PaceStep is the work between two rests of a paced copy: 1 MiB of pages
// is a few milliseconds of work, below a scheduler's time slice.
const PaceStep = 1 << 20

// CompactTo writes a defragmented copy of the state tx sees to dstPath,
// which must not exist, as Compact does. A read transaction held for it
// keeps a consistent copy while writers go on; the caller ends tx. opts
// may be nil.
func (tx *Tx) CompactTo(dstPath string, opts *CompactOptions) error {
	fs := tx.db.fs
	if _, err := fs.Stat(dstPath); err == nil {
		return fmt.Errorf("pagefile: compact: %s already exists", dstPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if opts == nil {
		opts = &CompactOptions{}
	}
	if opts.Duty < 0 || opts.Duty > 1 {
		return fmt.Errorf("pagefile: compact: duty %v is not in (0, 1]", opts.Duty)
	}
	f, err := fs.OpenFile(dstPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = compactInto(f, tx, opts)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.SyncDir(filepath.Dir(dstPath))
	}
	return err
}

// compactInto writes the state tx sees to f.
func compactInto(f vfs.File, tx *Tx, opts *CompactOptions) error {
	ps := tx.db.pageSize
	w := &bulkWriter{f: f, ps: ps, next: 3, wb: vfs.NewWriteback(f, bulkWritebackStep)} // pages 0, 1: metas; 2: the freelist
	if opts.Duty > 0 && opts.Duty < 1 {
		w.pace = &pacer{duty: opts.Duty, since: time.Now()}
	}
	var buckets []inode
	err := tx.ForEach(func(name []byte, b *Bucket) error {
		t := w.newTree()
		// The copy reads every page of the file: ask for the leaves a
		// window ahead of it, and for each long value before it is
		// copied, rather than fault them in a page at a time. (An error
		// is the tx's, below.)
		ahead := tx.scanAhead(b.root, scanAheadBytes/ps, tx.willNeedRuns)
		c := b.Cursor()
		keys := 0
		for k, v := c.First(); k != nil; k, v = c.Next() {
			ahead.at(c.leafPage())
			if len(v) >= WillNeedBytes {
				tx.WillNeed(v)
			}
			if err := t.add(k, v); err != nil {
				return err
			}
			keys++
		}
		if ahead.err != nil && tx.err == nil {
			tx.err = ahead.err
		}
		if err := tx.err; err != nil {
			return err
		}
		var root pgid // an empty bucket keeps no page
		if keys > 0 {
			var err error
			if root, err = t.finish(); err != nil {
				return err
			}
		}
		buckets = append(buckets, inode{key: name, value: encodeBucketHeader(root)})
		return nil
	})
	if err != nil {
		return err
	}
	dir := w.newTree()
	for _, b := range buckets {
		if err := dir.add(b.key, b.value); err != nil {
			return err
		}
	}
	root, err := dir.finish()
	if err != nil {
		return err
	}
	fl := make([]byte, ps)
	encodeFreelist(fl, nil, nil)
	sealPage(fl, typeFreelist, 0, 2, bulkTxid, 0)
	if _, err := f.WriteAt(fl, 2*int64(ps)); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	// Both metas name the same tree; written only once the pages are
	// durable, so a crash before this leaves a file that does not open.
	metas := make([]byte, 2*ps)
	m := meta{pageSize: uint32(ps), root: root, freelist: 2, highWater: w.next}
	for slot := pgid(0); slot < 2; slot++ {
		m.txid = txid(slot)
		encodeMeta(metas[int(slot)*ps:], &m, slot)
	}
	if _, err := f.WriteAt(metas, 0); err != nil {
		return err
	}
	return f.Sync()
}

// bulkTxid is the transaction id stamped on a compacted file's pages: its
// metas are transactions 0 and 1.
const bulkTxid = 0

// bulkWriter lays out pages in order and writes them in large sequential
// chunks.
type bulkWriter struct {
	f     vfs.File
	ps    int
	next  pgid   // the next page id to hand out
	buf   []byte // pages not yet written, starting at page bufAt
	bufAt pgid
	// wb keeps the copy's dirty pages from piling up in the kernel: a
	// sync of the whole copy at the end would write it all back at once,
	// and every fdatasync of the live file (a commit) meanwhile would
	// queue behind it. Starting each step's writeback (sync_file_range)
	// bounds them without the journal commit and cache flush an
	// fdatasync is on ext4. (Unpaced, the copy written back so ran faster
	// than one synced every 2 MiB and slowed puts more; paced, the two
	// have not been compared: docs/bench.md.)
	wb   *vfs.Writeback
	pace *pacer // nil: no rests
}

// pacer rests a copy between steps of work (CompactOptions.Duty).
type pacer struct {
	duty  float64
	since time.Time // the end of the last rest
	bytes int       // pages laid out since then
}

// restHook, when set (by tests), is called at each rest.
var restHook func()

// laid counts n bytes of pages laid out, resting once they reach a step.
func (p *pacer) laid(n int) {
	p.bytes += n
	if p.bytes < PaceStep {
		return
	}
	Rest(p.since, p.duty)
	if restHook != nil {
		restHook()
	}
	p.bytes = 0
	p.since = time.Now()
}

// Rest sleeps after work that began at start for as long as a duty of
// duty asks: the work's time times (1-duty)/duty (CompactOptions.Duty).
// Work carried on beside a copy (an online defragmentation's rounds) rests
// with it.
func Rest(start time.Time, duty float64) {
	if duty > 0 && duty < 1 {
		time.Sleep(time.Duration(float64(time.Since(start)) * (1 - duty) / duty))
	}
}

// The copy is written bulkChunk at a time and written back
// bulkWritebackStep at a time. Small steps keep what the disk has queued
// of the copy ahead of a commit's fdatasync small: at most 2 MiB, about
// 11 ms on a disk of about 180 MB/s (with 8 MiB steps the live WAL's syncs
// took 43-65 ms beside the copy now and then; docs/bench.md). And a write
// of 1 MiB into the page cache took 2.5-3.4 ms of a core where, of the
// 4 MiB writes, 695 in a copy of 2.75 GB took over 8 ms (up to 31 ms).
const (
	bulkChunk         = 1 << 20
	bulkWritebackStep = 1 << 20
)

// page appends a sealed node of the given type and returns its id.
func (w *bulkWriter) page(n *node) (pgid, error) {
	size := n.size()
	pages := (size + w.ps - 1) / w.ps
	if len(w.buf) == 0 {
		w.bufAt = w.next
	}
	id := w.next
	w.next += pgid(pages)
	start := len(w.buf)
	w.buf = append(w.buf, make([]byte, pages*w.ps)...)
	p := w.buf[start:]
	n.write(p)
	typ := uint16(typeBranch)
	if n.leaf {
		typ = typeLeaf
	}
	sealPage(p, typ, len(n.inodes), id, bulkTxid, pages-1)
	if w.pace != nil {
		w.pace.laid(pages * w.ps)
	}
	if len(w.buf) >= bulkChunk {
		return id, w.flush()
	}
	return id, nil
}

func (w *bulkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	off := int64(w.bufAt) * int64(w.ps)
	_, err := w.f.WriteAt(w.buf, off)
	end := off + int64(len(w.buf))
	w.buf = w.buf[:0]
	if err == nil {
		err = w.wb.Wrote(end)
	}
	return err
}

// bulkTree builds one B+tree from keys given in order: levels[0] is the
// leaf being filled, levels[i] the branch above it.
type bulkTree struct {
	w      *bulkWriter
	levels []*node
	sizes  []int // levels[i].size(), kept as elements are added
}

func (w *bulkWriter) newTree() *bulkTree {
	return &bulkTree{w: w, levels: []*node{{leaf: true}}, sizes: []int{pageHeaderSize}}
}

// add appends a key (greater than every key before it) to the leaf level.
func (t *bulkTree) add(k, v []byte) error {
	return t.push(0, inode{key: k, value: v})
}

// push appends an element to a level, writing the level's node out first if
// the element would not fit on its page.
func (t *bulkTree) push(level int, in inode) error {
	n := t.levels[level]
	esz := n.elemSize(&in)
	if len(n.inodes) > 0 && t.sizes[level]+esz > t.w.ps {
		if err := t.emit(level); err != nil {
			return err
		}
		n = t.levels[level]
	}
	n.inodes = append(n.inodes, in)
	t.sizes[level] += esz
	return nil
}

// emit writes a level's node and pushes its first key and page to the level
// above.
func (t *bulkTree) emit(level int) error {
	n := t.levels[level]
	id, err := t.w.page(n)
	if err != nil {
		return err
	}
	t.levels[level] = &node{leaf: n.leaf}
	t.sizes[level] = pageHeaderSize
	if level+1 == len(t.levels) {
		t.levels = append(t.levels, &node{})
		t.sizes = append(t.sizes, pageHeaderSize)
	}
	return t.push(level+1, inode{key: n.inodes[0].key, pgid: id})
}

// finish writes the nodes still being filled, bottom-up, and returns the
// root page.
func (t *bulkTree) finish() (pgid, error) {
	for level := 0; ; level++ {
		n := t.levels[level]
		if level == len(t.levels)-1 {
			// The top level: its node is the root (an empty leaf for an
			// empty tree), or, a branch with one child, that child is.
			if !n.leaf && len(n.inodes) == 1 {
				return n.inodes[0].pgid, nil
			}
			return t.w.page(n)
		}
		if len(n.inodes) > 0 {
			if err := t.emit(level); err != nil {
				return 0, err
			}
		}
	}
}
