package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (c *ctl) leaseCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "lease <subcommand>", Short: "Lease related commands"}
	var keys, once bool
	ttl := &cobra.Command{
		Use:   "timetolive <leaseID> [options]",
		Short: "Get lease information",
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := leaseArg(args, "lease timetolive command needs lease ID as argument")
			if err != nil {
				return err
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			var opts []clientv3.LeaseOption
			if keys {
				opts = append(opts, clientv3.WithAttachedKeys())
			}
			resp, err := cli.TimeToLive(context.TODO(), id, opts...)
			if err != nil {
				return fail(exitBadConnection, err)
			}
			return c.p.show(timeToLiveView(resp, keys))
		},
	}
	ttl.Flags().BoolVar(&keys, "keys", false, "Get keys attached to this lease")
	keepAlive := &cobra.Command{
		Use:   "keep-alive [options] <leaseID>",
		Short: "Keeps leases alive (renew)",
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := leaseArg(args, "lease keep-alive command needs lease ID as argument")
			if err != nil {
				return err
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			if once {
				resp, err := cli.KeepAliveOnce(context.TODO(), id)
				if err != nil {
					return fail(exitBadConnection, err)
				}
				return c.p.show(keepAliveView(resp))
			}
			ch, err := cli.KeepAlive(context.TODO(), id)
			if err != nil {
				return fail(exitBadConnection, err)
			}
			for resp := range ch {
				if err := c.p.show(keepAliveView(resp)); err != nil {
					return err
				}
			}
			if c.p.format == "simple" {
				fmt.Fprintf(c.out, "lease %016x expired or revoked.\n", id)
			}
			return nil
		},
	}
	keepAlive.Flags().BoolVar(&once, "once", false, "Resets the keep-alive time to its original value and cobrautl.Exits immediately")
	cmd.AddCommand(
		&cobra.Command{
			Use:   "grant <ttl>",
			Short: "Creates leases",
			RunE: func(cmd *cobra.Command, args []string) error {
				if len(args) != 1 {
					return fail(exitBadArgs, errors.New("lease grant command needs TTL argument"))
				}
				ttl, err := strconv.ParseInt(args[0], 10, 64)
				if err != nil {
					return failf(exitBadArgs, "bad TTL (%v)", err)
				}
				return c.call(func(ctx context.Context, cli *clientv3.Client) error {
					resp, err := cli.Grant(ctx, ttl)
					if err != nil {
						return failf(exitError, "failed to grant lease (%v)", err)
					}
					return c.p.show(view{
						msg: resp,
						simple: func(p *printer) {
							fmt.Fprintf(p.w, "lease %016x granted with TTL(%ds)\n", resp.ID, resp.TTL)
						},
						fields: func(f *fields) {
							f.header(resp.ResponseHeader)
							f.n("ID", resp.ID)
							f.n("TTL", resp.TTL)
						},
					})
				})
			},
		},
		&cobra.Command{
			Use:   "revoke <leaseID>",
			Short: "Revokes leases",
			RunE: func(cmd *cobra.Command, args []string) error {
				id, err := leaseArg(args, "lease revoke command needs 1 argument")
				if err != nil {
					return err
				}
				return c.call(func(ctx context.Context, cli *clientv3.Client) error {
					resp, err := cli.Revoke(ctx, id)
					if err != nil {
						return failf(exitError, "failed to revoke lease (%v)", err)
					}
					return c.p.show(view{
						msg:    resp, // (not a proto.Message: etcdctl has no protobuf for it either)
						simple: func(p *printer) { fmt.Fprintf(p.w, "lease %016x revoked\n", id) },
						fields: func(f *fields) { f.header(resp.Header) },
					})
				})
			},
		},
		ttl,
		&cobra.Command{
			Use:   "list",
			Short: "List all active leases",
			RunE: func(cmd *cobra.Command, args []string) error {
				cli, err := c.client()
				if err != nil {
					return err
				}
				resp, err := cli.Leases(context.TODO())
				if err != nil {
					return fail(exitBadConnection, err)
				}
				return c.p.show(view{
					msg: resp,
					simple: func(p *printer) {
						fmt.Fprintf(p.w, "found %d leases\n", len(resp.Leases))
						for _, l := range resp.Leases {
							fmt.Fprintf(p.w, "%016x\n", l.ID)
						}
					},
					fields: func(f *fields) {
						f.header(resp.ResponseHeader)
						for _, l := range resp.Leases {
							f.n("ID", l.ID)
						}
					},
				})
			},
		},
		keepAlive,
	)
	return cmd
}

// leaseArg parses the one argument, a lease ID in hex (usage: etcdctl's
// message when there is not one argument).
func leaseArg(args []string, usage string) (clientv3.LeaseID, error) {
	if len(args) != 1 {
		return 0, fail(exitBadArgs, errors.New(usage))
	}
	return leaseID(args[0])
}

// leaseID parses a lease ID given in hex.
func leaseID(s string) (clientv3.LeaseID, error) {
	id, err := strconv.ParseInt(s, 16, 64)
	if err != nil {
		return 0, failf(exitBadArgs, "bad lease ID arg (%v), expecting ID in Hex", err)
	}
	return clientv3.LeaseID(id), nil
}

func timeToLiveView(r *clientv3.LeaseTimeToLiveResponse, keys bool) view {
	return view{
		msg: r,
		simple: func(p *printer) {
			if r.GrantedTTL == 0 && r.TTL == -1 {
				fmt.Fprintf(p.w, "lease %016x already expired\n", r.ID)
				return
			}
			txt := fmt.Sprintf("lease %016x granted with TTL(%ds), remaining(%ds)", r.ID, r.GrantedTTL, r.TTL)
			if keys {
				ks := make([]string, len(r.Keys))
				for i, k := range r.Keys {
					ks[i] = string(k)
				}
				txt += fmt.Sprintf(", attached keys(%v)", ks)
			}
			fmt.Fprintln(p.w, txt)
		},
		fields: func(f *fields) {
			f.header(r.ResponseHeader)
			f.n("ID", r.ID)
			f.n("TTL", r.TTL)
			f.n("GrantedTTL", r.GrantedTTL)
			for _, k := range r.Keys {
				f.s("Key", string(k))
			}
		},
	}
}

func keepAliveView(r *clientv3.LeaseKeepAliveResponse) view {
	return view{
		msg:    r,
		simple: func(p *printer) { fmt.Fprintf(p.w, "lease %016x keepalived with TTL(%d)\n", r.ID, r.TTL) },
		fields: func(f *fields) {
			f.header(r.ResponseHeader)
			f.n("ID", r.ID)
			f.n("TTL", r.TTL)
		},
	}
}
