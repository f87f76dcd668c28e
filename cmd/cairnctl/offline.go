package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/raft"
	"github.com/cairn-kv/cairn/server/member"
	"github.com/cairn-kv/cairn/wal"
)

// The commands that work on a data directory with no member running on
// it: defrag --data-dir, check --data-dir, inspect.

// pageFileOf is the page file of a data directory.
func pageFileOf(dataDir string) string { return filepath.Join(dataDir, "member", "snap", "db") }

// walDirOf is the WAL directory of a data directory.
func walDirOf(dataDir string) string { return filepath.Join(dataDir, "member", "wal") }

// openPageFile opens a data directory's page file. While a member holds
// its lock, it waits (and says so) if wait, else fails.
func (c *ctl) openPageFile(dataDir string, readOnly, wait bool) (*pagefile.DB, error) {
	path := pageFileOf(dataDir)
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	db, err := pagefile.Open(path, &pagefile.Options{ReadOnly: readOnly})
	switch {
	case errors.Is(err, pagefile.ErrLocked) && wait:
		fmt.Fprintf(c.errOut, "waiting for cairn to close and release its lock on %q. To defrag a running member, omit --data-dir.\n", path)
		db, err = pagefile.Open(path, &pagefile.Options{ReadOnly: readOnly, Timeout: math.MaxInt64})
	case errors.Is(err, pagefile.ErrLocked):
		err = fmt.Errorf("%s is in use: a member is running on it (stop it first)", path)
	}
	return db, err
}

// defragDataDir defragments the page file of a data directory no member
// is running on, as a member does at start (a compact copy renamed over
// it; a crash part way leaves the page file as it was).
func (c *ctl) defragDataDir(dataDir string) error {
	failed := func(err error) error {
		return failf(exitError, "Failed to defragment etcd data[%s] (%v)", dataDir, err)
	}
	db, err := c.openPageFile(dataDir, false, true)
	if err != nil {
		return failed(err)
	}
	eng, err := engine.Open(db)
	if err != nil {
		db.Close()
		return failed(err)
	}
	direct := func(f func() error) error { return f() } // nothing else writes
	open := func(path string) (*pagefile.DB, error) { return pagefile.Open(path, nil) }
	_, derr := eng.Defragment(direct, open)
	db = eng.Backend() // the copy, if the defragmentation switched to it
	if err := eng.Close(); derr == nil {
		derr = err
	}
	if err := db.Close(); derr == nil {
		derr = err
	}
	if derr != nil {
		return failed(derr)
	}
	return nil
}

// checkDataDir verifies a data directory with no member running on it,
// writing nothing: the page file's structure, the store in it (index,
// leases, auth and cluster records; Check), and every record and checksum
// of the WAL. It reports what it found, and fails if anything is wrong.
func (c *ctl) checkDataDir(dataDir string) error {
	var problems []string
	report := func(what string, err error, ok string) {
		if err != nil {
			problems = append(problems, what)
			fmt.Fprintf(c.out, "FAIL: %s: %v\n", what, err)
			return
		}
		fmt.Fprintf(c.out, "PASS: %s: %s\n", what, ok)
	}
	db, err := c.openPageFile(dataDir, true, false)
	if err != nil {
		report("page file", err, "")
	} else {
		err := db.Check()
		st := db.Stats()
		report("page file", err, fmt.Sprintf("%s, %s in free pages", siBytes(uint64(db.Size())), siBytes(uint64(st.FreeAlloc))))
		if err == nil {
			eng, err := engine.OpenReadOnly(db)
			if err == nil {
				err = eng.Check()
				rev, compacted, keys := eng.Rev(), eng.CompactRev(), eng.Keys()
				if cerr := eng.Close(); err == nil {
					err = cerr
				}
				report("store", err, fmt.Sprintf("revision %d, compacted at %d, %d keys, %d leases", rev, compacted, keys, len(eng.Leases())))
			} else {
				report("store", err, "")
			}
		}
		db.Close()
	}
	st, err := wal.ReadAll(walDirOf(dataDir), nil)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		report("WAL", nil, "none yet (a restored data directory: the member makes it at its first start)")
	case err == nil:
		var first, last uint64
		if n := len(st.Entries); n > 0 {
			first, last = st.Entries[0].Index, st.Entries[n-1].Index
		}
		report("WAL", nil, fmt.Sprintf("entries %d to %d, term %d, commit %d", first, last, st.HardState.Term, st.HardState.Commit))
	default:
		report("WAL", err, "")
	}
	if len(problems) > 0 {
		return failf(exitError, "data directory %s: the check of its %s failed", dataDir, strings.Join(problems, ", "))
	}
	return nil
}

func (c *ctl) inspectCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect <subcommand>",
		Short: "Shows what a data directory holds (no member running on it)",
	}
	var dataDir string
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", "", "The data directory to read")
	need := func() error {
		if dataDir == "" {
			return fail(exitBadArgs, errors.New("--data-dir is required"))
		}
		return nil
	}
	var rev int64
	var history, prefix bool
	keys := &cobra.Command{
		Use:   "keys [key [range_end]] [options]",
		Short: "Lists the keys at a revision (the latest if none), or every revision with --history",
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := need(); err != nil {
				return err
			}
			if len(args) > 2 || prefix && len(args) != 1 {
				return fail(exitBadArgs, errors.New("inspect keys takes a key and a range end, or a prefix with --prefix"))
			}
			var key, end string
			if len(args) > 0 {
				key = args[0]
				switch {
				case prefix:
					end = clientv3.GetPrefixRangeEnd(key)
				case len(args) == 2:
					end = args[1]
				default:
					end = key + "\x00"
				}
			}
			return c.inspectKeys(dataDir, key, end, rev, history)
		},
	}
	keys.Flags().Int64Var(&rev, "rev", 0, "The revision (0: the latest)")
	keys.Flags().BoolVar(&history, "history", false, "Every revision the page file holds, deletions too")
	keys.Flags().BoolVar(&prefix, "prefix", false, "The keys with the key as a prefix")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "wal",
			Short: "Lists the WAL's entries, as etcd-dump-logs does",
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := need(); err != nil {
					return err
				}
				return c.inspectWAL(dataDir)
			},
		},
		keys,
		&cobra.Command{
			Use:   "buckets",
			Short: "Lists the page file's buckets and how many records each holds",
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := need(); err != nil {
					return err
				}
				db, err := c.openPageFile(dataDir, true, false)
				if err != nil {
					return fail(exitError, err)
				}
				defer db.Close()
				return db.View(func(tx *pagefile.Tx) error {
					return tx.ForEach(func(name []byte, b *pagefile.Bucket) error {
						n := 0
						if err := b.ForEach(func(k, v []byte) error { n++; return nil }); err != nil {
							return err
						}
						fmt.Fprintf(c.out, "%s\t%d\n", name, n)
						return nil
					})
				})
			},
		},
	)
	return cmd
}

// inspectKeys prints the keys of [key, end) (all if key is empty) as of
// rev, one line each, or with history every revision of them.
func (c *ctl) inspectKeys(dataDir, key, end string, rev int64, history bool) error {
	db, err := c.openPageFile(dataDir, true, false)
	if err != nil {
		return fail(exitError, err)
	}
	defer db.Close()
	in := func(k []byte) bool {
		return key == "" || string(k) >= key && (end == "\x00" || string(k) < end)
	}
	line := func(kv engine.KeyValue) string {
		return fmt.Sprintf("key=%q create_rev=%d mod_rev=%d version=%d lease=%x value=%q",
			kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease, kv.Value)
	}
	return db.View(func(tx *pagefile.Tx) error {
		d, err := engine.NewDump(tx)
		if err != nil {
			return err
		}
		latest, err := d.Rev()
		if err != nil {
			return err
		}
		_, compacted := d.Compacted()
		if rev == 0 {
			rev = latest
		}
		if !history && (rev < compacted || rev > latest) {
			return failf(exitError, "revision %d is outside what the page file holds (%d to %d)", rev, compacted, latest)
		}
		at := map[string]engine.KeyValue{} // each key's latest write at or before rev
		var order []string
		err = d.Revisions(func(main, sub int64, tomb bool, kv engine.KeyValue) error {
			if !in(kv.Key) {
				return nil
			}
			if history {
				what := "put"
				if tomb {
					what = "delete"
				}
				fmt.Fprintf(c.out, "rev=%d.%d %s %s\n", main, sub, what, line(kv))
				return nil
			}
			if main > rev {
				return nil
			}
			k := string(kv.Key)
			if _, seen := at[k]; !seen {
				order = append(order, k)
			}
			if tomb {
				kv = engine.KeyValue{} // deleted
			}
			at[k] = kv
			return nil
		})
		if err != nil || history {
			return err
		}
		slices.Sort(order)
		for _, k := range order {
			if kv := at[k]; kv.Key != nil {
				fmt.Fprintln(c.out, line(kv))
			}
		}
		return nil
	})
}

// inspectWAL prints the WAL's metadata, hard state and entries: a
// request's entry as its protobuf text, a membership change's as its
// type and member.
func (c *ctl) inspectWAL(dataDir string) error {
	st, err := wal.ReadAll(walDirOf(dataDir), nil)
	if err != nil {
		return fail(exitError, err)
	}
	if len(st.Metadata) > 0 {
		id, cluster, voters, err := member.DecodeWALMetadata(st.Metadata)
		if err != nil {
			return fail(exitError, err)
		}
		vs := make([]string, len(voters))
		for i, v := range voters {
			vs[i] = strconv.FormatUint(v, 16)
		}
		fmt.Fprintf(c.out, "WAL metadata:\nnodeID=%x clusterID=%x voters=[%s]\n", id, cluster, strings.Join(vs, " "))
	}
	hs := st.HardState
	fmt.Fprintf(c.out, "term=%d commitIndex=%d vote=%x\n", hs.Term, hs.Commit, hs.Vote)
	fmt.Fprintf(c.out, "WAL entries: %d\n", len(st.Entries))
	if n := len(st.Entries); n > 0 {
		fmt.Fprintf(c.out, "lastIndex=%d\n", st.Entries[n-1].Index)
	}
	fmt.Fprintf(c.out, "term\t     index\ttype\tdata\n")
	var normal, conf int
	for _, e := range st.Entries {
		kind, data := "norm", ""
		switch raft.EntryType(e.Type) {
		case raft.EntryConfChange:
			conf++
			kind = "conf"
			if cc, err := raft.DecodeConfChange(e.Data); err == nil {
				data = fmt.Sprintf("type=%s id=%x", confChangeName(cc.Type), cc.NodeID)
			} else {
				data = "undecodable: " + err.Error()
			}
		default:
			normal++
			if len(e.Data) > 0 {
				req := &pb.InternalRaftRequest{}
				if err := proto.Unmarshal(e.Data, req); err != nil {
					data = fmt.Sprintf("undecodable (%d bytes): %v", len(e.Data), err)
				} else {
					data = prototext.MarshalOptions{}.Format(req)
				}
			}
		}
		fmt.Fprintf(c.out, "%4d\t%10d\t%s\t%s\n", e.Term, e.Index, kind, data)
	}
	fmt.Fprintf(c.out, "Entry types (Normal,ConfigChange) count is : %d, %d\n", normal, conf)
	return nil
}

func confChangeName(t raft.ConfChangeType) string {
	switch t {
	case raft.ConfAddVoter:
		return "AddVoter"
	case raft.ConfAddLearner:
		return "AddLearner"
	case raft.ConfRemove:
		return "Remove"
	case raft.ConfUpdate:
		return "Update"
	}
	return fmt.Sprint(int(t))
}
