package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	errBadArgsNum            = errors.New("bad number of arguments")
	errBadArgsNumConflictEnv = errors.New("bad number of arguments (found conflicting environment key)")
	errBadArgsNumSeparator   = errors.New("bad number of arguments (found separator --, but no commands)")
)

// watchOptions are watch's flags.
type watchOptions struct {
	rev                                   int64
	prefix, interactive, prevKV, progress bool
}

func (o *watchOptions) flags(f *pflag.FlagSet) {
	f.BoolVarP(&o.interactive, "interactive", "i", false, "Interactive mode")
	f.BoolVar(&o.prefix, "prefix", false, "Watch on a prefix if prefix is set")
	f.Int64Var(&o.rev, "rev", 0, "Revision to start watching")
	f.BoolVar(&o.prevKV, "prev-kv", false, "get the previous key-value pair before the event happens")
	f.BoolVar(&o.progress, "progress-notify", false, "get periodic watch progress notification from server")
}

func (c *ctl) watchCommand() *cobra.Command {
	var o watchOptions
	cmd := &cobra.Command{
		Use:   "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
		Short: "Watches events stream on keys or prefixes",
		Long: `Watches a key, a range or a prefix, and prints each event as it comes. After --, a
command to run for each event, with ETCD_WATCH_REVISION, ETCD_WATCH_EVENT_TYPE,
ETCD_WATCH_KEY and ETCD_WATCH_VALUE set. ETCDCTL_WATCH_KEY and
ETCDCTL_WATCH_RANGE_END give the key and range end instead of arguments. With -i,
reads "watch [options] key [range_end]" and "progress" lines from standard input.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			envKey, envRange := os.Getenv("ETCDCTL_WATCH_KEY"), os.Getenv("ETCDCTL_WATCH_RANGE_END")
			if envKey == "" && envRange != "" {
				return failf(exitBadArgs, "ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END=%q", envRange)
			}
			if o.interactive {
				return c.watchInteractive(o, envKey, envRange)
			}
			keys, execArgs, err := watchArgs(args, cmd.ArgsLenAtDash(), envKey, envRange)
			if err != nil {
				return fail(exitBadArgs, err)
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			wc, err := watch(cli, keys, o)
			if err != nil {
				return fail(exitBadArgs, err)
			}
			if err := c.printWatch(cli, wc, execArgs); err != nil {
				return err
			}
			return fail(exitInterrupted, errors.New("watch is canceled by the server"))
		},
	}
	o.flags(cmd.Flags())
	return cmd
}

// watchArgs splits a watch's arguments (dash: where "--" was, or -1) into
// the key and range end (from the environment when set there) and the
// command to run for each event.
func watchArgs(args []string, dash int, envKey, envRange string) (keys, execArgs []string, err error) {
	keys = args
	if dash >= 0 {
		keys, execArgs = args[:dash], args[dash:]
		if len(execArgs) == 0 {
			return nil, nil, errBadArgsNumSeparator
		}
	}
	if envKey != "" {
		if len(keys) > 0 {
			return nil, nil, errBadArgsNumConflictEnv
		}
		keys = []string{envKey}
		if envRange != "" {
			keys = append(keys, envRange)
		}
	}
	if len(keys) == 0 {
		return nil, nil, errBadArgsNum
	}
	return keys, execArgs, nil
}

// watch starts a watch of keys (a key, and a range end) with o's options,
// on a context that requires a leader.
func watch(cli *clientv3.Client, keys []string, o watchOptions) (clientv3.WatchChan, error) {
	if len(keys) < 1 {
		return nil, errBadArgsNum
	}
	opts := []clientv3.OpOption{clientv3.WithRev(o.rev)}
	if len(keys) == 2 {
		if o.prefix {
			return nil, errors.New("`range_end` and `--prefix` are mutually exclusive")
		}
		opts = append(opts, clientv3.WithRange(keys[1]))
	}
	if o.prefix {
		opts = append(opts, clientv3.WithPrefix())
	}
	if o.prevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	if o.progress {
		opts = append(opts, clientv3.WithProgressNotify())
	}
	return cli.Watch(clientv3.WithRequireLeader(context.Background()), keys[0], opts...), nil
}

// printWatch prints each response of wc until it closes, running
// execArgs (if any) for each event; a command that fails ends cairnctl
// (exit 1).
func (c *ctl) printWatch(cli *clientv3.Client, wc clientv3.WatchChan, execArgs []string) error {
	for resp := range wc {
		if resp.Canceled {
			fmt.Fprintf(c.errOut, "watch was canceled (%v)\n", resp.Err())
		}
		if resp.IsProgressNotify() {
			fmt.Fprintf(c.out, "progress notify: %d\n", resp.Header.Revision)
		}
		if err := c.p.show(watchView(&resp)); err != nil {
			return err
		}
		for _, ev := range resp.Events {
			if len(execArgs) == 0 {
				break
			}
			cmd := exec.CommandContext(cli.Ctx(), execArgs[0], execArgs[1:]...)
			cmd.Env = append(os.Environ(),
				fmt.Sprintf("ETCD_WATCH_REVISION=%d", resp.Header.Revision),
				fmt.Sprintf("ETCD_WATCH_EVENT_TYPE=%q", ev.Type),
				fmt.Sprintf("ETCD_WATCH_KEY=%q", ev.Kv.Key),
				fmt.Sprintf("ETCD_WATCH_VALUE=%q", ev.Kv.Value))
			cmd.Stdout, cmd.Stderr = c.out, c.errOut
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(c.errOut, "command %q error (%v)\n", execArgs, err)
				return silentExit(exitError)
			}
		}
	}
	return nil
}

// watchJSON is a watch response as etcdctl writes it in JSON.
type watchJSON struct {
	Header          *pb.ResponseHeader
	Events          []*clientv3.Event
	CompactRevision int64
	Canceled        bool
	Created         bool
}

func watchView(r *clientv3.WatchResponse) view {
	h := r.Header
	if h == nil {
		h = &pb.ResponseHeader{}
	}
	evs := make([]*mvccpb.Event, len(r.Events))
	for i, ev := range r.Events {
		evs[i] = (*mvccpb.Event)(ev)
	}
	return view{
		msg:  watchJSON{h, r.Events, r.CompactRevision, r.Canceled, r.Created},
		wire: &pb.WatchResponse{Header: h, Events: evs, CompactRevision: r.CompactRevision, Canceled: r.Canceled, Created: r.Created},
		simple: func(p *printer) {
			for _, ev := range r.Events {
				fmt.Fprintln(p.w, ev.Type)
				if ev.PrevKv != nil {
					p.kv(ev.PrevKv)
				}
				p.kv(ev.Kv)
			}
		},
		fields: func(f *fields) {
			f.header(h)
			for _, ev := range r.Events {
				f.n("Type", ev.Type)
				if ev.PrevKv != nil {
					f.kv("Prev", ev.PrevKv)
				}
				f.kv("", ev.Kv)
			}
		},
	}
}

// watchInteractive reads watch and progress requests from the input,
// until it ends.
func (c *ctl) watchInteractive(top watchOptions, envKey, envRange string) error {
	cli, err := c.client()
	if err != nil {
		return err
	}
	r := bufio.NewReader(c.in)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return failf(exitInvalidInput, "error reading watch request line: %v", err)
		}
		l = strings.TrimSuffix(l, "\n")
		args := argify(l)
		if len(args) < 1 {
			fmt.Fprintf(c.errOut, "Invalid command: %s (watch and progress supported)\n", l)
			continue
		}
		switch args[0] {
		case "watch":
			if len(args) < 2 && envKey == "" {
				fmt.Fprintf(c.errOut, "Invalid command %s (command type or key is not provided)\n", l)
				continue
			}
			o := watchOptions{progress: top.progress}
			f := pflag.NewFlagSet("watch", pflag.ContinueOnError)
			f.SetOutput(io.Discard)
			o.flags(f)
			if err := f.Parse(args[1:]); err != nil {
				return fail(exitBadArgs, err)
			}
			keys, execArgs, err := watchArgs(f.Args(), f.ArgsLenAtDash(), envKey, envRange)
			if err != nil {
				return fail(exitBadArgs, err)
			}
			wc, err := watch(cli, keys, o)
			if err != nil {
				fmt.Fprintf(c.errOut, "Invalid command %s (%v)\n", l, err)
				continue
			}
			go func() { _ = c.printWatch(cli, wc, execArgs) }()
		case "progress":
			if err := cli.RequestProgress(clientv3.WithRequireLeader(context.Background())); err != nil {
				return fail(exitError, err)
			}
		default:
			fmt.Fprintf(c.errOut, "Invalid command %s (only support watch)\n", l)
		}
	}
}
