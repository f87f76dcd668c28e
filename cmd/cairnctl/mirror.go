package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/mirror"
)

// mirrorOptions are make-mirror's flags: the keys to copy and the
// destination's connection.
type mirrorOptions struct {
	prefix, destPrefix            string
	noDestPrefix, destInsecure    bool
	destCert, destKey, destCACert string
	destUser, destPassword        string
}

func (c *ctl) makeMirrorCommand() *cobra.Command {
	var o mirrorOptions
	cmd := &cobra.Command{
		Use:   "make-mirror [options] <destination>",
		Short: "Makes a mirror at the destination etcd cluster",
		Long: `Copies the keys (under --prefix) to the destination cluster, then every change as it
comes, each revision's changes in one transaction, until interrupted; every 30 s it
prints how many keys it has copied.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fail(exitBadArgs, errors.New("make-mirror takes one destination argument"))
			}
			if o.noDestPrefix && o.destPrefix != "" {
				return fail(exitBadArgs, errors.New("`--dest-prefix` and `--no-dest-prefix` cannot be set at the same time, choose one"))
			}
			dest, err := c.destClient(args[0], o)
			if err != nil {
				return err
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			return fail(exitError, c.mirror(c.ctx, cli, dest, o))
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.prefix, "prefix", "", "Key-value prefix to mirror")
	f.StringVar(&o.destPrefix, "dest-prefix", "", "destination prefix to mirror a prefix to a different prefix in the destination cluster")
	f.BoolVar(&o.noDestPrefix, "no-dest-prefix", false, "mirror key-values to the root of the destination cluster")
	f.StringVar(&o.destCert, "dest-cert", "", "Identify secure client using this TLS certificate file for the destination cluster")
	f.StringVar(&o.destKey, "dest-key", "", "Identify secure client using this TLS key file")
	f.StringVar(&o.destCACert, "dest-cacert", "", "Verify certificates of TLS enabled secure servers using this CA bundle")
	f.BoolVar(&o.destInsecure, "dest-insecure-transport", true, "Disable transport security for client connections")
	f.StringVar(&o.destUser, "dest-user", "", "Destination username[:password] for authentication (prompt if password is not supplied)")
	f.StringVar(&o.destPassword, "dest-password", "", "Destination password for authentication (if this option is used, --user option shouldn't include password)")
	return cmd
}

// destClient is a client of the destination, with the global timeouts and
// the --dest-* security and user.
func (c *ctl) destClient(endpoint string, o mirrorOptions) (*clientv3.Client, error) {
	d := &ctl{ctx: c.ctx, in: c.in, out: c.out, errOut: c.errOut, g: c.g, lg: c.lg, changed: map[string]bool{}}
	d.g.cert, d.g.key, d.g.cacert, d.g.insecure = o.destCert, o.destKey, o.destCACert, o.destInsecure
	d.g.skipVerify, d.g.discoverySrv = false, ""
	d.g.user, d.g.password = o.destUser, o.destPassword
	cfg, err := d.config([]string{endpoint})
	if err != nil {
		return nil, err
	}
	return c.dial(cfg)
}

// mirror copies the keys under o.prefix to dest, then their changes as
// they come; it returns only on an error.
func (c *ctl) mirror(ctx context.Context, cli, dest *clientv3.Client, o mirrorOptions) error {
	var total atomic.Int64
	go func() {
		for {
			time.Sleep(30 * time.Second)
			fmt.Fprintln(c.out, total.Load())
		}
	}()
	destPrefix := o.destPrefix
	if !o.noDestPrefix && destPrefix == "" {
		destPrefix = o.prefix
	}
	rename := func(key []byte) string { return strings.Replace(string(key), o.prefix, destPrefix, 1) }
	s := mirror.NewSyncer(cli, o.prefix, 0)
	rc, errc := s.SyncBase(ctx)
	for r := range rc {
		for _, kv := range r.Kvs {
			if _, err := dest.Put(ctx, rename(kv.Key), string(kv.Value)); err != nil {
				return err
			}
			total.Add(1)
		}
	}
	if err := <-errc; err != nil {
		return err
	}
	for wr := range s.SyncUpdates(ctx) {
		if wr.CompactRevision != 0 {
			return rpctypes.ErrCompacted
		}
		// One transaction for each revision's events.
		var ops []clientv3.Op
		var lastRev int64
		flush := func() error {
			if len(ops) == 0 {
				return nil
			}
			_, err := dest.Txn(ctx).Then(ops...).Commit()
			ops = nil
			return err
		}
		for _, ev := range wr.Events {
			if lastRev != 0 && ev.Kv.ModRevision > lastRev {
				if err := flush(); err != nil {
					return err
				}
			}
			lastRev = ev.Kv.ModRevision
			switch ev.Type {
			case mvccpb.PUT:
				ops = append(ops, clientv3.OpPut(rename(ev.Kv.Key), string(ev.Kv.Value)))
			case mvccpb.DELETE:
				ops = append(ops, clientv3.OpDelete(rename(ev.Kv.Key)))
			}
			total.Add(1)
		}
		if err := flush(); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("the watch of the source ended")
}
