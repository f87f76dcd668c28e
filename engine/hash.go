package engine

import (
	"bytes"
	"hash/crc32"

	"github.com/cairn-kv/cairn/btreeindex"
	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/pagefile"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// HashResult is HashKV's answer.
type HashResult struct {
	Hash       uint32
	HashRev    int64 // the revision hashed
	CompactRev int64 // the revision the store was compacted to
}

// HashKV hashes the history the store keeps up to rev (0: the current
// revision), so that members that applied the same log can be compared:
// CRC-32C over every revision's backend key and stored key-value in
// revision order, taking every revision above the compacted one and, at or
// below it, only those a read at the compacted revision still needs. So a
// revision compaction has dropped counts the same whether or not the
// deletion has reached the page file yet. Members agree only at the same
// compacted revision, as in etcd.
func (s *Store) HashKV(rev int64) (HashResult, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	cur, compacted, buf := s.mu.currentRev, s.mu.compacted, s.mu.buf
	switch {
	case rev > cur:
		return HashResult{}, ErrFutureRev
	case rev <= 0:
		rev = cur
	case rev < compacted:
		return HashResult{}, ErrCompacted
	}
	var keep map[btreeindex.Revision]struct{}
	if compacted > 0 {
		keep = s.index.Keep(compacted)
	}
	wanted := func(r btreeindex.Revision) bool {
		if r.Main > rev {
			return false
		}
		if r.Main > compacted {
			return true
		}
		_, ok := keep[r]
		return ok
	}

	pending := bufferRevisions(buf, 0, rev)
	if err := failpoint.Hit("engine/hashBeforeFile"); err != nil {
		return HashResult{}, err
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		return HashResult{}, err
	}
	defer tx.Rollback()
	h := crc32.New(castagnoli)
	err = mergeRevisions(tx, pending, 0, rev, func(r btreeindex.Revision, k, v []byte) error {
		if wanted(r) {
			_, _ = h.Write(k)
			_, _ = h.Write(v)
		}
		return nil
	})
	if err != nil {
		return HashResult{}, err
	}
	return HashResult{Hash: h.Sum32(), HashRev: rev, CompactRev: compacted}, tx.Err()
}

// revEntry is one revision as the backend stores it.
type revEntry struct {
	rev  btreeindex.Revision
	k, v []byte
}

// bufferRevisions returns the open batch's revisions in [lo, hi] (main
// revisions) from its buffer, in revision order, encoded as the backend
// stores them.
func bufferRevisions(buf *buffer, lo, hi int64) []revEntry {
	buf.mu.RLock()
	defer buf.mu.RUnlock()
	from, to := buf.span(lo, hi)
	out := make([]revEntry, 0, to-from)
	lo, hi = buf.mains(lo, hi)
	for main := lo; main <= hi; main++ {
		from, to := buf.span(main, main)
		for sub, e := range buf.kvs[from:to] {
			r := btreeindex.Revision{Main: main, Sub: int64(sub)}
			out = append(out, revEntry{r, revToBytes(r, e.tomb), encodeKV(&e.kv)})
		}
	}
	return out
}

// mergeRevisions calls fn, in revision order, on every revision in [lo,
// hi] that tx or pending (from bufferRevisions) holds. Both name a
// revision by its first 17 bytes; a revision in both is the same write
// (the batch committed after the buffer was taken), passed once.
func mergeRevisions(tx *pagefile.Tx, pending []revEntry, lo, hi int64, fn func(r btreeindex.Revision, k, v []byte) error) error {
	c := tx.Bucket(keyBucket).Cursor()
	end := revToBytes(btreeindex.Revision{Main: hi + 1}, false)
	for k, v := c.Seek(revToBytes(btreeindex.Revision{Main: lo}, false)); k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
		r, _, err := bytesToRev(k)
		if err != nil {
			return err
		}
		for len(pending) > 0 && bytes.Compare(pending[0].k[:revBytesLen], k[:revBytesLen]) < 0 {
			if err := fn(pending[0].rev, pending[0].k, pending[0].v); err != nil {
				return err
			}
			pending = pending[1:]
		}
		if len(pending) > 0 && bytes.Equal(pending[0].k[:revBytesLen], k[:revBytesLen]) {
			pending = pending[1:]
		}
		if err := fn(r, k, v); err != nil {
			return err
		}
	}
	for _, e := range pending {
		if err := fn(e.rev, e.k, e.v); err != nil {
			return err
		}
	}
	return tx.Err()
}
