package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/srv"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/grpclog"
)

// globals are etcdctl's global flags.
type globals struct {
	endpoints                               []string
	debug, hex                              bool
	output                                  string
	dialTimeout, commandTimeout             time.Duration
	keepAliveTime, keepAliveTimeout         time.Duration
	insecure, insecureDiscovery, skipVerify bool
	cert, key, cacert                       string
	user, password                          string
	discoverySrv, discoverySrvName          string
}

// ctl is one run of cairnctl: its streams, flags and clients.
type ctl struct {
	ctx         context.Context // the run's: long-running commands end with it
	in          io.Reader
	out, errOut io.Writer
	g           globals
	p           *printer
	lg          *zap.Logger
	clients     []*clientv3.Client // closed when the run ends
	changed     map[string]bool    // the global flags given, on the command line or by variable
}

func newCtl(ctx context.Context, in io.Reader, out, errOut io.Writer) *ctl {
	return &ctl{ctx: ctx, in: in, out: out, errOut: errOut}
}

func (c *ctl) close() {
	for _, cli := range c.clients {
		cli.Close()
	}
}

// rootCommand is cairnctl with its global flags and every command.
func (c *ctl) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "cairnctl",
		Short:         "A simple command line client for cairn (and etcd3).",
		SilenceErrors: true,
		SilenceUsage:  true,
		// Flags, then ETCDCTL_* for the global flags not given, then the
		// output format, before any command runs.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := c.fromEnv(cmd); err != nil {
				return err
			}
			return c.setPrinter()
		},
	}
	f := root.PersistentFlags()
	g := &c.g
	f.StringSliceVar(&g.endpoints, "endpoints", []string{"127.0.0.1:2379"}, "gRPC endpoints")
	f.BoolVar(&g.debug, "debug", false, "enable client-side debug logging")
	f.StringVarP(&g.output, "write-out", "w", "simple", "set the output format (fields, json, protobuf, simple, table)")
	f.BoolVar(&g.hex, "hex", false, "print byte strings as hex encoded strings")
	f.DurationVar(&g.dialTimeout, "dial-timeout", 2*time.Second, "dial timeout for client connections")
	f.DurationVar(&g.commandTimeout, "command-timeout", 5*time.Second, "timeout for short running command (excluding dial timeout)")
	f.DurationVar(&g.keepAliveTime, "keepalive-time", 2*time.Second, "keepalive time for client connections")
	f.DurationVar(&g.keepAliveTimeout, "keepalive-timeout", 6*time.Second, "keepalive timeout for client connections")
	f.BoolVar(&g.insecure, "insecure-transport", true, "disable transport security for client connections")
	f.BoolVar(&g.insecureDiscovery, "insecure-discovery", true, "accept insecure SRV records describing cluster endpoints")
	f.BoolVar(&g.skipVerify, "insecure-skip-tls-verify", false, "skip server certificate verification (CAUTION: this option should be enabled only for testing purposes)")
	f.StringVar(&g.cert, "cert", "", "identify secure client using this TLS certificate file")
	f.StringVar(&g.key, "key", "", "identify secure client using this TLS key file")
	f.StringVar(&g.cacert, "cacert", "", "verify certificates of TLS-enabled secure servers using this CA bundle")
	f.StringVar(&g.user, "user", "", "username[:password] for authentication (prompt if password is not supplied)")
	f.StringVar(&g.password, "password", "", "password for authentication (if this option is used, --user option shouldn't include password)")
	f.StringVarP(&g.discoverySrv, "discovery-srv", "d", "", "domain name to query for SRV records describing cluster endpoints")
	f.StringVar(&g.discoverySrvName, "discovery-srv-name", "", "service name to query when using DNS discovery")

	root.AddCommand(
		c.getCommand(), c.putCommand(), c.delCommand(), c.txnCommand(), c.compactionCommand(),
		c.alarmCommand(), c.defragCommand(), c.endpointCommand(), c.moveLeaderCommand(),
		c.watchCommand(), c.versionCommand(), c.leaseCommand(), c.memberCommand(),
		c.snapshotCommand(), c.makeMirrorCommand(), c.lockCommand(), c.electCommand(),
		c.authCommand(), c.userCommand(), c.roleCommand(), c.checkCommand(), c.inspectCommand(), c.migrateCommand(),
	)
	return root
}

// envPrefix is the prefix of the variables that stand for global flags:
// ETCDCTL_ENDPOINTS for --endpoints, ETCDCTL_DIAL_TIMEOUT for
// --dial-timeout.
const envPrefix = "ETCDCTL"

// envName is the variable of flag name.
func envName(name string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// fromEnv sets each global flag not given on the command line from its
// ETCDCTL_ variable. A variable for a flag that was given is refused (the
// two would disagree); one that names no flag is warned about.
func (c *ctl) fromEnv(cmd *cobra.Command) error {
	lg := newLogger(zap.InfoLevel)
	c.lg = lg
	used := map[string]bool{}
	c.changed = map[string]bool{}
	// watch reads two variables of its own.
	if cmd.Name() == "watch" {
		used[envPrefix+"_WATCH_KEY"], used[envPrefix+"_WATCH_RANGE_END"] = true, true
	}
	var ferr error
	cmd.Root().PersistentFlags().VisitAll(func(f *pflag.Flag) {
		c.changed[f.Name] = f.Changed
		name := envName(f.Name)
		v, ok := os.LookupEnv(name)
		if !ok || v == "" {
			return
		}
		used[name] = true
		c.changed[f.Name] = true
		if f.Changed {
			ferr = fail(exitError, fmt.Errorf("conflicting environment variable %q is shadowed by corresponding command-line flag (either unset environment variable or disable flag)", name))
			return
		}
		if err := f.Value.Set(v); err != nil && ferr == nil {
			ferr = fail(exitError, fmt.Errorf("invalid value %q for %s: %v", v, name, err))
		}
	})
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, envPrefix+"_") && !used[k] && k != "ETCDCTL_API" {
			lg.Warn("unrecognized environment variable", zap.String("environment-variable", kv))
		}
	}
	if c.g.debug {
		grpclog.SetLoggerV2(grpclog.NewLoggerV2WithVerbosity(c.errOut, c.errOut, c.errOut, 4))
		cmd.Root().PersistentFlags().VisitAll(func(f *pflag.Flag) {
			fmt.Fprintf(c.errOut, "%s=%v\n", envName(f.Name), f.Value)
		})
	} else {
		// gRPC's warnings are routine reconnects; its errors are kept.
		grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, c.errOut))
	}
	return ferr
}

// endpoints are the endpoints to dial: from DNS SRV records with
// --discovery-srv, else --endpoints.
func (c *ctl) endpoints() ([]string, error) {
	if c.g.discoverySrv != "" {
		srvs, err := srv.GetClient("etcd-client", c.g.discoverySrv, c.g.discoverySrvName)
		if err != nil {
			return nil, err
		}
		var eps []string
		for _, ep := range srvs.Endpoints {
			if !c.g.insecureDiscovery && strings.HasPrefix(ep, "http://") {
				fmt.Fprintf(c.errOut, "ignoring discovered insecure endpoint %q\n", ep)
				continue
			}
			eps = append(eps, ep)
		}
		if len(eps) > 0 {
			return eps, nil
		}
	}
	eps := make([]string, len(c.g.endpoints))
	for i, ep := range c.g.endpoints {
		eps[i] = strings.TrimSpace(ep)
	}
	return eps, nil
}

// config is the client configuration for endpoints, from the global
// flags: TLS when a certificate, key or CA is given or
// --insecure-transport=false, and the user (its password asked for on the
// terminal when neither --user nor --password has it).
func (c *ctl) config(endpoints []string) (*clientv3.Config, error) {
	g := &c.g
	for _, f := range []struct{ name, v string }{{"cert", g.cert}, {"key", g.key}, {"cacert", g.cacert}} {
		if f.v == "" && c.flagChanged(f.name) {
			return nil, fail(exitBadArgs, fmt.Errorf("empty string is passed to --%s option", f.name))
		}
	}
	cfg := &clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          g.dialTimeout,
		DialKeepAliveTime:    g.keepAliveTime,
		DialKeepAliveTimeout: g.keepAliveTimeout,
		Logger:               c.clientLogger(),
	}
	serverName := ""
	if g.discoverySrv != "" && !g.insecureDiscovery {
		serverName = g.discoverySrv
	}
	if g.cert != "" || g.key != "" || g.cacert != "" || serverName != "" {
		info := transport.TLSInfo{CertFile: g.cert, KeyFile: g.key, TrustedCAFile: g.cacert, ServerName: serverName}
		tc, err := info.ClientConfig()
		if err != nil {
			return nil, fail(exitBadArgs, err)
		}
		cfg.TLS = tc
	}
	if cfg.TLS == nil && !g.insecure {
		cfg.TLS = &tls.Config{}
	}
	if g.skipVerify && cfg.TLS != nil {
		cfg.TLS.InsecureSkipVerify = true
	}
	if g.user != "" {
		cfg.Username, cfg.Password = g.user, g.password
		if g.password == "" {
			name, pw, ok := strings.Cut(g.user, ":")
			if !ok {
				var err error
				if pw, err = c.askPassword("Password: "); err != nil {
					return nil, fail(exitError, err)
				}
			}
			cfg.Username, cfg.Password = name, pw
		}
	}
	return cfg, nil
}

// flagChanged says whether the global flag name was given (on the command
// line or from its variable).
func (c *ctl) flagChanged(name string) bool { return c.changed[name] }

// clientLogger is the client library's logger: its warnings (a retried
// request) as JSON lines on stderr, as etcdctl's.
func (c *ctl) clientLogger() *zap.Logger {
	if c.g.debug {
		return newLogger(zap.DebugLevel)
	}
	return newLogger(zap.WarnLevel)
}

// newLogger logs JSON lines at level and above to stderr.
func newLogger(level zapcore.Level) *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(level)
	cfg.Sampling = nil
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	lg, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return lg
}

// askPassword reads a password from the terminal without echo, or a line
// from the input when it is not a terminal.
func (c *ctl) askPassword(prompt string) (string, error) {
	if f, ok := c.in.(*os.File); ok {
		if restore, err := noEcho(f); err == nil {
			fmt.Fprint(c.errOut, prompt)
			pw, err := readLine(f)
			restore()
			fmt.Fprintln(c.errOut)
			return pw, err
		}
	}
	return readLine(c.in)
}

// readLine reads one line (without its newline) byte by byte, so that
// nothing after it is taken from in.
func readLine(in io.Reader) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		n, err := in.Read(b)
		if n == 1 {
			if b[0] == '\n' {
				return strings.TrimSuffix(string(line), "\r"), nil
			}
			line = append(line, b[0])
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				return string(line), nil
			}
			return "", err
		}
	}
}

// client is a client of the global endpoints, connected: as etcdctl's
// blocking dial, it fails (exit 2) when no endpoint answers within
// --dial-timeout.
func (c *ctl) client() (*clientv3.Client, error) {
	eps, err := c.endpoints()
	if err != nil {
		return nil, fail(exitError, err)
	}
	return c.clientOf(eps)
}

// clientOf is a connected client of endpoints.
func (c *ctl) clientOf(endpoints []string) (*clientv3.Client, error) {
	cfg, err := c.config(endpoints)
	if err != nil {
		return nil, err
	}
	return c.dial(cfg)
}

// dial makes a client of cfg and waits until it is connected.
func (c *ctl) dial(cfg *clientv3.Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(*cfg)
	if err != nil {
		return nil, fail(exitBadConnection, err)
	}
	c.clients = append(c.clients, cli)
	if cfg.DialTimeout > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout)
		defer cancel()
		conn := cli.ActiveConnection()
		conn.Connect()
		for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
			if !conn.WaitForStateChange(ctx, s) {
				return nil, fail(exitBadConnection, context.DeadlineExceeded)
			}
		}
	}
	return cli, nil
}

// call runs do with a client of the global endpoints and a context that
// ends after --command-timeout. An error do returns fails the command
// with exit code 1, unless it carries its own.
func (c *ctl) call(do func(ctx context.Context, cli *clientv3.Client) error) error {
	cli, err := c.client()
	if err != nil {
		return err
	}
	ctx, cancel := c.commandCtx()
	defer cancel()
	if err := do(ctx, cli); err != nil {
		var ce *codeError
		if errors.As(err, &ce) {
			return err
		}
		return fail(exitError, err)
	}
	return nil
}

// commandCtx is a context that ends after --command-timeout.
func (c *ctl) commandCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.g.commandTimeout)
}

// noArgs refuses arguments with msg (etcdctl's message for the command).
func noArgs(args []string, msg string) error {
	if len(args) != 0 {
		return fail(exitBadArgs, errors.New(msg))
	}
	return nil
}
