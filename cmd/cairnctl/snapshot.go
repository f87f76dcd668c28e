package main

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/server"
)

func (c *ctl) snapshotCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot <subcommand>", Short: "Manages etcd node snapshots"}
	var compress bool
	save := &cobra.Command{
		Use:   "save <filename>",
		Short: "Stores an etcd node backend snapshot to a given file",
		Long: `Streams the member's page file, with the SHA-256 that ends a snapshot, to the file
(through <filename>.part, renamed once whole and synced). With --compress the file is
compressed with zstd; snapshot status and restore read either.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fail(exitBadArgs, errors.New("snapshot save expects one argument"))
			}
			ctx, cancel := context.WithCancel(context.Background())
			if c.flagChanged("command-timeout") {
				ctx, cancel = c.commandCtx()
			}
			defer cancel()
			if err := c.snapshotSave(ctx, args[0], compress); err != nil {
				var ce *codeError
				if errors.As(err, &ce) {
					return err
				}
				return fail(exitInterrupted, err)
			}
			fmt.Fprintf(c.out, "Snapshot saved at %s\n", args[0])
			return nil
		},
	}
	save.Flags().BoolVar(&compress, "compress", false, "Compress the snapshot with zstd (cairnctl's own flag)")
	cmd.AddCommand(save, c.snapshotStatusCommand(), c.snapshotRestoreCommand())
	return cmd
}

// dbStatus is a snapshot's status, as etcdutl reports it: a CRC-32C of
// every bucket's name, keys and values, the revision, the records in all
// buckets and the page file's size.
type dbStatus struct {
	Hash      uint32 `json:"hash"`
	Revision  int64  `json:"revision"`
	TotalKey  int    `json:"totalKey"`
	TotalSize int64  `json:"totalSize"`
}

func (c *ctl) snapshotStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status <filename>",
		Short: "Gets backend snapshot status of a given file",
		Long: `When --write-out is set to simple, this command prints out comma-separated status lists for each endpoint.
The items in the lists are hash, revision, total keys, total size.

Reads a cairn snapshot (compressed or not), or a member's page file.
`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fail(exitBadArgs, errors.New("snapshot status requires exactly one argument"))
			}
			st, err := snapshotStatus(args[0])
			if err != nil {
				return fail(exitError, err)
			}
			rows := func() *table {
				return &table{header: []string{"hash", "revision", "total keys", "total size"},
					rows: [][]string{{fmt.Sprintf("%x", st.Hash), fmt.Sprint(st.Revision), fmt.Sprint(st.TotalKey), siBytes(uint64(st.TotalSize))}}}
			}
			return c.p.show(view{
				msg: st,
				simple: func(p *printer) { rows().simple(p.w) },
				fields: func(f *fields) {
					f.n("Hash", st.Hash)
					f.n("Revision", st.Revision)
					f.n("Keys", st.TotalKey)
					f.n("Size", st.TotalSize)
				},
				table: rows,
			})
		},
	}
}

// openSnapshot opens the page file of a snapshot file read-only: the file
// itself if it is a bare page file, else its page file extracted to a
// temporary file (decompressed, the hash left off unchecked), removed by
// done.
func openSnapshot(path string) (db *pagefile.DB, done func(), err error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if st.IsDir() {
		return nil, nil, fmt.Errorf("%s is a directory, not a snapshot file", path)
	}
	compressed, err := server.IsCompressed(path)
	if err != nil {
		return nil, nil, err
	}
	file, cleanup := path, func() {}
	if compressed || st.Size()%512 != 0 {
		dir, err := os.MkdirTemp("", "cairnctl-snapshot-")
		if err != nil {
			return nil, nil, err
		}
		cleanup = func() { os.RemoveAll(dir) }
		file = filepath.Join(dir, "db")
		if err := server.ExtractSnapshot(path, file, true); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	db, err = pagefile.Open(file, &pagefile.Options{ReadOnly: true})
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("%s: not a cairn page file: %w", path, err)
	}
	return db, func() { db.Close(); cleanup() }, nil
}

func snapshotStatus(path string) (dbStatus, error) {
	db, done, err := openSnapshot(path)
	if err != nil {
		return dbStatus{}, err
	}
	defer done()
	if err := db.Check(); err != nil {
		return dbStatus{}, fmt.Errorf("snapshot file integrity check failed: %w", err)
	}
	var st dbStatus
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	err = db.View(func(tx *pagefile.Tx) error {
		d, err := engine.NewDump(tx)
		if err != nil {
			return err
		}
		if st.Revision, err = d.Rev(); err != nil {
			return err
		}
		st.TotalSize = tx.Size()
		return tx.ForEach(func(name []byte, b *pagefile.Bucket) error {
			h.Write(name)
			return b.ForEach(func(k, v []byte) error {
				h.Write(k)
				h.Write(v)
				st.TotalKey++
				return nil
			})
		})
	})
	st.Hash = h.Sum32()
	return st, err
}

// restoreOptions are snapshot restore's flags, etcd's.
type restoreOptions struct {
	cluster, token, dataDir, walDir, peerURLs, name string
	skipHashCheck, markCompacted                    bool
	bump, mmapSize                                  uint64
}

func (o *restoreOptions) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "", "Path to the data directory (default ${name}.cairn)")
	f.StringVar(&o.walDir, "wal-dir", "", "Path to the WAL directory (use --data-dir if none given)")
	f.StringVar(&o.cluster, "initial-cluster", "default=http://localhost:2380", "Initial cluster configuration for restore bootstrap")
	f.StringVar(&o.token, "initial-cluster-token", "etcd-cluster", "Initial cluster token for the etcd cluster during restore bootstrap")
	f.StringVar(&o.peerURLs, "initial-advertise-peer-urls", "http://localhost:2380", "List of this member's peer URLs to advertise to the rest of the cluster")
	f.StringVar(&o.name, "name", "default", "Human-readable name for this member")
	f.BoolVar(&o.skipHashCheck, "skip-hash-check", false, "Ignore snapshot integrity hash value (required if copied from data directory)")
	f.Uint64Var(&o.bump, "bump-revision", 0, "How much to increase the latest revision after restore")
	f.BoolVar(&o.markCompacted, "mark-compacted", false, "Mark the latest revision after restore as the point of scheduled compaction (required if --bump-revision > 0, disallowed otherwise)")
	f.Uint64Var(&o.mmapSize, "initial-memory-map-size", 0, "Initial memory map size of the database in bytes (the page file maps as it needs: accepted for etcd's scripts)")
}

// config is the new member's configuration and the restore's options
// the flags describe (a refusal with etcd's exit code).
func (o *restoreOptions) config() (server.Config, server.RestoreOptions, error) {
	opts := server.RestoreOptions{SkipHashCheck: o.skipHashCheck, BumpRevision: int64(o.bump), MarkCompacted: o.markCompacted}
	cfg := server.DefaultConfig()
	if (o.bump == 0) == o.markCompacted {
		return cfg, opts, fail(exitBadArgs, errors.New("--mark-compacted required if --revision-bump > 0"))
	}
	cfg.Name, cfg.DataDir, cfg.InitialClusterToken = o.name, o.dataDir, o.token
	cfg.InitialAdvertisePeerURLs = strings.Split(o.peerURLs, ",")
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn"
	}
	if o.walDir != "" {
		if _, err := os.Stat(o.walDir); err == nil {
			return cfg, opts, failf(exitError, "wal-dir %q exists", o.walDir)
		}
		cfg.WALDir = o.walDir
	}
	var err error
	if cfg.InitialCluster, err = server.ParseInitialCluster(cfg.Name, cfg.InitialAdvertisePeerURLs, o.cluster); err != nil {
		return cfg, opts, fail(exitError, err)
	}
	return cfg, opts, nil
}

func (c *ctl) snapshotRestoreCommand() *cobra.Command {
	var o restoreOptions
	cmd := &cobra.Command{
		Use:   "restore <filename> [options]",
		Short: "Restores an etcd member snapshot to an etcd directory",
		Long: `Makes a new member's data directory from a snapshot (compressed or not): the
member of --initial-cluster named --name, in a new cluster of those members.
Restore each member of the new cluster from the same snapshot.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fail(exitBadArgs, errors.New("snapshot restore requires exactly one argument"))
			}
			cfg, opts, err := o.config()
			if err != nil {
				return err
			}
			if err := server.RestoreSnapshot(args[0], cfg, opts); err != nil {
				return fail(exitError, err)
			}
			c.lg.Info("restored snapshot", zap.String("path", args[0]), zap.String("data-dir", cfg.DataDir))
			return nil
		},
	}
	o.flags(cmd)
	return cmd
}
