package pagefile

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"github.com/cairn-kv/cairn/internal/invariants"
)

// maxCheckErrors bounds how many problems Check reports.
const maxCheckErrors = 10

// Check verifies the whole latest committed state and the writer's in-memory
// free-page accounting: see Tx.Check for the list. It waits for the open
// write transaction, if any, and blocks writers while it runs.
func (db *DB) Check() error {
	db.rwlock.Lock()
	defer db.rwlock.Unlock()
	tx, err := db.beginRead()
	if err != nil {
		return err
	}
	defer tx.rollback()
	if err := tx.Check(); err != nil {
		return err
	}
	// The bucket roots read transactions share are the directory's.
	for name, root := range tx.roots {
		v := tx.dir.Get([]byte(name))
		if v == nil || decodeBucketHeader(v, []byte(name)) != root {
			return &CorruptError{Msg: fmt.Sprintf("bucket %q: shared root %d, the directory says %x", name, root, v)}
		}
	}
	if db.freelist == nil {
		return nil
	}
	// In memory, free and every pending list together must be exactly the
	// pages the committed freelist names.
	var mem []extent
	for _, es := range db.freelist.pending {
		mem = append(mem, es...)
	}
	mem = mergeExtents(db.freelist.free, mem)
	p := tx.page(tx.base.freelist)
	free, held, err := decodeFreelist(p, tx.base.freelist, tx.base.highWater)
	if err != nil {
		return err
	}
	disk := mergeExtents(free, held)
	if f, p := db.freelist.recount(); f != db.freelist.freeN || p != db.freelist.pendingN {
		return &CorruptError{Msg: fmt.Sprintf("free page counters %d/%d, lists hold %d/%d", db.freelist.freeN, db.freelist.pendingN, f, p)}
	}
	if !slices.Equal(mem, disk) {
		return &CorruptError{Msg: fmt.Sprintf("in-memory free pages %v differ from the committed freelist %v", mem, disk)}
	}
	return nil
}

// Check verifies the state the transaction sees, page by page:
//
//   - every page id is below the high-water mark and each page's header names
//     it; runs do not pass the mark;
//   - page checksums match; page types fit where they are found; no page was
//     written by a transaction later than the state's own;
//   - no page is referenced twice; none is both reachable and free; none is
//     free twice; every page below the mark is reachable or free;
//   - keys are in strictly increasing order within each page, inside the
//     bounds their parent gives, and each branch key is its child's first key;
//   - every leaf of a tree is at the same depth; bucket headers are sound.
//
// It returns nil or an error matching ErrCorrupt that lists what it found.
func (tx *Tx) Check() error {
	if tx.db == nil {
		return ErrTxClosed
	}
	c := &checker{tx: tx, seen: make([]uint8, tx.base.highWater)}
	c.seen[0], c.seen[1] = seenMeta, seenMeta
	c.run(func() { c.tree(tx.base.root, nil, true) })
	c.run(func() { c.freelist() })
	for id := pgid(2); id < tx.base.highWater && len(c.errs) < maxCheckErrors; id++ {
		if c.seen[id] == 0 {
			c.fail(id, "page is neither reachable nor free")
		}
	}
	if size := tx.db.fileSizeSnapshot(); int64(tx.base.highWater)*int64(tx.db.pageSize) > size {
		c.fail(0, fmt.Sprintf("high-water mark %d pages lies past the file's %d bytes", tx.base.highWater, size))
	}
	return errors.Join(c.errs...)
}

const (
	seenMeta = iota + 1
	seenTree
	seenFree
)

type checker struct {
	tx   *Tx
	seen []uint8
	errs []error
}

func (c *checker) fail(id pgid, msg string) {
	if len(c.errs) < maxCheckErrors {
		c.errs = append(c.errs, &CorruptError{Page: id, Msg: msg})
	}
}

// run calls fn, turning a corruption panic from a page accessor into an
// error.
func (c *checker) run(fn func()) {
	defer func() {
		if r := recover(); r != nil {
			cp, ok := r.(corruptPanic)
			if !ok {
				panic(r)
			}
			c.errs = append(c.errs, cp.err)
		}
	}()
	fn()
}

// mark records a run as seen in a role, reporting overlaps.
func (c *checker) mark(id pgid, n pgid, role uint8) bool {
	ok := true
	for i := id; i < id+n; i++ {
		switch c.seen[i] {
		case 0:
			c.seen[i] = role
		case seenTree:
			if role == seenTree {
				c.fail(i, "page referenced twice")
			} else {
				c.fail(i, "page is both reachable and free")
			}
			ok = false
		case seenFree:
			if role == seenFree {
				c.fail(i, "page freed twice")
			} else {
				c.fail(i, "page is both reachable and free")
			}
			ok = false
		default:
			c.fail(i, "a meta page is used as a data page")
			ok = false
		}
	}
	return ok
}

// tree checks the tree rooted at id. dir says it is the bucket directory,
// whose values are bucket headers to follow.
func (c *checker) tree(root pgid, name []byte, dir bool) {
	leafDepth := -1
	var walk func(id pgid, lo, hi []byte, depth int)
	walk = func(id pgid, lo, hi []byte, depth int) {
		if len(c.errs) >= maxCheckErrors {
			return
		}
		if depth > maxDepth {
			c.fail(id, "tree too deep (a cycle?)")
			return
		}
		p := c.tx.page(id)
		if !c.mark(id, pgid(pageOverflow(p))+1, seenTree) {
			return
		}
		if len(p) >= WillNeedBytes {
			c.tx.WillNeed(p) // the checksum reads the whole run
		}
		if !pageChecksumOK(p) {
			c.fail(id, "checksum mismatch")
			return
		}
		if w := txid(le.Uint64(p[hdrTxid:])); w > c.tx.base.txid {
			c.fail(id, fmt.Sprintf("written by tx %d, after the state's tx %d", w, c.tx.base.txid))
			return
		}
		n := pageCount(p)
		var prev []byte
		inBounds := func(i int, k []byte) bool {
			if prev != nil && bytes.Compare(prev, k) >= 0 {
				c.fail(id, fmt.Sprintf("key %d out of order", i))
				return false
			}
			if (lo != nil && bytes.Compare(k, lo) < 0) || (hi != nil && bytes.Compare(k, hi) >= 0) {
				c.fail(id, fmt.Sprintf("key %d outside the bounds its parent gives", i))
				return false
			}
			prev = k
			return true
		}
		switch pageType(p) {
		case typeLeaf:
			if leafDepth == -1 {
				leafDepth = depth
			} else if depth != leafDepth {
				c.fail(id, fmt.Sprintf("leaf at depth %d, others at %d", depth, leafDepth))
			}
			if n == 0 && depth != 0 {
				c.fail(id, "empty leaf below the root")
			}
			for i := 0; i < n; i++ {
				k, v := leafElem(p, id, i)
				if len(k) == 0 {
					c.fail(id, fmt.Sprintf("key %d is empty", i))
				}
				if !inBounds(i, k) {
					return
				}
				if dir {
					if len(v) != bucketHeaderSize {
						c.fail(id, fmt.Sprintf("bucket %q has a header of %d bytes", k, len(v)))
						continue
					}
					if broot := pgid(le.Uint64(v)); broot != 0 { // 0: an empty bucket
						c.tree(broot, k, false)
					}
				}
			}
		case typeBranch:
			if n == 0 {
				c.fail(id, "empty branch page")
				return
			}
			for i := 0; i < n; i++ {
				k, child := branchElem(p, id, i)
				if !inBounds(i, k) {
					return
				}
				var next []byte = hi
				if i+1 < n {
					next = branchKey(p, id, i+1)
				}
				if first := c.firstKey(child); first != nil && !bytes.Equal(first, k) {
					c.fail(id, fmt.Sprintf("branch key %d is not its child's first key", i))
				}
				walk(child, k, next, depth+1)
			}
		default:
			c.fail(id, fmt.Sprintf("page type %d inside the tree of %q", pageType(p), name))
		}
	}
	// Every page is read: ask for the tree's pages ahead (what is wrong
	// with them, the walk reports).
	_ = c.tx.readAhead(root)
	c.run(func() { walk(root, nil, nil, 0) })
}

// firstKey returns the first key stored in the page id (nil if empty or
// not a tree page).
func (c *checker) firstKey(id pgid) []byte {
	p := c.tx.page(id)
	if pageCount(p) == 0 {
		return nil
	}
	switch pageType(p) {
	case typeLeaf:
		return leafKey(p, id, 0)
	case typeBranch:
		return branchKey(p, id, 0)
	}
	return nil
}

func (c *checker) freelist() {
	id := c.tx.base.freelist
	p := c.tx.page(id)
	if !c.mark(id, pgid(pageOverflow(p))+1, seenTree) {
		return
	}
	if pageType(p) != typeFreelist {
		c.fail(id, "meta's freelist page is not a freelist")
		return
	}
	if !pageChecksumOK(p) {
		c.fail(id, "checksum mismatch")
		return
	}
	free, held, err := decodeFreelist(p, id, c.tx.base.highWater)
	if err != nil {
		c.errs = append(c.errs, err)
		return
	}
	for _, e := range append(free, held...) {
		c.mark(e.start, e.n, seenFree)
	}
}

func (db *DB) fileSizeSnapshot() int64 {
	size, err := db.file.Size()
	if err != nil {
		return 0
	}
	return size
}

// verifyCommitLocked asserts copy-on-write (invariants builds only): no page
// this commit writes is reachable from either meta on disk, the state it
// began from or the one before, so a torn commit always has an intact tree
// to fall back to. Only for a state that passed Check (db.checkedGood): a
// file damaged when opened has no trees to vouch for.
func (db *DB) verifyCommitLocked(tx *Tx) {
	if !invariants.Enabled || tx.base.highWater > 1<<14 || !db.checkedGood {
		return
	}
	live := map[pgid]bool{}
	metas := []meta{tx.base}
	buf := make([]byte, metaSize)
	other := pgid(1 - tx.base.txid%2)
	if _, err := db.file.ReadAt(buf, int64(other)*int64(db.pageSize)); err == nil {
		if m, err := decodeMeta(buf, other); err == nil && m.txid+1 == tx.base.txid {
			metas = append(metas, *m)
		}
	}
	// The meta before the base may hold a tree damaged before the file was
	// opened: what it reaches up to the damage is marked.
	for i, m := range metas {
		if err := markLive(db, tx, m, live); err != nil && i == 0 {
			panic(fmt.Sprintf("pagefile: commit %d began from a state that does not read: %v", tx.meta.txid, err))
		}
	}
	for id, buf := range tx.pages {
		for i := id; i < id+pgid(len(buf)/db.pageSize); i++ {
			if live[i] {
				panic(fmt.Sprintf("pagefile: commit %d overwrites page %d, reachable from a meta on disk", tx.meta.txid, i))
			}
		}
	}
}

// walkPages calls fn for every page run of the tree at root (following
// bucket headers when dir is set).
func (tx *Tx) walkPages(root pgid, dir bool, fn func(id, n pgid)) {
	tx.walkPagesDepth(root, dir, fn, 0)
}

func (tx *Tx) walkPagesDepth(root pgid, dir bool, fn func(id, n pgid), depth int) {
	if depth > maxDepth {
		corruptf(root, "tree deeper than %d levels (a cycle?)", maxDepth)
	}
	p := tx.page(root)
	fn(root, pgid(pageOverflow(p))+1)
	n := pageCount(p)
	switch pageType(p) {
	case typeBranch:
		for i := 0; i < n; i++ {
			_, child := branchElem(p, root, i)
			tx.walkPagesDepth(child, dir, fn, depth+1)
		}
	case typeLeaf:
		if dir {
			for i := 0; i < n; i++ {
				_, v := leafElem(p, root, i)
				if broot := pgid(le.Uint64(v)); broot != 0 { // 0: an empty bucket
					tx.walkPagesDepth(broot, false, fn, depth+1)
				}
			}
		}
	}
}

// markLive marks in live every page m's tree and freelist reach, and
// returns the corruption met on the way, if any.
func markLive(db *DB, tx *Tx, m meta, live map[pgid]bool) (err error) {
	r := &Tx{db: db, base: m, meta: m, data: tx.data}
	defer r.recoverCorrupt(&err)
	r.walkPages(m.root, true, func(id pgid, n pgid) {
		for i := id; i < id+n; i++ {
			live[i] = true
		}
	})
	p := r.page(m.freelist)
	for i := pgid(0); i <= pgid(pageOverflow(p)); i++ {
		live[m.freelist+i] = true
	}
	return nil
}
