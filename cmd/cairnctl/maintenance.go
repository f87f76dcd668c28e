package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/server/member"
)

func (c *ctl) alarmCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "alarm <subcommand>", Short: "Alarm related commands"}
	alarm := func(use, short, noArgsMsg string, do func(context.Context, *clientv3.Client) (*clientv3.AlarmResponse, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := noArgs(args, noArgsMsg); err != nil {
					return err
				}
				return c.call(func(ctx context.Context, cli *clientv3.Client) error {
					resp, err := do(ctx, cli)
					if err != nil {
						return err
					}
					return c.p.show(alarmView((*pb.AlarmResponse)(resp)))
				})
			},
		}
	}
	cmd.AddCommand(
		alarm("disarm", "Disarms all alarms", "alarm disarm command accepts no arguments",
			func(ctx context.Context, cli *clientv3.Client) (*clientv3.AlarmResponse, error) {
				return cli.AlarmDisarm(ctx, &clientv3.AlarmMember{})
			}),
		alarm("list", "Lists all alarms", "alarm list command accepts no arguments",
			func(ctx context.Context, cli *clientv3.Client) (*clientv3.AlarmResponse, error) {
				return cli.AlarmList(ctx)
			}),
	)
	return cmd
}

func alarmView(r *pb.AlarmResponse) view {
	return view{
		msg: r,
		simple: func(p *printer) {
			for _, a := range r.Alarms {
				fmt.Fprintln(p.w, alarmText(a))
			}
		},
		fields: func(f *fields) {
			f.header(r.Header)
			for _, a := range r.Alarms {
				f.n("MemberID", a.MemberID)
				f.n("AlarmType", a.Alarm)
				f.blank()
			}
		},
	}
}

// alarmText is an alarm in the protobuf text form etcdctl prints:
// "memberID:2908439535060005921 alarm:NOSPACE " (zero fields left out).
func alarmText(a *pb.AlarmMember) string {
	s := ""
	if a.MemberID != 0 {
		s += "memberID:" + strconv.FormatUint(a.MemberID, 10) + " "
	}
	if a.Alarm != pb.AlarmType_NONE {
		s += "alarm:" + a.Alarm.String() + " "
	}
	return s
}

func (c *ctl) defragCommand() *cobra.Command {
	var cluster bool
	var dataDir string
	cmd := &cobra.Command{
		Use:   "defrag",
		Short: "Defragments the storage of the etcd members with given endpoints",
		Long: `Defragments each member's page file online (the member keeps serving), or with
--data-dir the page file of a data directory no member is running on.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir != "" {
				return c.defragDataDir(dataDir)
			}
			eps, err := c.clusterEndpoints(cluster)
			if err != nil {
				return err
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			failures := 0
			for _, ep := range eps {
				ctx, cancel := c.commandCtx()
				_, err := cli.Defragment(ctx, ep)
				cancel()
				if err != nil {
					fmt.Fprintf(c.errOut, "Failed to defragment etcd member[%s] (%v)\n", ep, err)
					failures++
				} else {
					fmt.Fprintf(c.out, "Finished defragmenting etcd member[%s]\n", ep)
				}
			}
			if failures > 0 {
				return silentExit(exitError)
			}
			return nil
		},
	}
	cmd.PersistentFlags().BoolVar(&cluster, "cluster", false, "use all endpoints from the cluster member list")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "Optional. If present, defragments a data directory not in use by etcd.")
	return cmd
}

func (c *ctl) moveLeaderCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "move-leader <transferee-member-id>",
		Short: "Transfers leadership to another etcd cluster member.",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fail(exitBadArgs, errors.New("move-leader command needs 1 argument"))
			}
			target, err := strconv.ParseUint(args[0], 16, 64)
			if err != nil {
				return fail(exitBadArgs, err)
			}
			eps, err := c.endpoints()
			if err != nil {
				return fail(exitError, err)
			}
			ctx, cancel := c.commandCtx()
			defer cancel()
			// The request goes to the leader: the endpoint whose status
			// says it leads.
			var leader *clientv3.Client
			var leaderID uint64
			for _, ep := range eps {
				cli, err := c.clientOf([]string{ep})
				if err != nil {
					return err
				}
				resp, err := cli.Status(ctx, ep)
				if err != nil {
					return fail(exitError, err)
				}
				if resp.Header.MemberId == resp.Leader {
					leader, leaderID = cli, resp.Leader
					break
				}
			}
			if leader == nil {
				return failf(exitBadArgs, "no leader endpoint given at %v", eps)
			}
			resp, err := leader.MoveLeader(ctx, target)
			if err != nil {
				return fail(exitError, err)
			}
			return c.p.show(view{
				msg: (*pb.MoveLeaderResponse)(resp),
				simple: func(p *printer) {
					fmt.Fprintf(p.w, "Leadership transferred from %s to %s\n",
						strconv.FormatUint(leaderID, 16), strconv.FormatUint(target, 16))
				},
			})
		},
	}
}

func (c *ctl) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Prints the version of etcdctl",
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintln(c.out, "etcdctl version:", etcdVersion)
			fmt.Fprintln(c.out, "API version:", apiVersion)
		},
	}
}

// The etcd versions cairnctl speaks as: those cairn's server says it is.
const (
	etcdVersion = member.Version
	apiVersion  = "3.5"
)

// snapshotSave streams the snapshot of the one endpoint into path
// (through path.part, renamed once whole and synced), compressed with
// zstd if compress, logging each step as etcdctl does.
func (c *ctl) snapshotSave(ctx context.Context, path string, compress bool) error {
	eps, err := c.endpoints()
	if err != nil {
		return err
	}
	if len(eps) != 1 {
		return fmt.Errorf("snapshot must be requested to one selected node, not multiple %v", eps)
	}
	cli, err := c.client()
	if err != nil {
		return withCode(exitInterrupted, err) // (etcdctl's code for a failed save)
	}
	part := path + ".part"
	defer os.RemoveAll(part)
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("could not open %s (%w)", part, err)
	}
	defer f.Close()
	c.lg.Info("created temporary db file", zap.String("path", part))
	start := time.Now()
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return err
	}
	defer rc.Close()
	c.lg.Info("fetching snapshot", zap.String("endpoint", eps[0]))
	var w io.Writer = f
	var zw *zstd.Encoder
	if compress {
		if zw, err = zstd.NewWriter(f); err != nil {
			return err
		}
		w = zw
	}
	size, err := io.Copy(w, rc)
	if err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	c.lg.Info("fetched snapshot", zap.String("endpoint", eps[0]), zap.String("size", siBytes(uint64(size))),
		zap.String("took", time.Since(start).String()))
	if err := os.Rename(part, path); err != nil {
		return fmt.Errorf("could not rename %s to %s (%w)", part, path, err)
	}
	if err := vfs.Default.SyncDir(filepath.Dir(path)); err != nil {
		return err
	}
	c.lg.Info("saved", zap.String("path", path))
	return nil
}
