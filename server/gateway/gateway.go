// Package gateway is the HTTP side of a member's client ports: etcd's
// JSON gateway (grpc-gateway's handlers, generated for etcd's services and
// for v3lock and v3election), websockets on the same paths as etcd's
// grpc-websocket-proxy, the health, version and metrics endpoints, and
// etcd's access control (CORS, the Host whitelist, /v3beta/).
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/cairn-kv/cairn/internal/chanlisten"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cairn-kv/cairn/server/member"
	"github.com/cairn-kv/cairn/server/v3electionpb"
	"github.com/cairn-kv/cairn/server/v3lockpb"
)

// Options are the client port's HTTP settings, etcd's flags.
type Options struct {
	// CORS is the origins a browser may call from (--cors; "*" or empty:
	// any); HostWhitelist the Host names a plain-HTTP request may carry
	// (--host-whitelist; "*" or empty: any), against DNS rebinding.
	CORS, HostWhitelist []string
	// ClientCertAuth: client certificates name users (--client-cert-auth).
	ClientCertAuth bool
	// EnablePprof serves /debug/pprof/ (--enable-pprof).
	EnablePprof bool
	// NoJSONGateway leaves /v3/ unserved (--enable-grpc-gateway=false).
	NoJSONGateway bool
	// MaxRecvMsgSize is the largest request message the gRPC server
	// takes; a JSON body (or websocket message) more than bodyFactor
	// times it cannot be one, and is refused unread (0: no bound).
	MaxRecvMsgSize int
}

// Gateway is the HTTP side of a member's client ports: etcd's JSON
// gateway on /v3/ (and websockets there), health, version, metrics and
// pprof, behind etcd's access control. The gateway talks to the member's
// gRPC server over in-process pipes (Pipes, a listener the gRPC server
// must also serve), so it needs no network and no credentials of its own:
// callers authenticate with their token (the "Authorization" header).
type Gateway struct {
	m       *member.Member
	opts    Options
	ws      *websockets
	pipes   *chanlisten.Listener
	conn    *grpc.ClientConn
	handler http.Handler
}

// New builds the gateway of m; ctx ends its streams and websocket
// sessions.
func New(ctx context.Context, m *member.Member, opts Options) (*Gateway, error) {
	g := &Gateway{m: m, opts: opts, ws: newWebsockets(ctx, int64(bodyFactor*opts.MaxRecvMsgSize)), pipes: chanlisten.New(pipeAddr{})}
	conn, err := grpc.NewClient("passthrough:///gateway",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			a, b := net.Pipe()
			g.pipes.Put(b)
			return a, nil
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1)))
	if err != nil {
		return nil, err
	}
	g.conn = conn
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
			return nil, err
		}
	}
	mux := http.NewServeMux()
	if !opts.NoJSONGateway {
		mux.Handle("/v3/", g.ws.proxy(limitBodies(opts.MaxRecvMsgSize, gwmux)))
	}
	AddInfoHandlers(mux, m, opts.EnablePprof)
	// Client certificates name users only when auth is on.
	certAuth := func() bool {
		on, _ := m.Engine().AuthStatus()
		return opts.ClientCertAuth && on
	}
	g.handler = accessControl(opts.CORS, opts.HostWhitelist, certAuth, mux)
	return g, nil
}

// Handler serves the HTTP side of a client port.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Pipes is the listener of the gateway's connections to the gRPC server.
func (g *Gateway) Pipes() net.Listener { return g.pipes }

// Close ends the websocket sessions and the gateway's gRPC connection.
func (g *Gateway) Close() {
	g.ws.closeAll()
	g.conn.Close()
	g.pipes.Close()
}

// gatewayError writes a gRPC error as etcd's gateway does: the HTTP
// status for its code, and {"error", "code", "message"}.
func gatewayError(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	if b, ok := r.Body.(*limitedBody); ok && b.over {
		err = status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", b.read, b.max)
	}
	st := status.Convert(err)
	var body struct {
		Error   string `json:"error"`
		Code    int32  `json:"code"`
		Message string `json:"message"`
	}
	body.Error, body.Code, body.Message = st.Message(), int32(st.Code()), st.Message()
	writeJSON(w, runtime.HTTPStatusFromCode(st.Code()), body)
}

// bodyFactor bounds a JSON body against the message it stands for: bytes
// fields are base64 (4/3 the bytes), the rest field names and numbers.
const bodyFactor = 4

// limitBodies refuses a body larger than bodyFactor times max, as the
// gRPC server would refuse the message (429, ResourceExhausted, gRPC's
// words): one with its length given is refused unread; one without is
// read no further than the bound. The gateway would otherwise read it
// whole into memory first. Streams (watch, lease keep-alive) read their
// body as it comes, a message at a time.
func limitBodies(max int, h http.Handler) http.Handler {
	if max <= 0 {
		return h
	}
	limit := int64(bodyFactor * max)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimSuffix(r.URL.Path, "/")
		if strings.HasSuffix(path, "/watch") || strings.HasSuffix(path, "/lease/keepalive") {
			h.ServeHTTP(w, r)
			return
		}
		if r.ContentLength > limit {
			tooLarge(w, r, r.ContentLength, max)
			return
		}
		r.Body = &limitedBody{ReadCloser: r.Body, left: limit, max: max}
		h.ServeHTTP(w, r)
	})
}

// tooLarge answers a body of n bytes (at least) past the bound.
func tooLarge(w http.ResponseWriter, r *http.Request, n int64, max int) {
	gatewayError(r.Context(), nil, nil, w, r, status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", n, max))
}

// limitedBody fails a read past its bound (the gateway then answers with
// gatewayError, which sees over set).
type limitedBody struct {
	io.ReadCloser
	left, read int64
	over       bool
	max        int
}

var errBodyTooLarge = errors.New("gateway: request body too large")

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.over = true
		return 0, errBodyTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	b.read += int64(n)
	if b.left == 0 && err == nil {
		// One byte more says whether the body goes on.
		var one [1]byte
		if k, _ := b.ReadCloser.Read(one[:]); k > 0 {
			b.read++
			b.over = true
			return n, errBodyTooLarge
		}
	}
	return n, err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
