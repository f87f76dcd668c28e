// Package h2grpc serves gRPC over cleartext HTTP/2 connections (prior
// knowledge, as gRPC clients open them), for services registered from
// their generated grpc.ServiceDesc, so the generated Register functions
// work unchanged.
//
// It does what a member's client port needs and no more, in the way that
// keeps the work per call small:
//
//   - one goroutine reads a connection's frames and one writes them; a
//     call's answer is queued for the writer, which sends whatever has
//     queued since its last write in one system call;
//   - unary calls run on pooled goroutines whose stacks have already grown
//     to what a handler needs, not on a fresh goroutine each;
//   - answers are marshalled into pooled buffers, framed in place.
//
// Flow control follows RFC 9113 in both directions: a stream's receive
// window is credited as its messages are consumed (so a client cannot
// queue without bound on a stream whose handler is behind), the
// connection's as data arrives; sending waits for the peer's windows, and
// a streaming handler's SendMsg blocks while its stream has more than
// sendQueueLimit bytes unsent. Statuses, timeouts, metadata, compression
// and message-size errors are those of grpc-go's server, whose clients
// (clientv3, etcdctl, the gateway) are this server's callers.
package h2grpc

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// ErrServerStopped is what Serve returns once Stop has been called.
var ErrServerStopped = errors.New("h2grpc: the server has been stopped")

// Options configure a Server.
type Options struct {
	// MaxRecvMsgSize bounds a received message (default 4 MiB, as gRPC's).
	MaxRecvMsgSize int
	// Unary and Stream intercept every call when set.
	Unary  grpc.UnaryServerInterceptor
	Stream grpc.StreamServerInterceptor
	// MaxConcurrentStreams bounds the calls a connection may have open at
	// once; it is advertised in SETTINGS, and a stream past it is refused
	// with RST_STREAM(REFUSED_STREAM) (0: no bound).
	MaxConcurrentStreams uint32
	// Keepalive is the server's side of gRPC keepalive, as grpc-go's.
	Keepalive Keepalive
}

// Keepalive is grpc-go's keepalive server parameters and enforcement
// policy (without PermitWithoutStream, as etcd sets it).
type Keepalive struct {
	// MinTime is the least interval between a client's pings while it
	// has calls open; with none open, a client may ping once every two
	// hours. A client that pings more often three times over is sent
	// GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings") and disconnected.
	// Answers the server sends forgive the count. 0: no policy.
	MinTime time.Duration
	// Time: after this long with nothing read, the server pings; if
	// nothing is read within Timeout more, it closes the connection.
	// 0: no server pings.
	Time, Timeout time.Duration
}

// Server is a gRPC server. It implements grpc.ServiceRegistrar.
type Server struct {
	opts     Options
	services map[string]*service

	mu    sync.Mutex
	lns   map[net.Listener]struct{}
	conns map[*conn]struct{}
	done  chan struct{}
	wg    sync.WaitGroup // Serve loops and connections

	work    chan *stream // hands a unary call to an idle worker; closed at Stop
	workers chan struct{}

	handoffs atomic.Int64 // calls run by a reader that handed reading on
}

type service struct {
	impl    any
	methods map[string]*grpc.MethodDesc
	streams map[string]*grpc.StreamDesc
}

// maxWorkers bounds the pooled goroutines that wait for unary calls; past
// it, a call's goroutine ends with the call.
const maxWorkers = 4096

// NewServer returns a server with no services.
func NewServer(opts Options) *Server {
	if opts.MaxRecvMsgSize <= 0 {
		opts.MaxRecvMsgSize = 4 << 20
	}
	return &Server{
		opts:     opts,
		services: map[string]*service{},
		lns:      map[net.Listener]struct{}{},
		conns:    map[*conn]struct{}{},
		done:     make(chan struct{}),
		work:     make(chan *stream),
		workers:  make(chan struct{}, maxWorkers),
	}
}

// RegisterService registers a service and its implementation. It panics,
// as grpc.Server's does, when impl does not implement the service or the
// service is registered twice; call it before Serve.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	if impl != nil {
		ht := reflect.TypeOf(desc.HandlerType).Elem()
		if !reflect.TypeOf(impl).Implements(ht) {
			panic(fmt.Sprintf("h2grpc: RegisterService found the handler of type %v that does not satisfy %v", reflect.TypeOf(impl), ht))
		}
	}
	if _, dup := s.services[desc.ServiceName]; dup {
		panic(fmt.Sprintf("h2grpc: RegisterService found duplicate service registration for %q", desc.ServiceName))
	}
	svc := &service{impl: impl, methods: map[string]*grpc.MethodDesc{}, streams: map[string]*grpc.StreamDesc{}}
	for i := range desc.Methods {
		svc.methods[desc.Methods[i].MethodName] = &desc.Methods[i]
	}
	for i := range desc.Streams {
		svc.streams[desc.Streams[i].StreamName] = &desc.Streams[i]
	}
	s.services[desc.ServiceName] = svc
}

// Serve accepts connections on ln until ln fails or Stop is called; each
// must open with HTTP/2's client preface.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		ln.Close()
		return ErrServerStopped
	default:
	}
	s.lns[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return ErrServerStopped
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			s.mu.Lock()
			delete(s.lns, ln)
			s.mu.Unlock()
			return err
		}
		delay = 0
		s.ServeConn(nc)
	}
}

// ServeConn serves one connection in its own goroutines and returns at
// once. The connection is closed when the peer goes or Stop is called.
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc)
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		nc.Close()
		return
	default:
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go c.serve()
}

// connDone forgets a connection that has ended.
func (s *Server) connDone(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Stop closes the listeners and every connection, which cancels the calls
// in flight (their clients see the connection go), and waits for the
// connections' goroutines. It does not wait for handlers.
func (s *Server) Stop() {
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		s.wg.Wait()
		return
	default:
	}
	close(s.done)
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.close(errServerStopping)
	}
	s.mu.Unlock()
	s.wg.Wait()
	// No reader is left to hand out a call: the idle workers may go.
	close(s.work)
}

var errServerStopping = errors.New("server stopping")

// run runs a unary call on an idle worker, or on a new one.
func (s *Server) run(st *stream) {
	select {
	case s.work <- st:
		return
	default:
	}
	go s.worker(st)
}

// worker runs st and then waits for more calls while fewer than
// maxWorkers wait; its stack stays as grown, which a fresh goroutine per
// call would grow again each time.
func (s *Server) worker(st *stream) {
	st.runUnary()
	select {
	case s.workers <- struct{}{}:
	default:
		return
	}
	defer func() { <-s.workers }()
	for st := range s.work {
		st.runUnary()
	}
}

// splitPath splits "/pkg.Service/Method".
func splitPath(p string) (svc, method string, ok bool) {
	if !strings.HasPrefix(p, "/") {
		return "", "", false
	}
	p = p[1:]
	i := strings.LastIndexByte(p, '/')
	if i <= 0 || i == len(p)-1 {
		return "", "", false
	}
	return p[:i], p[i+1:], true
}

// check verifies every connection's bookkeeping: streams in the table are
// client streams the connection opened; the writer's ready list holds
// each stream once, marked queued, with output to send; no window has
// grown past HTTP/2's bound. With idle set, no call may be open or
// output queued (what is left when every call has ended).
func (s *Server) check(idle bool) error {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.wmu.Lock()
		c.mu.Lock()
		err := c.checkLocked(idle)
		c.mu.Unlock()
		c.wmu.Unlock()
		if err != nil {
			return fmt.Errorf("%v: %w", c, err)
		}
	}
	return nil
}

func (c *conn) checkLocked(idle bool) error {
	if c.closed {
		return nil
	}
	for id, st := range c.streams {
		if id != st.id || id%2 == 0 || id > c.maxStream {
			return fmt.Errorf("stream %d in the table as %d (highest opened %d)", st.id, id, c.maxStream)
		}
		if st.sendWindow > 1<<31-1 {
			return fmt.Errorf("stream %d send window %d", id, st.sendWindow)
		}
		n := 0
		for _, m := range st.out {
			n += len(*m.buf) - m.off
		}
		if n != st.outBytes {
			return fmt.Errorf("stream %d has %d bytes queued, counts %d", id, n, st.outBytes)
		}
	}
	queued := 0
	for _, st := range c.streams {
		queued += st.outBytes
	}
	if queued != c.outQueued {
		return fmt.Errorf("streams hold %d bytes unsent, the connection counts %d", queued, c.outQueued)
	}
	seen := map[*stream]bool{}
	for _, st := range c.ready {
		if seen[st] || !st.queued {
			return fmt.Errorf("stream %d on the ready list twice or not marked queued", st.id)
		}
		seen[st] = true
	}
	if c.sendWindow > 1<<31-1 {
		return fmt.Errorf("connection send window %d", c.sendWindow)
	}
	if idle && (len(c.streams) > 0 || len(c.ready) > 0) {
		return fmt.Errorf("idle, yet %d streams open and %d ready", len(c.streams), len(c.ready))
	}
	if run := c.inlineRun.Load(); idle && run&1 != 0 {
		return fmt.Errorf("idle, yet the reader runs call %d", run>>1)
	}
	return nil
}
