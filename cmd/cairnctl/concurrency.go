package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// untilSignal is a context ended by SIGINT or SIGTERM.
func untilSignal() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

func (c *ctl) lockCommand() *cobra.Command {
	ttl := 10
	cmd := &cobra.Command{
		Use:   "lock <lockname> [exec-command arg1 arg2 ...]",
		Short: "Acquires a named lock",
		Long: `Acquires the lock (a key under lockname held by a session's lease), prints its key
and holds it until interrupted; or runs the command under it, with ETCD_LOCK_KEY and
ETCD_LOCK_REV set, and releases it when the command ends (exiting with its code).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return fail(exitBadArgs, errors.New("lock takes a lock name argument and an optional command to execute"))
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			if err := c.lock(cli, args[0], args[1:], ttl); err != nil {
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					return fail(ee.ExitCode(), err)
				}
				return fail(exitError, err)
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&ttl, "ttl", "", ttl, "timeout for session")
	return cmd
}

// lock takes the lock and holds it until interrupted, or runs command
// under it. Its session's lease is left to expire (as etcdctl leaves it),
// not revoked.
func (c *ctl) lock(cli *clientv3.Client, name string, command []string, ttl int) error {
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(ttl))
	if err != nil {
		return err
	}
	ctx, cancel := untilSignal()
	defer cancel()
	m := concurrency.NewMutex(s, name)
	if err := m.Lock(ctx); err != nil {
		return err
	}
	if len(command) > 0 {
		cmd := exec.Command(command[0], command[1:]...)
		cmd.Env = append([]string{"ETCD_LOCK_KEY=" + m.Key(), fmt.Sprintf("ETCD_LOCK_REV=%d", m.Header().Revision)}, os.Environ()...)
		cmd.Stdout, cmd.Stderr = c.out, c.errOut
		err := cmd.Run()
		uerr := m.Unlock(context.TODO())
		if err != nil {
			return err
		}
		return uerr
	}
	resp, err := cli.Get(ctx, m.Key())
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		return errors.New("lock lost on init")
	}
	if err := c.p.show(getView((*pb.RangeResponse)(resp))); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return m.Unlock(context.TODO())
	case <-s.Done():
	}
	return errors.New("session expired")
}

func (c *ctl) electCommand() *cobra.Command {
	var listen bool
	cmd := &cobra.Command{
		Use:   "elect <election-name> [proposal]",
		Short: "Observes and participates in leader election",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 && len(args) != 2 {
				return fail(exitBadArgs, errors.New("elect takes one election name argument and an optional proposal argument"))
			}
			if len(args) == 1 && !listen {
				return fail(exitBadArgs, errors.New("no proposal argument but -l not set"))
			}
			if len(args) == 2 && listen {
				return fail(exitBadArgs, errors.New("proposal given but -l is set"))
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			if len(args) == 1 {
				err = c.observe(cli, args[0])
			} else {
				err = c.campaign(cli, args[0], args[1])
			}
			if err != nil {
				return fail(exitError, err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&listen, "listen", "l", false, "observation mode")
	return cmd
}

// observe prints each leader's proposal as it changes, until interrupted.
func (c *ctl) observe(cli *clientv3.Client, election string) error {
	s, err := concurrency.NewSession(cli)
	if err != nil {
		return err
	}
	e := concurrency.NewElection(s, election)
	ctx, cancel := untilSignal()
	defer cancel()
	for resp := range e.Observe(ctx) {
		if err := c.p.show(getView((*pb.RangeResponse)(resp))); err != nil {
			return err
		}
	}
	if ctx.Err() == nil {
		return errors.New("elect: observer lost")
	}
	return nil
}

// campaign waits to be leader, prints the leader key and proposal, and
// leads until interrupted, then resigns.
func (c *ctl) campaign(cli *clientv3.Client, election, proposal string) error {
	s, err := concurrency.NewSession(cli)
	if err != nil {
		return err
	}
	e := concurrency.NewElection(s, election)
	ctx, cancel := untilSignal()
	defer cancel()
	if err := e.Campaign(ctx, proposal); err != nil {
		return err
	}
	resp, err := cli.Get(ctx, e.Key())
	if err != nil {
		return err
	}
	if err := c.p.show(getView((*pb.RangeResponse)(resp))); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-s.Done():
		return errors.New("elect: session expired")
	}
	return e.Resign(context.TODO())
}
