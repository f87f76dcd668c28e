package server

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/server/member"
)

// RestoreSnapshot makes a new data directory (cfg.DataDir, which must not
// exist) from a snapshot file as `etcdctl snapshot save` writes it: the
// page file, with the SHA-256 the Snapshot RPC sends after it (checked
// unless skipHashCheck; a file without one is taken as it is only with
// skipHashCheck). The member it starts is a new cluster of one: cfg's
// name, peer URLs and cluster token, keys, leases, users and roles from
// the snapshot. On failure nothing is left of the new data dir.
func RestoreSnapshot(snapshot string, cfg Config, skipHashCheck bool) (err error) {
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn"
	}
	if _, err := os.Stat(cfg.DataDir); err == nil {
		return fmt.Errorf("data-dir %q exists", cfg.DataDir)
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
	if err := copySnapshot(snapshot, path, skipHashCheck); err != nil {
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
	id, _ := member.IDs(cfg.InitialAdvertisePeerURLs, cfg.InitialClusterToken)
	if err := eng.Restore([]engine.Member{{ID: id, Name: cfg.Name, PeerURLs: cfg.InitialAdvertisePeerURLs}}); err != nil {
		eng.Close()
		return err
	}
	return eng.Close()
}

// copySnapshot copies the page file of a snapshot file to path, synced,
// streaming (a snapshot may be larger than memory). A page file is whole
// pages; the SHA-256 the Snapshot RPC appends makes the size 32 past a
// multiple of 512, which is how etcd tells them apart. The hash is checked
// unless skip; a file without one is taken only with skip.
func copySnapshot(snapshot, path string, skip bool) error {
	src, err := os.Open(snapshot)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	hasHash := size%512 == sha256.Size
	if !hasHash && !skip {
		return errors.New("snapshot file has no SHA-256 of its data; restore it with --skip-hash-check if it is a copy of a page file")
	}
	if hasHash {
		size -= sha256.Size
	}
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(dst, h), io.LimitReader(src, size))
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if hasHash && !skip {
		want := make([]byte, sha256.Size)
		if _, err := io.ReadFull(src, want); err != nil {
			return err
		}
		if !bytes.Equal(h.Sum(nil), want) {
			return errors.New("snapshot file integrity check failed: its SHA-256 does not match its data")
		}
	}
	return vfs.Default.SyncDir(filepath.Dir(path))
}
