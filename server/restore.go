package server

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/server/member"
)

// RestoreOptions are snapshot restore's options besides the new member's
// configuration, etcd's flags.
type RestoreOptions struct {
	// SkipHashCheck takes a file without the SHA-256 the Snapshot RPC
	// appends (a copy of a data directory's page file), and does not
	// check one that has it.
	SkipHashCheck bool
	// BumpRevision raises the revision by this much and compacts there
	// (etcd's --bump-revision with --mark-compacted, which must go
	// together): clients of the old cluster cannot read or watch from a
	// revision the new one reuses.
	BumpRevision  int64
	MarkCompacted bool
}

// RestoreSnapshot makes a new data directory (cfg.DataDir, which must not
// exist or be empty) from a snapshot file as `etcdctl snapshot save`
// writes it: the page file, with the SHA-256 the Snapshot RPC sends after
// it (checked unless opts.SkipHashCheck; a file without one is taken as
// it is only with SkipHashCheck), the whole compressed with zstd or not.
// The member it starts is a new cluster: the members of
// cfg.InitialCluster (cfg's own alone if none), with the ids they derive
// from their peer URLs and cfg's cluster token; keys, leases, users and
// roles from the snapshot. Each member of a new cluster is restored from
// the same snapshot with its own name and peer URLs. On failure nothing
// is left of the new data dir.
func RestoreSnapshot(snapshot string, cfg Config, opts RestoreOptions) error {
	return RestoreFrom(cfg, opts, func(path string) error { return ExtractSnapshot(snapshot, path, opts.SkipHashCheck) })
}

// RestoreFrom makes a new data directory as RestoreSnapshot does, its page
// file written at path by write (from another store's snapshot, in a
// migration) rather than taken from a snapshot file.
func RestoreFrom(cfg Config, opts RestoreOptions, write func(path string) error) (err error) {
	if (opts.BumpRevision == 0) == opts.MarkCompacted {
		return errors.New("--mark-compacted required if --revision-bump > 0")
	}
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn"
	}
	members, err := member.InitialMembers(cfg.Config)
	if err != nil {
		return err
	}
	if ents, rerr := os.ReadDir(cfg.DataDir); rerr == nil && len(ents) > 0 || rerr != nil && !os.IsNotExist(rerr) {
		return fmt.Errorf("data-dir %q not empty or could not be read", cfg.DataDir)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(cfg.DataDir)
		}
	}()
	snapDir := filepath.Join(cfg.DataDir, "member", "snap")
	if err := os.MkdirAll(snapDir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(snapDir, "db")
	if err := write(path); err != nil {
		return err
	}
	db, err := pagefile.Open(path, nil)
	if err != nil {
		return fmt.Errorf("the snapshot is not a page file: %w", err)
	}
	defer db.Close()
	if err := db.Check(); err != nil {
		return fmt.Errorf("the snapshot's page file is damaged: %w", err)
	}
	eng, err := engine.Open(db)
	if err != nil {
		return err
	}
	if err := eng.Restore(members); err != nil {
		eng.Close()
		return err
	}
	if opts.BumpRevision > 0 {
		if err := bump(eng, opts.BumpRevision); err != nil {
			eng.Close()
			return err
		}
	}
	return eng.Close()
}

// bump raises eng's revision by amount and compacts there, whole.
func bump(eng *engine.Store, amount int64) error {
	if err := eng.BumpRevision(amount); err != nil {
		return err
	}
	for {
		done, err := eng.CompactStep(10000)
		if err != nil {
			return err
		}
		if done {
			return eng.Commit()
		}
	}
}

// zstdMagic begins a zstd frame (snapshot save --compress).
var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// IsCompressed says whether the snapshot file at path is compressed with
// zstd.
func IsCompressed(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, len(zstdMagic))
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, err
	}
	return bytes.Equal(head[:n], zstdMagic), nil
}

// ExtractSnapshot copies the page file of a snapshot file to path (a new
// file), synced,
// streaming (a snapshot may be larger than memory), decompressing it if
// it is compressed. A page file is whole pages; the SHA-256 the Snapshot
// RPC appends makes the size 32 past a multiple of 512, which is how etcd
// tells them apart. The hash is checked unless skip; a file without one
// is taken only with skip.
func ExtractSnapshot(snapshot, path string, skip bool) error {
	src, err := os.Open(snapshot)
	if err != nil {
		return err
	}
	defer src.Close()
	var r io.Reader = bufio.NewReaderSize(src, 1<<20)
	if compressed, err := IsCompressed(snapshot); err != nil {
		return err
	} else if compressed {
		zr, err := zstd.NewReader(r)
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	}
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// The last 32 bytes are held back: they are the hash if the size
	// says so.
	h := sha256.New()
	hb := &holdBack{w: io.MultiWriter(dst, h)}
	_, err = io.Copy(hb, r)
	hasHash := hb.n%512 == sha256.Size
	switch {
	case err != nil:
	case !hasHash && !skip:
		err = errors.New("snapshot file has no SHA-256 of its data; use --skip-hash-check if it is a copy of a data directory's database file")
	case !hasHash:
		_, err = dst.Write(hb.tail) // page file bytes after all
	case !skip && !bytes.Equal(h.Sum(nil), hb.tail):
		err = errors.New("snapshot file integrity check failed: its SHA-256 does not match its data")
	}
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return vfs.Default.SyncDir(filepath.Dir(path))
}

// holdBack writes all it is given to w but the last 32 bytes, which it
// keeps in tail; n counts every byte.
type holdBack struct {
	w    io.Writer
	tail []byte
	n    int64
}

func (b *holdBack) Write(p []byte) (int, error) {
	b.n += int64(len(p))
	if len(p) >= sha256.Size {
		// What was held, and p but its last 32 bytes, go out.
		if _, err := b.w.Write(b.tail); err != nil {
			return 0, err
		}
		if _, err := b.w.Write(p[:len(p)-sha256.Size]); err != nil {
			return 0, err
		}
		b.tail = append(b.tail[:0], p[len(p)-sha256.Size:]...)
		return len(p), nil
	}
	all := append(append(make([]byte, 0, 2*sha256.Size), b.tail...), p...)
	cut := max(0, len(all)-sha256.Size)
	if _, err := b.w.Write(all[:cut]); err != nil {
		return 0, err
	}
	b.tail = all[cut:]
	return len(p), nil
}
