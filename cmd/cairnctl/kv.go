package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// getOptions are get's flags; op turns them and the arguments into a
// request (for get, and for a get in a txn).
type getOptions struct {
	consistency, order, sortBy                    string
	limit, rev                                    int64
	prefix, fromKey, keysOnly, countOnly, valOnly bool
}

func (o *getOptions) flags(f *pflag.FlagSet) {
	f.StringVar(&o.consistency, "consistency", "l", "Linearizable(l) or Serializable(s)")
	f.StringVar(&o.order, "order", "", "Order of results; ASCEND or DESCEND (ASCEND by default)")
	f.StringVar(&o.sortBy, "sort-by", "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION")
	f.Int64Var(&o.limit, "limit", 0, "Maximum number of results")
	f.BoolVar(&o.prefix, "prefix", false, "Get keys with matching prefix")
	f.BoolVar(&o.fromKey, "from-key", false, "Get keys that are greater than or equal to the given key using byte compare")
	f.Int64Var(&o.rev, "rev", 0, "Specify the kv revision")
	f.BoolVar(&o.keysOnly, "keys-only", false, "Get only the keys")
	f.BoolVar(&o.countOnly, "count-only", false, "Get only the count")
	f.BoolVar(&o.valOnly, "print-value-only", false, `Only write values when using the "simple" output format`)
}

func (o *getOptions) op(args []string) (clientv3.Op, error) {
	if len(args) == 0 {
		return clientv3.Op{}, errors.New("get command needs one argument as key and an optional argument as range_end")
	}
	if o.prefix && o.fromKey {
		return clientv3.Op{}, errors.New("`--prefix` and `--from-key` cannot be set at the same time, choose one")
	}
	if o.keysOnly && o.countOnly {
		return clientv3.Op{}, errors.New("`--keys-only` and `--count-only` cannot be set at the same time, choose one")
	}
	var opts []clientv3.OpOption
	switch o.consistency {
	case "s":
		opts = append(opts, clientv3.WithSerializable())
	case "l":
	default:
		return clientv3.Op{}, fail(exitBadFeature, fmt.Errorf("unknown consistency flag %q", o.consistency))
	}
	key := args[0]
	if len(args) > 1 {
		if o.prefix || o.fromKey {
			return clientv3.Op{}, errors.New("too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
		}
		opts = append(opts, clientv3.WithRange(args[1]))
	}
	opts = append(opts, clientv3.WithLimit(o.limit))
	if o.rev > 0 {
		opts = append(opts, clientv3.WithRev(o.rev))
	}
	order := clientv3.SortNone
	switch strings.ToUpper(o.order) {
	case "ASCEND":
		order = clientv3.SortAscend
	case "DESCEND":
		order = clientv3.SortDescend
	case "":
	default:
		return clientv3.Op{}, fail(exitBadFeature, fmt.Errorf("bad sort order %v", o.order))
	}
	target := clientv3.SortByKey
	switch strings.ToUpper(o.sortBy) {
	case "CREATE":
		target = clientv3.SortByCreateRevision
	case "KEY":
		target = clientv3.SortByKey
	case "MODIFY":
		target = clientv3.SortByModRevision
	case "VALUE":
		target = clientv3.SortByValue
	case "VERSION":
		target = clientv3.SortByVersion
	case "":
	default:
		return clientv3.Op{}, fail(exitBadFeature, fmt.Errorf("bad sort target %v", o.sortBy))
	}
	opts = append(opts, clientv3.WithSort(target, order))
	key, opts = rangeFlags(key, o.prefix, o.fromKey, opts)
	if o.keysOnly {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	if o.countOnly {
		opts = append(opts, clientv3.WithCountOnly())
	}
	return clientv3.OpGet(key, opts...), nil
}

// rangeFlags applies --prefix and --from-key to key: an empty key with
// either is the whole key space.
func rangeFlags(key string, prefix, fromKey bool, opts []clientv3.OpOption) (string, []clientv3.OpOption) {
	switch {
	case prefix && key == "", fromKey && key == "":
		return "\x00", append(opts, clientv3.WithFromKey())
	case prefix:
		return key, append(opts, clientv3.WithPrefix())
	case fromKey:
		return key, append(opts, clientv3.WithFromKey())
	}
	return key, opts
}

func (c *ctl) getCommand() *cobra.Command {
	var o getOptions
	cmd := &cobra.Command{
		Use:   "get [options] <key> [range_end]",
		Short: "Gets the key or a range of keys",
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := o.op(args)
			if err != nil {
				return badArgs(err)
			}
			return c.call(func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.Do(ctx, op)
				if err != nil {
					return err
				}
				if o.countOnly && c.p.format != "fields" {
					return fail(exitBadArgs, errors.New("--count-only is only for `--write-out=fields`"))
				}
				if o.valOnly {
					if c.p.format != "simple" {
						return fail(exitBadArgs, errors.New("print-value-only is only for `--write-out=simple`"))
					}
					c.p.valueOnly = true
				}
				return c.p.show(getView((*pb.RangeResponse)(resp.Get())))
			})
		},
	}
	o.flags(cmd.Flags())
	return cmd
}

// badArgs is err with exit code 128, unless it has a code.
func badArgs(err error) error {
	var ce *codeError
	if errors.As(err, &ce) {
		return err
	}
	return fail(exitBadArgs, err)
}

func getView(r *pb.RangeResponse) view {
	return view{
		msg: r,
		simple: func(p *printer) {
			for _, kv := range r.Kvs {
				p.kv(kv)
			}
		},
		fields: func(f *fields) {
			f.header(r.Header)
			for _, kv := range r.Kvs {
				f.kv("", kv)
			}
			f.n("More", r.More)
			f.n("Count", r.Count)
		},
	}
}

// putOptions are put's flags.
type putOptions struct {
	lease                          string
	prevKV, ignoreVal, ignoreLease bool
}

func (o *putOptions) flags(f *pflag.FlagSet) {
	f.StringVar(&o.lease, "lease", "0", "lease ID (in hexadecimal) to attach to the key")
	f.BoolVar(&o.prevKV, "prev-kv", false, "return the previous key-value pair before modification")
	f.BoolVar(&o.ignoreVal, "ignore-value", false, "updates the key using its current value")
	f.BoolVar(&o.ignoreLease, "ignore-lease", false, "updates the key using its current lease")
}

// op is the put of args: the key, and the value (from in when not an
// argument and not --ignore-value).
func (o *putOptions) op(args []string, in io.Reader) (clientv3.Op, error) {
	const usage = "put command needs 1 argument and input from stdin or 2 arguments"
	if len(args) == 0 {
		return clientv3.Op{}, errors.New(usage)
	}
	key := args[0]
	if o.ignoreVal && len(args) > 1 {
		return clientv3.Op{}, errors.New("put command needs only 1 argument when 'ignore-value' is set")
	}
	var value string
	if !o.ignoreVal {
		if len(args) > 1 {
			value = args[1]
		} else {
			b, err := io.ReadAll(in)
			if err != nil || len(b) == 0 {
				return clientv3.Op{}, errors.New(usage)
			}
			value = string(b)
		}
	}
	id, err := strconv.ParseInt(o.lease, 16, 64)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("bad lease ID (%v), expecting ID in Hex", err)
	}
	var opts []clientv3.OpOption
	if id != 0 {
		opts = append(opts, clientv3.WithLease(clientv3.LeaseID(id)))
	}
	if o.prevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	if o.ignoreVal {
		opts = append(opts, clientv3.WithIgnoreValue())
	}
	if o.ignoreLease {
		opts = append(opts, clientv3.WithIgnoreLease())
	}
	return clientv3.OpPut(key, value, opts...), nil
}

func (c *ctl) putCommand() *cobra.Command {
	var o putOptions
	cmd := &cobra.Command{
		Use:   "put [options] <key> <value> (<value> can also be given from stdin)",
		Short: "Puts the given key into the store",
		Long: `
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
`,
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := o.op(args, c.in)
			if err != nil {
				return badArgs(err)
			}
			return c.call(func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.Do(ctx, op)
				if err != nil {
					return err
				}
				return c.p.show(putView((*pb.PutResponse)(resp.Put())))
			})
		},
	}
	o.flags(cmd.Flags())
	return cmd
}

func putView(r *pb.PutResponse) view {
	return view{
		msg: r,
		simple: func(p *printer) {
			fmt.Fprintln(p.w, "OK")
			if r.PrevKv != nil {
				p.kv(r.PrevKv)
			}
		},
		fields: func(f *fields) {
			f.header(r.Header)
			if r.PrevKv != nil {
				f.kv("Prev", r.PrevKv)
			}
		},
	}
}

// delOptions are del's flags.
type delOptions struct{ prefix, prevKV, fromKey, rangeFlag bool }

func (o *delOptions) flags(f *pflag.FlagSet) {
	f.BoolVar(&o.prefix, "prefix", false, "delete keys with matching prefix")
	f.BoolVar(&o.prevKV, "prev-kv", false, "return deleted key-value pairs")
	f.BoolVar(&o.fromKey, "from-key", false, "delete keys that are greater than or equal to the given key using byte compare")
	f.BoolVar(&o.rangeFlag, "range", false, "delete range of keys")
}

// op is the delete of args; warn takes etcdctl's notice for a range
// given without --range.
func (o *delOptions) op(args []string, warn io.Writer) (clientv3.Op, error) {
	if len(args) == 0 || len(args) > 2 {
		return clientv3.Op{}, errors.New("del command needs one argument as key and an optional argument as range_end")
	}
	if o.prefix && o.fromKey {
		return clientv3.Op{}, errors.New("`--prefix` and `--from-key` cannot be set at the same time, choose one")
	}
	var opts []clientv3.OpOption
	key := args[0]
	if len(args) > 1 {
		if o.prefix || o.fromKey {
			return clientv3.Op{}, errors.New("too many arguments, only accept one argument when `--prefix` or `--from-key` is set")
		}
		opts = append(opts, clientv3.WithRange(args[1]))
		if !o.rangeFlag {
			fmt.Fprintln(warn, "In etcd v3.6, the operation will be suspended for a few seconds to provide the user time to verify range.")
		}
	}
	if o.prevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	key, opts = rangeFlags(key, o.prefix, o.fromKey, opts)
	return clientv3.OpDelete(key, opts...), nil
}

func (c *ctl) delCommand() *cobra.Command {
	var o delOptions
	cmd := &cobra.Command{
		Use:   "del [options] <key> [range_end]",
		Short: "Removes the specified key or range of keys [key, range_end)",
		RunE: func(cmd *cobra.Command, args []string) error {
			op, err := o.op(args, c.errOut)
			if err != nil {
				return badArgs(err)
			}
			return c.call(func(ctx context.Context, cli *clientv3.Client) error {
				resp, err := cli.Do(ctx, op)
				if err != nil {
					return err
				}
				return c.p.show(delView((*pb.DeleteRangeResponse)(resp.Del())))
			})
		},
	}
	o.flags(cmd.Flags())
	return cmd
}

func delView(r *pb.DeleteRangeResponse) view {
	return view{
		msg: r,
		simple: func(p *printer) {
			fmt.Fprintln(p.w, r.Deleted)
			for _, kv := range r.PrevKvs {
				p.kv(kv)
			}
		},
		fields: func(f *fields) {
			f.header(r.Header)
			f.n("Deleted", r.Deleted)
			for _, kv := range r.PrevKvs {
				f.kv("Prev", kv)
			}
		},
	}
}

func (c *ctl) txnCommand() *cobra.Command {
	var interactive bool
	cmd := &cobra.Command{
		Use:   "txn [options]",
		Short: "Txn processes all the requests in one transaction",
		Long: `Txn reads a transaction from standard input, in three parts each ended by an empty line:
compares (such as mod("key") > "0", value("key") = "v"), the requests run when all of
them hold (put, get, del, with their flags), and those run when one does not.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := noArgs(args, "txn command does not accept argument"); err != nil {
				return err
			}
			cli, err := c.client()
			if err != nil {
				return err
			}
			r := bufio.NewReader(c.in)
			prompt := func(s string) {
				if interactive {
					fmt.Fprintln(c.out, s)
				}
			}
			prompt("compares:")
			cmps, err := readCompares(r)
			if err != nil {
				return err
			}
			prompt("success requests (get, put, del):")
			then, err := c.readOps(r)
			if err != nil {
				return err
			}
			prompt("failure requests (get, put, del):")
			els, err := c.readOps(r)
			if err != nil {
				return err
			}
			resp, err := cli.Txn(context.Background()).If(cmps...).Then(then...).Else(els...).Commit()
			if err != nil {
				return fail(exitError, err)
			}
			return c.p.show(txnView((*pb.TxnResponse)(resp)))
		},
	}
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "Input transaction in interactive mode")
	return cmd
}

func txnView(r *pb.TxnResponse) view {
	return view{
		msg:  txnJSON(r),
		wire: r,
		simple: func(p *printer) {
			if r.Succeeded {
				fmt.Fprintln(p.w, "SUCCESS")
			} else {
				fmt.Fprintln(p.w, "FAILURE")
			}
			for _, op := range r.Responses {
				fmt.Fprintln(p.w)
				opView(op).simple(p)
			}
		},
		fields: func(f *fields) {
			f.header(r.Header)
			f.n("Succeeded", r.Succeeded)
			for _, op := range r.Responses {
				opView(op).fields(f)
			}
		},
	}
}

// txnJSON is a txn response as etcdctl writes it in JSON: each response
// under its oneof's protobuf name ("response_put").
func txnJSON(r *pb.TxnResponse) any {
	type op struct {
		Response map[string]any `json:"Response"`
	}
	out := struct {
		Header    *pb.ResponseHeader `json:"header,omitempty"`
		Succeeded bool               `json:"succeeded,omitempty"`
		Responses []op               `json:"responses,omitempty"`
	}{Header: r.Header, Succeeded: r.Succeeded}
	for _, resp := range r.Responses {
		var name string
		var v any
		switch x := resp.Response.(type) {
		case *pb.ResponseOp_ResponseRange:
			name, v = "response_range", x.ResponseRange
		case *pb.ResponseOp_ResponsePut:
			name, v = "response_put", x.ResponsePut
		case *pb.ResponseOp_ResponseDeleteRange:
			name, v = "response_delete_range", x.ResponseDeleteRange
		case *pb.ResponseOp_ResponseTxn:
			name, v = "response_txn", txnJSON(x.ResponseTxn)
		default:
			continue
		}
		out.Responses = append(out.Responses, op{map[string]any{name: v}})
	}
	return out
}

// opView is the view of one response of a txn.
func opView(op *pb.ResponseOp) view {
	switch v := op.Response.(type) {
	case *pb.ResponseOp_ResponseRange:
		return getView(v.ResponseRange)
	case *pb.ResponseOp_ResponsePut:
		return putView(v.ResponsePut)
	case *pb.ResponseOp_ResponseDeleteRange:
		return delView(v.ResponseDeleteRange)
	case *pb.ResponseOp_ResponseTxn:
		return txnView(v.ResponseTxn)
	}
	return view{
		simple: func(p *printer) { fmt.Fprintf(p.w, "unexpected response %v\n", op) },
		fields: func(f *fields) { f.s("Unknown", fmt.Sprint(op)) },
	}
}

// readLines reads lines up to an empty one (or the end of the input),
// each trimmed.
func readLines(r *bufio.Reader) ([]string, error) {
	var lines []string
	for {
		line, err := r.ReadString('\n')
		if err != nil { // (a part not ended by an empty line is refused, as etcdctl does)
			return nil, fail(exitInvalidInput, err)
		}
		line = strings.TrimSpace(line)
		if line == "" {
			return lines, nil
		}
		lines = append(lines, line)
	}
}

func readCompares(r *bufio.Reader) ([]clientv3.Cmp, error) {
	lines, err := readLines(r)
	if err != nil {
		return nil, err
	}
	var cmps []clientv3.Cmp
	for _, l := range lines {
		cmp, err := parseCompare(l)
		if err != nil {
			return nil, fail(exitInvalidInput, err)
		}
		cmps = append(cmps, cmp)
	}
	return cmps, nil
}

func (c *ctl) readOps(r *bufio.Reader) ([]clientv3.Op, error) {
	lines, err := readLines(r)
	if err != nil {
		return nil, err
	}
	var ops []clientv3.Op
	for _, l := range lines {
		op, err := c.parseOp(l)
		if err != nil {
			return nil, err
		}
		ops = append(ops, op)
	}
	return ops, nil
}

// parseOp parses a request line of a txn: put, get or del with their
// flags, as on the command line. A line that is none is invalid input
// (exit 3); a request with bad arguments is refused as on the command line.
func (c *ctl) parseOp(line string) (clientv3.Op, error) {
	args := argify(line)
	if len(args) < 2 {
		return clientv3.Op{}, failf(exitInvalidInput, "invalid txn compare request: %s", line)
	}
	bad := failf(exitInvalidInput, "invalid txn request: %s", line)
	f := pflag.NewFlagSet(args[0], pflag.ContinueOnError)
	f.SetOutput(io.Discard)
	var op func() (clientv3.Op, error)
	switch args[0] {
	case "put":
		var o putOptions
		o.flags(f)
		op = func() (clientv3.Op, error) { return o.op(f.Args(), strings.NewReader("")) }
	case "get":
		var o getOptions
		o.flags(f)
		op = func() (clientv3.Op, error) { return o.op(f.Args()) }
	case "del":
		var o delOptions
		o.flags(f)
		op = func() (clientv3.Op, error) { return o.op(f.Args(), c.errOut) }
	default:
		return clientv3.Op{}, bad
	}
	if err := f.Parse(args[1:]); err != nil {
		return clientv3.Op{}, bad
	}
	o, err := op()
	if err != nil {
		return clientv3.Op{}, badArgs(err)
	}
	return o, nil
}

// parseCompare parses a compare of a txn: target("key") op "value", the
// target one of ver (version), c (create), m (mod), val (value), lease
// (its ID in hex).
func parseCompare(line string) (clientv3.Cmp, error) {
	target, rest, ok := strings.Cut(line, "(")
	if !ok {
		return clientv3.Cmp{}, fmt.Errorf("malformed comparison: %s", line)
	}
	var key, op, val string
	n, serr := fmt.Sscanf(rest, "%q) %s %q", &key, &op, &val)
	if n != 3 {
		return clientv3.Cmp{}, fmt.Errorf("malformed comparison: %s; got %s(%q) %s %q", line, target, key, op, val)
	}
	if serr != nil {
		return clientv3.Cmp{}, fmt.Errorf("malformed comparison: %s (%v)", line, serr)
	}
	num := func(c clientv3.Cmp) (clientv3.Cmp, error) {
		v, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return clientv3.Cmp{}, fmt.Errorf("invalid txn compare request: %s", line)
		}
		return clientv3.Compare(c, op, v), nil
	}
	switch target {
	case "ver", "version":
		return num(clientv3.Version(key))
	case "c", "create":
		return num(clientv3.CreateRevision(key))
	case "m", "mod":
		return num(clientv3.ModRevision(key))
	case "val", "value":
		return clientv3.Compare(clientv3.Value(key), op, val), nil
	case "lease":
		// The lease in hex, as cairnctl prints lease IDs.
		id, err := strconv.ParseInt(val, 16, 64)
		if err != nil {
			return clientv3.Cmp{}, fmt.Errorf("invalid txn compare request: %s", line)
		}
		return clientv3.Compare(clientv3.LeaseValue(key), op, clientv3.LeaseID(id)), nil
	}
	return clientv3.Cmp{}, fmt.Errorf("malformed comparison: %s (unknown target %s)", line, target)
}

// argRE splits a line into words: "double quoted" (Go escapes), 'single
// quoted', or bare.
var argRE = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?`)

// argify splits line into arguments, unquoting quoted ones.
func argify(line string) []string {
	args := argRE.FindAllString(line, -1)
	for i, a := range args {
		switch {
		case len(a) >= 2 && a[0] == '\'':
			args[i] = a[1 : len(a)-1]
		case len(a) >= 2 && a[0] == '"':
			if s, err := strconv.Unquote(a); err == nil {
				args[i] = s
			}
		}
	}
	return args
}

func (c *ctl) compactionCommand() *cobra.Command {
	var physical bool
	cmd := &cobra.Command{
		Use:   "compaction [options] <revision>",
		Short: "Compacts the event history in etcd",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fail(exitBadArgs, errors.New("compaction command needs 1 argument"))
			}
			rev, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return fail(exitError, err)
			}
			var opts []clientv3.CompactOption
			if physical {
				opts = append(opts, clientv3.WithCompactPhysical())
			}
			return c.call(func(ctx context.Context, cli *clientv3.Client) error {
				if _, err := cli.Compact(ctx, rev, opts...); err != nil {
					return err
				}
				fmt.Fprintln(c.out, "compacted revision", rev)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&physical, "physical", false, "'true' to wait for compaction to physically remove all old revisions")
	return cmd
}
