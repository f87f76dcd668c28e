package gateway

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The gateway also takes a websocket upgrade on every /v3/ path, as etcd's
// does (its grpc-websocket-proxy): each message the client sends is one
// line of the request body of a POST to the gateway, and each line the
// gateway answers goes back as one text message. The bidirectional
// streams (watch, lease keep-alive) take every message and stay open as
// long as the websocket; any other call takes the first message as its
// request (etcd's proxy would wait for the websocket to close before a
// unary call began) and answers once, or as a stream (election observe,
// snapshot). A browser, which cannot set headers on a
// websocket, may send its token as the subprotocol "Bearer, <token>"; a
// client that can sends it in the Authorization header, as on any gateway
// call.

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 1024,
	// etcd's proxy accepts any origin: the token, not the origin, is what
	// authorizes a call.
	CheckOrigin: func(*http.Request) bool { return true },
}

// websockets ends the open websocket sessions when the server stops
// (net/http forgets hijacked connections): each session ends with ctx.
type websockets struct {
	limit  int64 // the largest message a client may send (0: any)
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func newWebsockets(ctx context.Context, limit int64) *websockets {
	ws := &websockets{limit: limit}
	ws.ctx, ws.cancel = context.WithCancel(ctx)
	return ws
}

// proxy serves a websocket upgrade through h and passes any other request
// to h.
func (ws *websockets) proxy(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			h.ServeHTTP(w, r)
			return
		}
		var respHeader http.Header
		token := r.Header.Get("Authorization")
		if proto := r.Header.Get("Sec-WebSocket-Protocol"); strings.HasPrefix(proto, "Bearer") {
			respHeader = http.Header{"Sec-WebSocket-Protocol": {"Bearer"}}
			if _, t, ok := strings.Cut(proto, ","); ok {
				token = strings.TrimSpace(t)
			}
		}
		conn, err := upgrader.Upgrade(w, r, respHeader)
		if err != nil {
			return // the upgrader answered with an HTTP error
		}
		defer conn.Close()
		if ws.limit > 0 {
			// A longer message closes the session (1009, too big).
			conn.SetReadLimit(ws.limit)
		}
		if !ws.add() {
			return
		}
		defer ws.wg.Done()
		ws.serve(conn, h, r, token)
	})
}

// add counts a session in, unless the server is stopping.
func (ws *websockets) add() bool {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.closed {
		return false
	}
	ws.wg.Add(1)
	return true
}

// closeAll ends every session and waits for them; later upgrades are
// refused.
func (ws *websockets) closeAll() {
	ws.mu.Lock()
	ws.closed = true
	ws.mu.Unlock()
	ws.cancel()
	ws.wg.Wait()
}

// serve runs one session: the client's messages are written, a line each,
// into the body of a POST to h, and h's answer is read back line by line
// into text messages, until either side ends or the server stops.
func (ws *websockets) serve(conn *websocket.Conn, h http.Handler, r *http.Request, token string) {
	ctx, cancel := context.WithCancel(ws.ctx)
	defer cancel()
	reqBody, reqW := io.Pipe()
	respR, respBody := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL.String(), reqBody)
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	bidi := strings.HasSuffix(path, "/watch") || strings.HasSuffix(path, "/lease/keepalive")
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		// The gateway's call: its answer streams into respBody, whose end
		// ends the session once the last line is sent.
		defer wg.Done()
		h.ServeHTTP(&pipeResponse{w: respBody, header: http.Header{}}, req)
		respBody.Close()
	}()
	go func() {
		// The client's messages, one body line each.
		defer wg.Done()
		defer cancel()
		for first := true; ; first = false {
			_, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if !first && !bidi {
				continue // read on only to see the client close
			}
			if _, err := reqW.Write(append(msg, '\n')); err != nil {
				return
			}
			if !bidi {
				reqW.Close()
			}
		}
	}()
	go func() {
		// Whichever ends first, the others follow: the pipes and the
		// connection close.
		defer wg.Done()
		<-ctx.Done()
		reqW.CloseWithError(io.EOF)
		respR.CloseWithError(io.EOF)
		conn.Close()
	}()
	lines := bufio.NewReader(respR)
	for {
		line, err := lines.ReadBytes('\n')
		if line = bytes.TrimRight(line, "\r\n"); len(line) > 0 {
			if conn.WriteMessage(websocket.TextMessage, line) != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	cancel()
	wg.Wait()
}

// pipeResponse is the gateway's response writer in a websocket session:
// the body goes into a pipe; status and headers have nowhere to go (an
// error is in the body, as etcd's JSON error).
type pipeResponse struct {
	w      io.Writer
	header http.Header
}

func (p *pipeResponse) Header() http.Header         { return p.header }
func (p *pipeResponse) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeResponse) WriteHeader(int)             {}

// Flush is what the gateway's streams need: writes to the pipe are
// already on their way.
func (p *pipeResponse) Flush() {}
