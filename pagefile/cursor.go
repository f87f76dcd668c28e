package pagefile

import (
	"bytes"
)

// Cursor iterates over a bucket's keys in byte order. Keys and values it
// returns are valid for the life of the transaction. A cursor is invalid once
// the bucket is changed through anything but the cursor's own position
// (a Put or Delete may move or split the node it stands on): seek again.
type Cursor struct {
	bucket *Bucket
	stack  []elemRef
}

// elemRef is one level of the cursor's path: a page from the map, or the
// node a write transaction materialized in its place.
type elemRef struct {
	page  []byte
	id    pgid
	node  *node
	index int
	n     int  // pages: element count, read once from the header
	leaf  bool // pages: whether it is a leaf
}

func (r *elemRef) isLeaf() bool {
	if r.node != nil {
		return r.node.leaf
	}
	return r.leaf
}

// count is live for nodes: a write may change them under the cursor.
func (r *elemRef) count() int {
	if r.node != nil {
		return len(r.node.inodes)
	}
	return r.n
}

// leafPage returns the page of the leaf the cursor is on (0: none).
func (c *Cursor) leafPage() pgid {
	if n := len(c.stack); n > 0 {
		return c.stack[n-1].id
	}
	return 0
}

// Bucket returns the cursor's bucket.
func (c *Cursor) Bucket() *Bucket { return c.bucket }

// First moves to the first key and returns it, or nil if the bucket is empty.
func (c *Cursor) First() (key, value []byte) {
	defer c.bucket.tx.recoverCorrupt(nil)
	c.stack = c.stack[:0]
	c.push(c.bucket.rootRef())
	c.goFirst()
	if c.stack[len(c.stack)-1].count() == 0 {
		c.next()
	}
	return c.current()
}

// Last moves to the last key and returns it, or nil if the bucket is empty.
func (c *Cursor) Last() (key, value []byte) {
	defer c.bucket.tx.recoverCorrupt(nil)
	c.stack = c.stack[:0]
	c.push(c.bucket.rootRef())
	c.goLast()
	if c.stack[len(c.stack)-1].count() == 0 {
		c.prev()
	}
	return c.current()
}

// Next moves to the next key, or returns nil past the last.
func (c *Cursor) Next() (key, value []byte) {
	// Fast path: the next element is on the same leaf page.
	if n := len(c.stack); n > 0 {
		if r := &c.stack[n-1]; r.node == nil && r.leaf && r.index+1 < r.n && r.index >= -1 {
			r.index++
			if k, v, ok := leafElemFast(r.page, r.index); ok {
				return k, v
			}
			return c.currentChecked() // reports the corruption
		}
	}
	return c.nextSlow()
}

// currentChecked is current under the recover that turns a corrupt page into
// the transaction's error.
func (c *Cursor) currentChecked() (key, value []byte) {
	defer c.bucket.tx.recoverCorrupt(nil)
	return c.current()
}

func (c *Cursor) nextSlow() (key, value []byte) {
	defer c.bucket.tx.recoverCorrupt(nil)
	if len(c.stack) == 0 {
		return nil, nil
	}
	c.next()
	return c.current()
}

// Prev moves to the previous key, or returns nil before the first.
func (c *Cursor) Prev() (key, value []byte) {
	defer c.bucket.tx.recoverCorrupt(nil)
	if len(c.stack) == 0 {
		return nil, nil
	}
	c.prev()
	return c.current()
}

// Seek moves to the first key >= seek and returns it, or nil if there is
// none.
func (c *Cursor) Seek(seek []byte) (key, value []byte) {
	defer c.bucket.tx.recoverCorrupt(nil)
	c.seek(seek)
	if r := &c.stack[len(c.stack)-1]; r.index >= r.count() {
		c.next()
	}
	return c.current()
}

func (c *Cursor) push(r elemRef) {
	if len(c.stack) >= maxDepth {
		corruptf(r.id, "tree deeper than %d levels (a cycle?)", maxDepth)
	}
	c.stack = append(c.stack, r)
}

// child returns the ref for the child under the branch ref r at its index.
func (c *Cursor) child(r *elemRef) elemRef {
	var id pgid
	if r.node != nil {
		id = r.node.inodes[r.index].pgid
	} else {
		_, id = branchElem(r.page, r.id, r.index)
	}
	return c.bucket.ref(id)
}

// goFirst descends from the top of the stack to the first leaf below it.
func (c *Cursor) goFirst() {
	for {
		r := &c.stack[len(c.stack)-1]
		if r.isLeaf() {
			return
		}
		if r.count() == 0 {
			corruptf(r.id, "empty branch page")
		}
		c.push(c.child(r))
		c.stack[len(c.stack)-1].index = 0
	}
}

// goLast descends to the last element of the last leaf below the top.
func (c *Cursor) goLast() {
	for {
		r := &c.stack[len(c.stack)-1]
		n := r.count()
		if r.isLeaf() {
			r.index = n - 1
			return
		}
		if n == 0 {
			corruptf(r.id, "empty branch page")
		}
		r.index = n - 1
		c.push(c.child(r))
	}
}

// next moves to the next element, skipping empty leaves; at the end the top
// of the stack is left with index == count.
func (c *Cursor) next() {
	for {
		i := len(c.stack) - 1
		for ; i >= 0; i-- {
			r := &c.stack[i]
			if r.index+1 < r.count() {
				r.index++
				break
			}
		}
		if i < 0 {
			// Past the end: leave the leaf positioned after its last element.
			r := &c.stack[len(c.stack)-1]
			r.index = r.count()
			return
		}
		c.stack = c.stack[:i+1]
		c.goFirst()
		if c.stack[len(c.stack)-1].count() > 0 {
			return
		}
	}
}

// prev moves to the previous element, skipping empty leaves; before the
// start the top of the stack is left with index -1.
func (c *Cursor) prev() {
	for {
		i := len(c.stack) - 1
		for ; i >= 0; i-- {
			r := &c.stack[i]
			if r.index > 0 {
				r.index--
				break
			}
		}
		if i < 0 {
			c.stack[len(c.stack)-1].index = -1
			return
		}
		c.stack = c.stack[:i+1]
		if !c.stack[i].isLeaf() {
			c.push(c.child(&c.stack[i]))
			c.goLast()
		}
		if r := c.stack[len(c.stack)-1]; r.index >= 0 && r.count() > 0 {
			return
		}
	}
}

// seek positions the stack on the first element >= key (index may equal the
// leaf's count when key is past its last element).
func (c *Cursor) seek(key []byte) {
	c.stack = c.stack[:0]
	c.push(c.bucket.rootRef())
	for {
		r := &c.stack[len(c.stack)-1]
		n := r.count()
		if r.isLeaf() {
			if r.node != nil {
				r.index = r.node.search(key)
			} else {
				r.index = searchLeaf(r.page, r.id, n, key)
			}
			return
		}
		if n == 0 {
			corruptf(r.id, "empty branch page")
		}
		// The child to follow is the last whose key is <= key.
		var i int
		if r.node != nil {
			i = r.node.search(key)
			if i == n || !bytes.Equal(r.node.inodes[i].key, key) {
				i--
			}
		} else {
			i = searchBranch(r.page, r.id, n, key)
		}
		if i < 0 {
			i = 0
		}
		r.index = i
		c.push(c.child(r))
	}
}

// current returns the element under the cursor, or nil when it is off the
// end of the bucket.
func (c *Cursor) current() (key, value []byte) {
	if len(c.stack) == 0 {
		return nil, nil
	}
	r := &c.stack[len(c.stack)-1]
	if r.index < 0 || r.index >= r.count() {
		return nil, nil
	}
	if r.node != nil {
		in := &r.node.inodes[r.index]
		return in.key, in.value
	}
	return leafElem(r.page, r.id, r.index)
}

// node materializes the leaf under the cursor, and every node above it, for
// a write.
func (c *Cursor) node() *node {
	if r := &c.stack[len(c.stack)-1]; r.node != nil && r.node.leaf {
		return r.node
	}
	n := c.stack[0].node
	if n == nil {
		n = c.bucket.node(c.stack[0].id, nil)
	}
	for _, r := range c.stack[:len(c.stack)-1] {
		n = n.childAt(r.index)
	}
	return n
}
