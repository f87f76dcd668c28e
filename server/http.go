package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/rawconn"
	"github.com/cairn-kv/cairn/server/v3electionpb"
	"github.com/cairn-kv/cairn/server/v3lockpb"
)

// A client port serves gRPC and HTTP on one listener, as etcd's does: a
// connection that opens with HTTP/2's preface goes to the gRPC server,
// any other to the HTTP server (the JSON gateway, health, version,
// metrics, pprof).

// http2Preface is what every HTTP/2 connection sends first.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sniffTimeout bounds the wait for a new connection's first bytes.
const sniffTimeout = 10 * time.Second

// splitListener hands each accepted connection to one of two listeners
// by its first bytes.
type splitListener struct {
	net.Listener
	grpc, http *chanListener
}

func newSplitListener(ln net.Listener) *splitListener {
	s := &splitListener{Listener: ln, grpc: newChanListener(ln.Addr()), http: newChanListener(ln.Addr())}
	return s
}

// serve accepts until the listener closes.
func (s *splitListener) serve() {
	defer s.grpc.Close()
	defer s.http.Close()
	for {
		conn, err := s.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		go s.route(conn)
	}
}

func (s *splitListener) route(conn net.Conn) {
	conn = rawconn.Wrap(conn)
	_ = conn.SetReadDeadline(time.Now().Add(sniffTimeout))
	br := bufio.NewReaderSize(conn, len(http2Preface))
	c := &peekedConn{Conn: conn, r: br}
	// Byte by byte as they come, so that a short HTTP/1 request is routed
	// as soon as it differs from the preface, not after a timeout.
	for n := 1; n <= len(http2Preface); n++ {
		head, err := br.Peek(n)
		if err != nil {
			if len(head) == 0 {
				conn.Close()
				return
			}
			break
		}
		if head[n-1] != http2Preface[n-1] {
			break
		}
		if n == len(http2Preface) {
			_ = conn.SetReadDeadline(time.Time{})
			s.grpc.put(c)
			return
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	s.http.put(c)
}

// peekedConn is a connection whose first bytes were read ahead.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener is a listener fed connections by put.
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) put(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// pipeAddr names the in-process connections of the gateway.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "gateway" }

// httpHandler builds the HTTP side of a client port. The gateway talks to
// the gRPC server over in-process pipes (fed to pipes, a listener the
// gRPC server also serves), so it needs no network and no credentials of
// its own: callers authenticate with their token (the "Authorization"
// header).
func (s *Server) httpHandler(ctx context.Context, pipes *chanListener) (http.Handler, *grpc.ClientConn, error) {
	conn, err := grpc.NewClient("passthrough:///gateway",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			a, b := net.Pipe()
			pipes.put(b)
			return a, nil
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1)))
	if err != nil {
		return nil, nil, err
	}
	gwmux := runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.HTTPBodyMarshaler{
			Marshaler: &runtime.JSONPb{
				MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
				UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
			},
		}),
		runtime.WithErrorHandler(gatewayError),
	)
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		gw.RegisterKVHandler, gw.RegisterWatchHandler, gw.RegisterLeaseHandler, gw.RegisterClusterHandler,
		gw.RegisterMaintenanceHandler, gw.RegisterAuthHandler,
		v3lockpb.RegisterLockHandler, v3electionpb.RegisterElectionHandler,
	} {
		if err := register(ctx, gwmux, conn); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/v3/", s.ws.proxy(gwmux))
	s.addInfoHandlers(mux)
	return mux, conn, nil
}

// accessControl is what etcd puts in front of a client port's HTTP side:
// "/v3beta/" paths are served as "/v3/"; a plain-HTTP request whose Host
// is not whitelisted is refused (421, against DNS rebinding); allowed
// origins get CORS headers; OPTIONS (a browser's preflight) is answered
// 200 with them alone. While certAuth holds (client certificates name
// users, and auth is on), a gateway call over TLS from a certificate with a
// common name is refused (400), as etcd refuses it.
func accessControl(cors, hosts []string, certAuth func() bool, h http.Handler) http.Handler {
	allowed := func(list []string, v string) bool {
		return len(list) == 0 || slices.Contains(list, "*") || slices.Contains(list, v)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v3beta/"); ok {
			r.URL.Path = "/v3/" + rest
			r.URL.RawPath = ""
		}
		if r.TLS == nil {
			host := r.Host
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if !allowed(hosts, host) {
				http.Error(w, fmt.Sprintf("The Host header %q is not whitelisted: serve TLS, or add it with --host-whitelist. "+
					"Plain-HTTP requests are checked against DNS rebinding attacks (CVE-2018-5702).", host), http.StatusMisdirectedRequest)
				return
			}
		} else if strings.HasPrefix(r.URL.Path, "/v3/") && certAuth() {
			// The gateway's calls do not carry the client's certificate:
			// its common name would be ignored, so the request is refused
			// (as etcd refuses it).
			for _, chain := range r.TLS.VerifiedChains {
				if len(chain) > 0 && chain[0].Subject.CommonName != "" {
					http.Error(w, "CommonName of client sending a request against gateway will be ignored and not used as expected", http.StatusBadRequest)
					return
				}
			}
		}
		origin := "*"
		if !allowed(cors, "*") {
			origin = r.Header.Get("Origin")
		}
		if origin != "" && allowed(cors, origin) {
			hd := w.Header()
			hd.Add("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE")
			hd.Add("Access-Control-Allow-Origin", origin)
			hd.Add("Access-Control-Allow-Headers", "accept, content-type, authorization")
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// addInfoHandlers adds what the client and metrics ports share: health,
// version, metrics, and pprof when enabled.
func (s *Server) addInfoHandlers(mux *http.ServeMux) {
	mux.HandleFunc("/health", s.health)
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/readyz", s.readyz)
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"etcdserver": Version, "etcdcluster": ClusterVersion})
	})
	mux.Handle("/metrics", promhttp.HandlerFor(s.m.metrics.reg, promhttp.HandlerOpts{}))
	if s.cfg.EnablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

// gatewayError writes a gRPC error as etcd's gateway does: the HTTP
// status for its code, and {"error", "code", "message"}.
func gatewayError(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	st := status.Convert(err)
	var body struct {
		Error   string `json:"error"`
		Code    int32  `json:"code"`
		Message string `json:"message"`
	}
	body.Error, body.Code, body.Message = st.Message(), int32(st.Code()), st.Message()
	writeJSON(w, runtime.HTTPStatusFromCode(st.Code()), body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// healthTimeout bounds the read a health check makes.
const healthTimeout = 2 * time.Second

// health is etcd's /health: false with a reason when there is no leader,
// an alarm is raised (unless excluded with ?exclude=NOSPACE), or a read
// (linearizable unless ?serializable=true) fails.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ok, reason := s.healthy(r)
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"health": fmt.Sprint(ok), "reason": reason})
}

func (s *Server) healthy(r *http.Request) (bool, string) {
	m := s.m
	excluded := map[string]bool{}
	for _, a := range r.URL.Query()["exclude"] {
		excluded[strings.ToUpper(a)] = true
	}
	for _, a := range m.eng.Alarms() {
		name := pb.AlarmType(a.Type).String()
		if !excluded[name] {
			return false, "ALARM " + name
		}
	}
	if m.lead.Load() == 0 {
		return false, "RAFT NO LEADER"
	}
	if r.URL.Query().Get("serializable") != "true" {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if err := m.linearizableRead(ctx); err != nil {
			return false, "QGET ERROR:" + err.Error()
		}
	}
	return true, ""
}

// readyz is ok once the member serves: a leader, data readable, no
// corruption alarm.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	var out bytes.Buffer
	ok := true
	check := func(name string, err error) {
		if err != nil {
			ok = false
			fmt.Fprintf(&out, "[-]%s failed: %v\n", name, err)
		} else if r.URL.Query().Has("verbose") {
			fmt.Fprintf(&out, "[+]%s ok\n", name)
		}
	}
	var leaderErr error
	if s.m.lead.Load() == 0 {
		leaderErr = errors.New("no leader")
	}
	check("leader", leaderErr)
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	check("linearizable_read", s.m.linearizableRead(ctx))
	var corrupt error
	if s.m.eng.Alarmed(engine.AlarmCorrupt) {
		corrupt = errors.New("alarm activated: CORRUPT")
	}
	check("data_corruption", corrupt)
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, out.String()+"readyz check failed\n")
		return
	}
	io.WriteString(w, out.String()+"ok\n")
}
