package pagefile

import (
	"fmt"
	"path/filepath"
)

// compactTxBytes bounds how much one transaction of Compact copies, so its
// memory stays bounded whatever the database's size.
const compactTxBytes = 32 << 20

// Compact writes a defragmented copy of the database to dstPath, which must
// not exist: every bucket and key, with pages packed full and no free pages.
// It reads from one read transaction, so writers go on meanwhile (the copy
// holds the state as of its start). The copy is synced, file and directory,
// before Compact returns.
func (db *DB) Compact(dstPath string) error {
	if _, err := db.fs.Stat(dstPath); err == nil {
		return fmt.Errorf("pagefile: compact: %s already exists", dstPath)
	}
	dst, err := Open(dstPath, &Options{PageSize: db.pageSize, NoSync: true, FS: db.fs, InitialMmapSize: db.opts.InitialMmapSize})
	if err != nil {
		return err
	}
	err = db.View(func(src *Tx) error {
		return src.ForEach(func(name []byte, b *Bucket) error {
			return copyBucket(dst, name, b)
		})
	})
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = db.fs.SyncDir(filepath.Dir(dstPath))
	}
	return err
}

// copyBucket copies one bucket in transactions of at most compactTxBytes.
func copyBucket(dst *DB, name []byte, src *Bucket) error {
	c := src.Cursor()
	k, v := c.First()
	for first := true; first || k != nil; first = false {
		err := dst.Update(func(tx *Tx) error {
			b, err := tx.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			for n := 0; k != nil && n < compactTxBytes; k, v = c.Next() {
				if err := b.Put(k, v); err != nil {
					return err
				}
				n += len(k) + len(v)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return src.tx.err
}
