package pagefile

import (
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// Changes records which keys write transactions change: what a copy of
// the file made from an earlier read transaction (CompactTo) must carry
// over to catch up with it. Tx.TrackChanges starts it; each write
// transaction that commits from then on adds the keys it put or deleted
// and the buckets it created or deleted, until Stop. Take hands over what
// has been recorded and starts afresh.
type Changes struct {
	stopped atomic.Bool
	mu      sync.Mutex
	set     ChangeSet
}

// ChangeSet is what a run of commits changed, by bucket name.
type ChangeSet map[string]*BucketChanges

// BucketChanges is what commits changed in one bucket: some keys, or the
// bucket as a whole (created or deleted).
type BucketChanges struct {
	Whole bool
	Keys  map[string]struct{}
}

// TrackChanges makes this write transaction, and every write transaction
// after it until Stop, record what it changes into the Changes returned.
// Only one Changes is active at a time; a second call replaces the first.
func (tx *Tx) TrackChanges() (*Changes, error) {
	switch {
	case tx.db == nil:
		return nil, ErrTxClosed
	case !tx.writable:
		return nil, ErrTxNotWritable
	}
	c := &Changes{set: ChangeSet{}}
	tx.db.track = c // guarded by rwlock, which tx holds
	tx.track = c
	return c, nil
}

// Stop ends the recording; write transactions that begin afterwards do not
// record.
func (c *Changes) Stop() { c.stopped.Store(true) }

// Take returns what the commits since the last Take changed.
func (c *Changes) Take() ChangeSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	set := c.set
	c.set = ChangeSet{}
	return set
}

// merge adds a committed transaction's changes.
func (c *Changes) merge(tx ChangeSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, bc := range tx {
		into := c.set[name]
		if into == nil {
			c.set[name] = bc
			continue
		}
		if bc.Whole {
			into.Whole, into.Keys = true, nil
		}
		if into.Whole {
			continue
		}
		for k := range bc.Keys {
			into.Keys[k] = struct{}{}
		}
	}
}

// Len is the number of keys the set names, a whole bucket counting one.
func (cs ChangeSet) Len() int {
	n := 0
	for _, bc := range cs {
		if bc.Whole {
			n++
		} else {
			n += len(bc.Keys)
		}
	}
	return n
}

// bucket returns the changes of bucket name, created if need be.
func (cs ChangeSet) bucket(name []byte) *BucketChanges {
	bc := cs[string(name)]
	if bc == nil {
		bc = &BucketChanges{Keys: map[string]struct{}{}}
		cs[string(name)] = bc
	}
	return bc
}

// recordKey notes that key of bucket b changed, if the transaction
// records.
func (tx *Tx) recordKey(b *Bucket, key []byte) {
	if tx.track == nil || b.name == nil {
		return
	}
	if tx.changed == nil {
		tx.changed = ChangeSet{}
	}
	if bc := tx.changed.bucket(b.name); !bc.Whole {
		bc.Keys[string(key)] = struct{}{}
	}
}

// recordBucket notes that bucket name was created or deleted, if the
// transaction records.
func (tx *Tx) recordBucket(name []byte) {
	if tx.track == nil {
		return
	}
	if tx.changed == nil {
		tx.changed = ChangeSet{}
	}
	bc := tx.changed.bucket(name)
	bc.Whole, bc.Keys = true, nil
}

// Split divides the set into sets that each name keys whose values in src
// (a read transaction on the file the changes were recorded on) come to
// about maxBytes at most, keys in order within a bucket, so that applying
// them one write transaction each bounds each transaction's writes. A
// whole bucket is never divided, and a set names at least one key.
func (cs ChangeSet) Split(src *Tx, maxBytes int) []ChangeSet {
	var out []ChangeSet
	cur, size := ChangeSet{}, 0
	next := func(weight int) {
		if len(cur) > 0 && size+weight > maxBytes {
			out = append(out, cur)
			cur, size = ChangeSet{}, 0
		}
		size += weight
	}
	for _, name := range slices.Sorted(maps.Keys(cs)) {
		bc := cs[name]
		sb := src.Bucket([]byte(name))
		if bc.Whole || sb == nil {
			next(maxBytes) // alone in its set
			cur[name] = bc
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(bc.Keys)) {
			next(len(k) + len(sb.Get([]byte(k))))
			part := cur[name]
			if part == nil {
				part = &BucketChanges{Keys: map[string]struct{}{}}
				cur[name] = part
			}
			part.Keys[k] = struct{}{}
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// Apply makes dst hold what src holds for every key and bucket the set
// names: src is a read transaction on the file the changes were recorded
// on, dst a write transaction on the copy. dst keeps src's keys and values
// without copying them: end dst before src.
func (cs ChangeSet) Apply(src, dst *Tx) error {
	for name, bc := range cs {
		sb := src.Bucket([]byte(name))
		if bc.Whole || sb == nil {
			if err := dst.DeleteBucket([]byte(name)); err != nil && !errors.Is(err, ErrBucketNotFound) {
				return err
			}
			if sb == nil {
				continue
			}
			db, err := dst.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			c := sb.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if err := db.PutOwned(k, v); err != nil {
					return err
				}
			}
			if err := src.Err(); err != nil {
				return err
			}
			continue
		}
		db := dst.Bucket([]byte(name))
		if db == nil {
			var err error
			if db, err = dst.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		// In key order: appends (new revisions) then fill pages full, as
		// they do in the file they come from. dst keeps the value
		// without a copy, which halves what a carrying round allocates.
		for _, k := range slices.Sorted(maps.Keys(bc.Keys)) {
			key := []byte(k)
			v := sb.Get(key)
			var err error
			if v == nil {
				err = db.Delete(key)
			} else {
				err = db.PutOwned(key, v)
			}
			if err != nil {
				return err
			}
		}
		if err := src.Err(); err != nil {
			return err
		}
	}
	return nil
}
