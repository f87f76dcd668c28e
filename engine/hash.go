package engine

import (
	"bytes"
	"hash/crc32"
	"slices"

	"github.com/cairn-kv/cairn/btreeindex"
	"github.com/cairn-kv/cairn/internal/failpoint"
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

	// The open batch's writes are in the buffer only: merge them, in
	// revision order, with what the page file holds. A tombstone is the
	// key-value with no create revision.
	type entry struct{ k, v []byte }
	var pending []entry
	buf.mu.RLock()
	for k, kv := range buf.m {
		r, _, err := bytesToRev([]byte(k))
		if err != nil {
			buf.mu.RUnlock()
			return HashResult{}, err
		}
		if wanted(r) {
			pending = append(pending, entry{revToBytes(r, kv.CreateRevision == 0), encodeKV(&kv)})
		}
	}
	buf.mu.RUnlock()
	slices.SortFunc(pending, func(a, b entry) int { return bytes.Compare(a.k, b.k) })

	if err := failpoint.Hit("engine/hashBeforeFile"); err != nil {
		return HashResult{}, err
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		return HashResult{}, err
	}
	defer tx.Rollback()
	h := crc32.New(castagnoli)
	write := func(k, v []byte) {
		_, _ = h.Write(k)
		_, _ = h.Write(v)
	}
	// Both sides name a revision by its first 17 bytes; a revision in
	// both is the same write (the batch committed after the buffer was
	// taken), hashed once.
	c := tx.Bucket(keyBucket).Cursor()
	end := revToBytes(btreeindex.Revision{Main: rev + 1}, false)
	for k, v := c.First(); k != nil && bytes.Compare(k, end) < 0; k, v = c.Next() {
		r, _, err := bytesToRev(k)
		if err != nil {
			return HashResult{}, err
		}
		for len(pending) > 0 && bytes.Compare(pending[0].k[:revBytesLen], k[:revBytesLen]) < 0 {
			write(pending[0].k, pending[0].v)
			pending = pending[1:]
		}
		if len(pending) > 0 && bytes.Equal(pending[0].k[:revBytesLen], k[:revBytesLen]) {
			pending = pending[1:]
		}
		if wanted(r) {
			write(k, v)
		}
	}
	for _, e := range pending {
		write(e.k, e.v)
	}
	return HashResult{Hash: h.Sum32(), HashRev: rev, CompactRev: compacted}, tx.Err()
}
