package engine

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"time"

	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
)

// Backend returns the page file the store is on. Defragment replaces it:
// call from the writer, or once the writer has stopped.
func (s *Store) Backend() *pagefile.DB {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db
}

// BackendSize returns the page file's size, its high-water mark (etcd's
// db size, which the quota counts).
func (s *Store) BackendSize() int64 {
	s.mu.RLock()
	db := s.db
	s.mu.RUnlock()
	return db.Size()
}

// BackendInUse returns the part of the page file in use: its size less
// the free pages (etcd's db size in use).
func (s *Store) BackendInUse() int64 {
	s.mu.RLock()
	db := s.db
	s.mu.RUnlock()
	return db.Size() - int64(db.Stats().FreeAlloc)
}

// SnapshotTx commits the open batch and returns a read transaction on the
// state as of that commit, for a consistent copy (Tx.CompactTo) while
// writes go on. Writer only; the caller ends the transaction.
func (s *Store) SnapshotTx() (*pagefile.Tx, error) {
	if err := s.Commit(); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Begin(false)
}

// HashBackend commits the open batch and hashes the page file's contents
// (CRC-32C over every bucket's name, keys and values, in order), less the
// consistent index, which differs between members by design. Writer only.
func (s *Store) HashBackend() (uint32, error) {
	if err := s.Commit(); err != nil {
		return 0, err
	}
	s.mu.RLock()
	tx, err := s.db.Begin(false)
	s.mu.RUnlock()
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	h := crc32.New(castagnoli)
	err = tx.ForEach(func(name []byte, b *pagefile.Bucket) error {
		_, _ = h.Write(name)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if bytes.Equal(name, metaBucket) && bytes.Equal(k, metaConsIndex) {
				continue
			}
			_, _ = h.Write(k)
			_, _ = h.Write(v)
		}
		return nil
	})
	if err == nil {
		err = tx.Err()
	}
	return h.Sum32(), err
}

// Install replaces the store's whole state with the page file at path: a
// copy of another member's, received as a raft snapshot. The file is
// renamed over the store's own (the open batch, which the copy is past,
// is dropped), opened with open, and what the store keeps in memory is
// rebuilt from it: index, membership, auth, leases (their expiry counted
// anew if this member is the primary). Watchers go on from the revision
// they had reached, caught up from the new file's history, or cancelled
// if it is compacted past them. Writer only. A failure once the old file
// is closed leaves the store unusable (the error says so); before, the
// store is unchanged.
func (s *Store) Install(path string, open func(path string) (*pagefile.DB, error)) error {
	s.mu.Lock()
	from := s.mu.currentRev
	dst, fs := s.db.Path(), s.db.FS()
	if s.batch != nil {
		s.batch.Rollback()
		s.batch = nil
	}
	st, err := s.installFile(path, dst, fs, open)
	if err != nil {
		s.mu.Unlock()
		return fmt.Errorf("engine: installing a snapshot (the store is closed): %w", err)
	}
	s.index.Replace(st.index)
	s.mu.currentRev, s.mu.compacted, s.mu.buf = st.currentRev, st.compacted, &buffer{}
	s.comp, s.applied, s.pending, s.batchStart = st.comp, st.applied, 0, time.Time{}
	s.cl.mu.Lock()
	s.cl.members, s.cl.removed, s.cl.alarms, s.cl.downgrade = st.cl.members, st.cl.removed, st.cl.alarms, st.cl.downgrade
	s.cl.mu.Unlock()
	a := s.auth
	a.mu.Lock()
	a.enabled, a.revision, a.users, a.roles, a.perms = st.auth.enabled, st.auth.revision, st.auth.users, st.auth.roles, st.auth.perms
	a.mu.Unlock()
	le := &s.les
	le.mu.Lock()
	le.leases = st.leases
	if le.primary {
		le.scheduleAll(0)
	}
	le.mu.Unlock()
	s.mu.Unlock()
	s.hub.resync(from)
	return nil
}

// installFile closes the store's page file, renames path over it (dst)
// and opens and loads it; on success the store has the new file and an
// open batch on it. Under s.mu.
func (s *Store) installFile(path, dst string, fs vfs.FS, open func(path string) (*pagefile.DB, error)) (*loaded, error) {
	if err := s.db.Close(); err != nil {
		return nil, err
	}
	if err := fs.Rename(path, dst); err != nil {
		return nil, err
	}
	if err := fs.SyncDir(filepath.Dir(dst)); err != nil {
		return nil, err
	}
	db, err := open(dst)
	if err != nil {
		return nil, err
	}
	st, err := load(db)
	if err == nil {
		s.batch, err = db.Begin(true)
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	s.db = db
	return st, nil
}

// Restore makes a store opened from a snapshot the start of a new
// cluster: the membership becomes members alone (none removed), and the
// consistent index 0, so that a fresh WAL's entries all apply to it. The
// data, leases, auth and alarms are kept. It commits.
func (s *Store) Restore(members []Member) error {
	s.cl.mu.Lock()
	for id := range s.cl.members {
		if err := s.batch.Bucket(membersBucket).Delete(be64(id)); err != nil {
			s.cl.mu.Unlock()
			return err
		}
	}
	for id := range s.cl.removed {
		if err := s.batch.Bucket(removedBucket).Delete(be64(id)); err != nil {
			s.cl.mu.Unlock()
			return err
		}
	}
	s.cl.members, s.cl.removed = map[uint64]Member{}, map[uint64]bool{}
	var err error
	for _, m := range members {
		if err = s.putMember(m); err != nil {
			break
		}
	}
	s.cl.mu.Unlock()
	if err != nil {
		return err
	}
	s.applied, s.pending = 0, 0
	if err := s.writeConsistentIndex(0); err != nil {
		return err
	}
	return s.Commit()
}
