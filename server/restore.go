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
	"github.com/cairn-kv/cairn/pagefile"
)

// RestoreSnapshot makes a new data directory (cfg.DataDir, which must not
// exist) from a snapshot file as `etcdctl snapshot save` writes it: the
// page file, with the SHA-256 the Snapshot RPC sends after it (checked
// unless skipHashCheck; a file without one is taken as it is only with
// skipHashCheck). The member it starts is a new cluster of one: cfg's
// name, peer URLs and cluster token, keys, leases, users and roles from
// the snapshot.
func RestoreSnapshot(snapshot string, cfg Config, skipHashCheck bool) error {
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn"
	}
	if _, err := os.Stat(cfg.DataDir); err == nil {
		return fmt.Errorf("data-dir %q exists", cfg.DataDir)
	}
	data, err := os.ReadFile(snapshot)
	if err != nil {
		return err
	}
	// A page file is whole pages; the SHA-256 makes the size 32 past a
	// multiple of 512, as etcd tells them apart.
	hasHash := len(data)%512 == sha256.Size
	switch {
	case hasHash:
		db, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
		if got := sha256.Sum256(db); !bytes.Equal(got[:], sum) && !skipHashCheck {
			return errors.New("snapshot file integrity check failed: its SHA-256 does not match its data")
		}
		data = db
	case !skipHashCheck:
		return errors.New("snapshot file has no SHA-256 of its data; restore it with --skip-hash-check if it is a copy of a page file")
	}
	snapDir := filepath.Join(cfg.DataDir, "member", "snap")
	if err := os.MkdirAll(snapDir, 0o700); err != nil {
		return err
	}
	path := filepath.Join(snapDir, "db")
	if err := writeSynced(path, data); err != nil {
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
	id, _ := memberIDs(cfg.InitialAdvertisePeerURLs, cfg.InitialClusterToken)
	if err := eng.Restore([]engine.Member{{ID: id, Name: cfg.Name, PeerURLs: cfg.InitialAdvertisePeerURLs}}); err != nil {
		eng.Close()
		return err
	}
	return eng.Close()
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, bytes.NewReader(data))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
