package pagefile

import (
	"bytes"
	"fmt"
	"slices"
)

// Bucket is a flat, ordered collection of keys in a transaction. Keys and
// values returned by Get, a Cursor or ForEach point into the memory map (or
// into the write transaction's memory) and are valid only until the
// transaction ends; copy them to keep them. Never modify them.
type Bucket struct {
	tx   *Tx
	name []byte // nil for the bucket directory
	root pgid   // root page as of the transaction's start (0: created in this tx)

	// Write transactions only: nodes materialized for change, by page id.
	rootNode *node
	nodes    map[pgid]*node
	deleted  bool
}

// Name returns the bucket's name.
func (b *Bucket) Name() []byte { return b.name }

// Tx returns the bucket's transaction.
func (b *Bucket) Tx() *Tx { return b.tx }

// Writable reports whether the bucket can be changed.
func (b *Bucket) Writable() bool { return b.tx.writable }

// ref returns the page, or the node standing in for it, with id.
func (b *Bucket) ref(id pgid) elemRef {
	if b.nodes != nil {
		if n, ok := b.nodes[id]; ok {
			return elemRef{node: n, id: id}
		}
	}
	p := b.tx.page(id)
	return elemRef{page: p, id: id, n: pageCount(p), leaf: pageType(p) == typeLeaf}
}

func (b *Bucket) rootRef() elemRef {
	if b.rootNode != nil {
		return elemRef{node: b.rootNode, id: b.rootNode.pgid}
	}
	if b.root == 0 && b.name != nil {
		return elemRef{leaf: true} // an empty bucket keeps no page
	}
	return b.ref(b.root)
}

// node materializes the page id as a node under parent.
func (b *Bucket) node(id pgid, parent *node) *node {
	if n, ok := b.nodes[id]; ok {
		return n
	}
	if id == 0 && parent == nil && b.name != nil {
		// An empty bucket keeps no page: its root is a new, empty leaf.
		b.rootNode = &node{bucket: b, leaf: true, appendOnly: true}
		return b.rootNode
	}
	n := &node{bucket: b, parent: parent}
	if parent == nil {
		b.rootNode = n
	} else {
		parent.children = append(parent.children, n)
	}
	p := b.tx.page(id)
	if t := pageType(p); t != typeLeaf && t != typeBranch {
		corruptf(id, "page type %d in a tree", t)
	}
	n.read(p, id)
	b.nodes[id] = n
	return n
}

// Cursor returns a cursor over the bucket, valid for the transaction's life.
func (b *Bucket) Cursor() *Cursor {
	b.tx.stats.CursorCount++
	return &Cursor{bucket: b, stack: make([]elemRef, 0, 8)}
}

// Get returns the value of key, or nil if it is absent.
func (b *Bucket) Get(key []byte) []byte {
	defer b.tx.recoverCorrupt(nil)
	c := b.tx.scratchCursor(b)
	c.seek(key)
	k, v := c.current()
	if k == nil || !bytes.Equal(k, key) {
		return nil
	}
	if v == nil {
		return []byte{}
	}
	return v
}

// Put sets key to value. Both are copied. Only in a write transaction.
func (b *Bucket) Put(key, value []byte) error { return b.put(key, value, true) }

// PutOwned is Put without the copy: the bucket keeps key and value until
// the transaction ends, and the caller must not change them.
func (b *Bucket) PutOwned(key, value []byte) error { return b.put(key, value, false) }

func (b *Bucket) put(key, value []byte, copied bool) (err error) {
	if err := b.writeCheck(); err != nil {
		return err
	}
	if len(key) == 0 {
		return ErrKeyRequired
	}
	if len(key) > MaxKeySize {
		return ErrKeyTooLarge
	}
	if int64(len(value)) > MaxValueSize {
		return ErrValueTooLarge
	}
	defer b.tx.recoverCorrupt(&err)
	c := b.tx.scratchCursor(b)
	c.seek(key)
	if copied {
		buf := make([]byte, len(key)+len(value))
		copy(buf, key)
		copy(buf[len(key):], value)
		key, value = buf[:len(key):len(key)], buf[len(key):]
	}
	c.node().put(key, key, value, 0)
	b.tx.recordKey(b, key)
	return nil
}

// Delete removes key; deleting an absent key is not an error. Only in a
// write transaction.
func (b *Bucket) Delete(key []byte) (err error) {
	if err := b.writeCheck(); err != nil {
		return err
	}
	defer b.tx.recoverCorrupt(&err)
	c := b.tx.scratchCursor(b)
	c.seek(key)
	k, _ := c.current()
	if k == nil || !bytes.Equal(k, key) {
		return nil
	}
	c.node().del(key)
	b.tx.recordKey(b, key)
	return nil
}

func (b *Bucket) writeCheck() error {
	switch {
	case b.tx.db == nil:
		return ErrTxClosed
	case !b.tx.writable:
		return ErrTxNotWritable
	case b.deleted:
		return ErrBucketNotFound
	}
	return b.tx.err
}

// ForEach calls fn for every key in order, stopping at fn's first error.
// fn must not change the bucket.
func (b *Bucket) ForEach(fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return b.tx.err
}

// BucketStats describes a bucket's tree.
type BucketStats struct {
	KeyN          int // keys
	Depth         int // levels, root to leaf
	BranchPageN   int // branch pages
	LeafPageN     int // leaf pages (runs)
	LeafOverflowN int // pages past the first in leaf runs
	BranchInuse   int // bytes used in branch pages
	LeafInuse     int // bytes used in leaf pages
	BranchAlloc   int // bytes of branch pages
	LeafAlloc     int // bytes of leaf pages
}

// Stats walks the committed pages of the bucket (changes not yet committed
// in a write transaction are not counted).
func (b *Bucket) Stats() (s BucketStats) {
	defer b.tx.recoverCorrupt(nil)
	if b.root == 0 {
		return s
	}
	var walk func(id pgid, depth int)
	walk = func(id pgid, depth int) {
		if depth > maxDepth {
			corruptf(id, "tree deeper than %d levels (a cycle?)", maxDepth)
		}
		if depth > s.Depth {
			s.Depth = depth
		}
		p := b.tx.page(id)
		n := pageCount(p)
		switch pageType(p) {
		case typeLeaf:
			s.KeyN += n
			s.LeafPageN++
			s.LeafOverflowN += int(pageOverflow(p))
			s.LeafAlloc += len(p)
			used := pageHeaderSize + n*leafElemSize
			for i := 0; i < n; i++ {
				k, v := leafElem(p, id, i)
				used += len(k) + len(v)
			}
			s.LeafInuse += used
		case typeBranch:
			s.BranchPageN++
			s.BranchAlloc += len(p)
			used := pageHeaderSize + n*branchElemSize
			for i := 0; i < n; i++ {
				k, child := branchElem(p, id, i)
				used += len(k)
				walk(child, depth+1)
			}
			s.BranchInuse += used
		default:
			corruptf(id, "page type %d in a tree", pageType(p))
		}
	}
	walk(b.root, 1)
	return s
}

// rebalance merges nodes left small by deletes.
func (b *Bucket) rebalance() {
	// Visit in page order so the same operations always give the same file.
	ids := make([]pgid, 0, len(b.nodes))
	for id := range b.nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if n, ok := b.nodes[id]; ok {
			n.rebalance()
		}
	}
	if b.rootNode != nil {
		b.rootNode.rebalance()
	}
}

// spill writes the bucket's changed nodes to new pages and returns the new
// root page: 0 for a bucket left empty, which keeps no page.
func (b *Bucket) spill() (pgid, error) {
	if b.rootNode == nil {
		return b.root, nil
	}
	root := b.rootNode.root()
	if b.name != nil && root.leaf && len(root.inodes) == 0 {
		if root.pgid != 0 {
			b.tx.freePage(root.pgid)
			root.pgid = 0
		}
		b.rootNode = root
		return 0, nil
	}
	if err := root.spill(); err != nil {
		return 0, err
	}
	b.rootNode = root.root()
	return b.rootNode.pgid, nil
}

func (b *Bucket) String() string { return fmt.Sprintf("bucket %q", b.name) }

// bucket headers (the directory's values).

func encodeBucketHeader(root pgid) []byte {
	buf := make([]byte, bucketHeaderSize)
	le.PutUint64(buf, uint64(root))
	return buf
}

func decodeBucketHeader(v []byte, name []byte) pgid {
	if len(v) != bucketHeaderSize {
		corruptf(0, "bucket %q has a header of %d bytes", name, len(v))
	}
	return pgid(le.Uint64(v))
}
