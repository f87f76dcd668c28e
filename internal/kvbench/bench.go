package kvbench

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cairn-kv/cairn/internal/h2grpc"
)

// Options is one benchmark: a workload against a set of endpoints.
type Options struct {
	Workload  *Workload
	Endpoints []string
	Conns     int
	Clients   int
	Run       RunConfig
	Env       Env // Bench runs on a copy, with its Conns, Clients and Rec

	// Transport is what the requests go over: "lean" (cairn's HTTP/2
	// gRPC client, h2grpc.ClientConn: a system call a round of the
	// connection's writer, nothing a call does not need) or "grpc-go"
	// (clientv3's connections).
	Transport   string
	TLS         *tls.Config // nil: plain connections
	Username    string
	Password    string
	DialTimeout time.Duration
	// Preload, when set, overrides the workload's own choice.
	Preload *bool
}

// Bench connects, preloads the key space when the workload reads it, starts
// the workload's watchers, runs it, waits for them, and returns its report
// (with the client's CPU a request, and the servers' when their /metrics
// answer) and its result.
func Bench(ctx context.Context, o Options) (*Report, *Result, error) {
	if o.Conns < 1 || o.Clients < 1 {
		return nil, nil, fmt.Errorf("--conns and --clients must be at least 1")
	}
	if err := o.Env.Keys.Validate(); err != nil {
		return nil, nil, err
	}
	env := &Env{}
	*env = o.Env
	env.Conns, env.lastRev = nil, new(atomic.Int64)
	env.Rec = NewRecorder(min(o.Clients, 64))
	if env.Watchers < 0 || (o.Workload.Start != nil && env.Watchers == 0) {
		return nil, nil, fmt.Errorf("--watchers must be at least 1 for the %s workload", o.Workload.Name)
	}
	closeConns, err := dial(ctx, &o, env)
	if err != nil {
		return nil, nil, err
	}
	defer closeConns()

	load := o.Workload.Preload
	if o.Preload != nil {
		load = *o.Preload
	}
	if load {
		if err := preload(ctx, env, min(o.Clients, 100)); err != nil {
			return nil, nil, err
		}
	}
	finish := func(context.Context) error { return nil }
	if o.Workload.Start != nil {
		f, err := o.Workload.Start(ctx, env)
		if err != nil {
			return nil, nil, err
		}
		finish = f
	}
	ops := make([]Op, o.Clients)
	for i := range ops {
		ops[i] = o.Workload.Client(i, env)
	}
	cpu0, sok0 := ServerCPU(ctx, o.Endpoints, o.TLS)
	self0 := selfCPU()
	res, err := Run(ctx, o.Run, ops, env.Rec)
	self := selfCPU() - self0
	cpu1, sok1 := ServerCPU(ctx, o.Endpoints, o.TLS)
	if ferr := finish(ctx); ferr != nil && err == nil {
		err = ferr
	}
	if res != nil {
		res.Kinds, res.All = env.Rec.result() // with the events delivered since
	}
	if err != nil {
		return nil, res, err
	}
	rep := NewReport(o.Workload.Name, o.Endpoints, o.Clients, o.Conns, res, self)
	if sok0 && sok1 && res.Requests > 0 {
		// process_cpu_seconds_total counts in clock ticks (10 ms), so a
		// short run may read 0: it was read, and is said as read.
		cpu := (cpu1 - cpu0) * 1e6 / float64(res.Requests)
		rep.ServerCPU = &cpu
	}
	return rep, res, nil
}

// Transports are the values of Options.Transport.
var Transports = []string{"lean", "grpc-go"}

// dial makes o.Conns connections for env, spread over the endpoints, and
// returns what closes them. With a user, the lean transport sends the
// token clientv3 authenticates for.
func dial(ctx context.Context, o *Options, env *Env) (func(), error) {
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	newClient := func(user, password string) (*clientv3.Client, error) {
		c, err := clientv3.New(clientv3.Config{
			Endpoints: o.Endpoints, TLS: o.TLS, Username: user, Password: password,
			DialTimeout: o.DialTimeout, Logger: zap.NewNop(), Context: ctx,
			MaxCallSendMsgSize: 2 << 20, MaxCallRecvMsgSize: 1 << 30,
		})
		if err != nil {
			return nil, fmt.Errorf("connecting to %v: %w", o.Endpoints, err)
		}
		return c, nil
	}
	switch o.Transport {
	case "grpc-go":
		for range o.Conns {
			c, err := newClient(o.Username, o.Password)
			if err != nil {
				closeAll()
				return nil, err
			}
			closers = append(closers, func() { c.Close() })
			env.Conns = append(env.Conns, c.ActiveConnection())
		}
	case "lean", "":
		token := ""
		if o.Username != "" {
			c, err := newClient("", "")
			if err != nil {
				return nil, err
			}
			resp, err := c.Authenticate(ctx, o.Username, o.Password)
			c.Close()
			if err != nil {
				return nil, fmt.Errorf("authenticating as %q: %w", o.Username, err)
			}
			token = resp.Token
		}
		for i := range o.Conns {
			ep := o.Endpoints[i%len(o.Endpoints)]
			dctx, cancel := ctx, context.CancelFunc(func() {})
			if o.DialTimeout > 0 {
				dctx, cancel = context.WithTimeout(ctx, o.DialTimeout)
			}
			cc, err := h2grpc.Dial(dctx, ep, o.TLS, token)
			cancel()
			if err != nil {
				closeAll()
				return nil, fmt.Errorf("connecting to %s: %w", ep, err)
			}
			closers = append(closers, func() { cc.Close() })
			env.Conns = append(env.Conns, cc)
		}
	default:
		return nil, fmt.Errorf("--transport %q: want one of %v", o.Transport, Transports)
	}
	return closeAll, nil
}

// selfCPU returns the CPU time (user and system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
