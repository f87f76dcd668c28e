package pagefile

import (
	"bytes"
	"sort"
)

// node is a page materialized in memory by a write transaction, so it can be
// changed. Keys and values point into the map or into memory the transaction
// owns; nothing is written until commit spills the node to new pages.
type node struct {
	bucket   *Bucket
	leaf     bool
	pgid     pgid    // the page this node was read from; 0 if new
	key      []byte  // the key this node sits under in its parent
	parent   *node   // nil for the root
	children []*node // materialized children, spilled before the parent
	inodes   []inode

	unbalanced bool // a delete may have left it too small
	spilled    bool
	// appendOnly is true while every put has landed past the node's last
	// key: keys arriving in order. Such a node is split full rather than in
	// half, so sequential loads (revisions) leave pages packed.
	appendOnly bool
}

// inode is one element: a key with a value (leaf) or a child page (branch).
type inode struct {
	key   []byte
	value []byte
	pgid  pgid
}

func (n *node) firstKey() []byte {
	if len(n.inodes) > 0 {
		return n.inodes[0].key
	}
	return n.key
}

func (n *node) root() *node {
	for n.parent != nil {
		n = n.parent
	}
	return n
}

// size is the byte size of the node as one page run.
func (n *node) size() int {
	sz := pageHeaderSize
	if n.leaf {
		for i := range n.inodes {
			sz += leafElemSize + len(n.inodes[i].key) + len(n.inodes[i].value)
		}
	} else {
		for i := range n.inodes {
			sz += branchElemSize + len(n.inodes[i].key)
		}
	}
	return sz
}

// sizeAtMost reports whether the node's page would take at most limit
// bytes, looking at no more elements than it must (splitting a large node
// asks this once per page split off).
func (n *node) sizeAtMost(limit int) bool {
	sz := pageHeaderSize
	for i := range n.inodes {
		if sz += n.elemSize(&n.inodes[i]); sz > limit {
			return false
		}
	}
	return true
}

func (n *node) elemSize(in *inode) int {
	if n.leaf {
		return leafElemSize + len(in.key) + len(in.value)
	}
	return branchElemSize + len(in.key)
}

func (n *node) minKeys() int {
	if n.leaf {
		return 1
	}
	return 2
}

// search returns the index of the first inode whose key is >= key.
func (n *node) search(key []byte) int {
	// Appends (keys in order, as revisions are) land past the last key:
	// one comparison instead of a binary search.
	if k := len(n.inodes); k > 0 && bytes.Compare(n.inodes[k-1].key, key) < 0 {
		return k
	}
	return sort.Search(len(n.inodes), func(i int) bool { return bytes.Compare(n.inodes[i].key, key) >= 0 })
}

// put inserts or replaces the element under oldKey with newKey.
func (n *node) put(oldKey, newKey, value []byte, child pgid) {
	i := n.search(oldKey)
	if i == len(n.inodes) || !bytes.Equal(n.inodes[i].key, oldKey) {
		if i < len(n.inodes) {
			n.appendOnly = false
		}
		n.inodes = append(n.inodes, inode{})
		copy(n.inodes[i+1:], n.inodes[i:])
	}
	in := &n.inodes[i]
	in.key, in.value, in.pgid = newKey, value, child
}

// del removes key if present.
func (n *node) del(key []byte) {
	i := n.search(key)
	if i == len(n.inodes) || !bytes.Equal(n.inodes[i].key, key) {
		return
	}
	n.inodes = append(n.inodes[:i], n.inodes[i+1:]...)
	n.unbalanced = true
	n.appendOnly = false
}

// read fills the node from a page run, pointing into the map.
func (n *node) read(p []byte, id pgid) {
	n.pgid = id
	n.leaf = pageType(p) == typeLeaf
	cnt := pageCount(p)
	n.inodes = make([]inode, cnt)
	for i := 0; i < cnt; i++ {
		in := &n.inodes[i]
		if n.leaf {
			in.key, in.value = leafElem(p, id, i)
		} else {
			in.key, in.pgid = branchElem(p, id, i)
		}
	}
	if cnt > 0 {
		n.key = n.inodes[0].key
	}
	n.appendOnly = true
}

// write serializes the node into a page run (header sealed by the caller).
func (n *node) write(p []byte) {
	off := pageHeaderSize
	esz := branchElemSize
	if n.leaf {
		esz = leafElemSize
	}
	data := off + esz*len(n.inodes)
	for i := range n.inodes {
		in := &n.inodes[i]
		le.PutUint32(p[off:], uint32(data))
		le.PutUint32(p[off+4:], uint32(len(in.key)))
		if n.leaf {
			le.PutUint32(p[off+8:], uint32(len(in.value)))
		} else {
			le.PutUint64(p[off+8:], uint64(in.pgid))
		}
		off += esz
		data += copy(p[data:], in.key)
		if n.leaf {
			data += copy(p[data:], in.value)
		}
	}
	clear(p[data:])
}

func (n *node) childIndex(child *node) int {
	return sort.Search(len(n.inodes), func(i int) bool { return bytes.Compare(n.inodes[i].key, child.key) >= 0 })
}

func (n *node) childAt(i int) *node {
	return n.bucket.node(n.inodes[i].pgid, n)
}

func (n *node) removeChild(target *node) {
	for i, c := range n.children {
		if c == target {
			n.children = append(n.children[:i], n.children[i+1:]...)
			return
		}
	}
}

// packFull reports whether the node should be split into full pages: keys
// have only been appended to it, and it is the rightmost node of its level,
// which is where in-order loads (revisions) land. A random insert that
// happens to fall after a leaf's last key does not qualify.
func (n *node) packFull() bool {
	if !n.appendOnly {
		return false
	}
	for c := n; c.parent != nil; c = c.parent {
		p := c.parent
		if len(p.inodes) == 0 || bytes.Compare(c.firstKey(), p.inodes[len(p.inodes)-1].key) < 0 {
			return false
		}
	}
	return true
}

// estimatePages is how many pages spill will likely write for the node:
// one, or the pieces split makes of it plus one for a new parent entry.
func (n *node) estimatePages(pageSize int) pgid {
	sz := n.size()
	if sz <= pageSize {
		return 1
	}
	fill := pageSize / 2
	if n.packFull() {
		fill = pageSize
	}
	return pgid((sz+fill-1)/fill) + 1
}

// split breaks an oversized node into nodes that each fit a page (a single
// element larger than a page gets a run of its own). Nodes filled in key
// order are packed full; others are split at half a page.
func (n *node) split(pageSize int) []*node {
	fill := pageSize / 2
	if n.packFull() {
		fill = pageSize
	}
	var nodes []*node
	cur := n
	for {
		a, b := cur.splitTwo(pageSize, fill)
		nodes = append(nodes, a)
		if b == nil {
			return nodes
		}
		cur = b
	}
}

// splitTwo splits off the first page's worth of n, returning n and the rest
// (or nil when n fits in a page).
func (n *node) splitTwo(pageSize, fill int) (*node, *node) {
	if len(n.inodes) <= n.minKeys()*2 || n.sizeAtMost(pageSize) {
		return n, nil
	}
	// Find the first index at which the page passes the fill threshold,
	// keeping at least minKeys on each side.
	sz := pageHeaderSize
	idx := 0
	for i := range n.inodes {
		esz := n.elemSize(&n.inodes[i])
		if i >= n.minKeys() && i < len(n.inodes)-n.minKeys() && sz+esz > fill {
			break
		}
		sz += esz
		idx = i + 1
	}
	if idx >= len(n.inodes)-n.minKeys() {
		idx = len(n.inodes) - n.minKeys()
	}
	if n.parent == nil {
		// A new root: in-order loads keep filling it in order too.
		n.parent = &node{bucket: n.bucket, children: []*node{n}, appendOnly: n.appendOnly}
	}
	next := &node{bucket: n.bucket, leaf: n.leaf, parent: n.parent, appendOnly: n.appendOnly}
	n.parent.children = append(n.parent.children, next)
	next.inodes = n.inodes[idx:]
	n.inodes = n.inodes[:idx:idx] // a later append must not overwrite next's
	return n, next
}

// spill writes the node and its materialized descendants to newly allocated
// pages, bottom-up, and points the parent at them.
func (n *node) spill() error {
	if n.spilled {
		return nil
	}
	tx := n.bucket.tx
	sort.Slice(n.children, func(i, j int) bool { return bytes.Compare(n.children[i].firstKey(), n.children[j].firstKey()) < 0 })
	// Spilling a child may split it and append to n.children: iterate by
	// index over a snapshot.
	children := append([]*node(nil), n.children...)
	for _, c := range children {
		if err := c.spill(); err != nil {
			return err
		}
	}
	n.children = nil

	for _, part := range n.split(tx.db.pageSize) {
		if part.pgid != 0 {
			tx.freePage(part.pgid)
			part.pgid = 0
		}
		id, buf, err := tx.allocate(part.size())
		if err != nil {
			return err
		}
		part.pgid = id
		part.write(buf)
		typ := uint16(typeBranch)
		if part.leaf {
			typ = typeLeaf
		}
		tx.seal(buf, typ, len(part.inodes), id)
		part.spilled = true
		if part.parent != nil {
			key := part.key
			if key == nil {
				key = part.inodes[0].key
			}
			part.parent.put(key, part.inodes[0].key, nil, part.pgid)
			part.key = part.inodes[0].key
		}
	}
	// A root split made a new parent: spill it too.
	if n.parent != nil && n.parent.pgid == 0 && !n.parent.spilled {
		n.children = nil
		return n.parent.spill()
	}
	return nil
}

// rebalance merges a node that deletes left small into a sibling, and
// collapses a root branch with a single child. It runs before spill.
func (n *node) rebalance() {
	if !n.unbalanced {
		return
	}
	n.unbalanced = false
	b := n.bucket
	threshold := b.tx.db.pageSize / 4
	if !n.sizeAtMost(threshold) && len(n.inodes) > n.minKeys() {
		return
	}
	if n.parent == nil {
		// The root: a branch with one child is replaced by the child.
		if !n.leaf && len(n.inodes) == 1 {
			child := b.node(n.inodes[0].pgid, n)
			n.leaf = child.leaf
			n.inodes = child.inodes
			n.children = child.children
			n.appendOnly = child.appendOnly
			for _, in := range n.inodes {
				if c, ok := b.nodes[in.pgid]; ok && !n.leaf {
					c.parent = n
				}
			}
			child.parent = nil
			delete(b.nodes, child.pgid)
			b.tx.freePage(child.pgid)
			n.unbalanced = true
			n.rebalance()
		}
		return
	}
	if len(n.inodes) == 0 {
		n.parent.del(n.key)
		n.parent.removeChild(n)
		delete(b.nodes, n.pgid)
		b.tx.freePage(n.pgid)
		n.parent.rebalance()
		return
	}
	if len(n.parent.inodes) < 2 {
		// Can only happen in a corrupt tree; leave it for Check to report.
		return
	}
	// Merge into the left sibling, or pull the right one in when n is first.
	idx := n.parent.childIndex(n)
	left, right := n, n
	if idx == 0 {
		right = n.parent.childAt(1)
	} else {
		left = n.parent.childAt(idx - 1)
	}
	for _, in := range right.inodes {
		if c, ok := b.nodes[in.pgid]; ok && !right.leaf {
			c.parent.removeChild(c)
			c.parent = left
			left.children = append(left.children, c)
		}
	}
	left.inodes = append(left.inodes, right.inodes...)
	left.appendOnly = false
	n.parent.del(right.key)
	n.parent.removeChild(right)
	delete(b.nodes, right.pgid)
	b.tx.freePage(right.pgid)
	n.parent.rebalance()
}
