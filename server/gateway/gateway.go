// Package gateway is the HTTP side of a member's client ports: etcd's
// JSON gateway (grpc-gateway's handlers, generated for etcd's services and
// for v3lock and v3election), websockets on the same paths as etcd's
// grpc-websocket-proxy, the health, version and metrics endpoints, and
// etcd's access control (CORS, the Host whitelist, /v3beta/).
package gateway

import (
	"context"
	"encoding/json"
	"net"
	"net/http"

	"github.com/cairn-kv/cairn/internal/chanlisten"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"google.golang.org/grpc"
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
	g := &Gateway{m: m, opts: opts, ws: newWebsockets(ctx), pipes: chanlisten.New(pipeAddr{})}
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
		mux.Handle("/v3/", g.ws.proxy(gwmux))
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
