package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Requests are what a member asks another and waits for the answer to,
// beside raft's one-way messages (a lease keep-alive forwarded to the
// leader). A request goes on a connection of its own kind
// (streamRequests), taken from a small pool kept per peer: one request
// at a time on each, a frame each way.
//
//	request frame  := len:u32 body
//	answer frame   := len:u32 status:u8 body   (status 0: body is the answer; 1: body is an error message)

// RequestHandler answers requests from peers.
type RequestHandler interface {
	HandleRequest(from uint64, req []byte) ([]byte, error)
}

// streamRequests carries requests and their answers.
const streamRequests streamKind = 3

// maxIdleRequestConns bounds the idle request connections kept per peer.
const maxIdleRequestConns = 4

// ErrNotSent says a request never reached the peer (no such peer, or no
// connection to it), so the peer did nothing with it; any other failure
// but a RemoteError leaves the outcome unknown.
var ErrNotSent = errors.New("transport: request not sent")

// RemoteError is an error the peer answered a request with.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }

// requestConns are the idle request connections to one peer.
type requestConns struct {
	mu   sync.Mutex
	idle []*requestConn
}

type requestConn struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

// Request sends req to member to and returns its answer; an error the
// peer answered with is a *RemoteError, and one that never left is
// ErrNotSent.
func (t *Transport) Request(ctx context.Context, to uint64, req []byte) ([]byte, error) {
	t.mu.Lock()
	p := t.peers[to]
	t.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("%w: no peer %x", ErrNotSent, to)
	}
	rc, err := p.takeRequestConn(t, ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(t.readTimeout())
	}
	_ = rc.conn.SetDeadline(deadline)
	frame := append([]byte{0, 0, 0, 0}, req...)
	var answer []byte
	if err = writeFrame(rc.w, frame); err == nil {
		answer, err = readFrame(rc.r, nil)
	}
	if err == nil && len(answer) == 0 {
		err = errors.New("transport: an empty answer")
	}
	if err != nil {
		rc.conn.Close()
		return nil, err
	}
	_ = rc.conn.SetDeadline(time.Time{})
	p.putRequestConn(rc)
	if answer[0] != 0 {
		return nil, &RemoteError{Msg: string(answer[1:])}
	}
	return answer[1:], nil
}

// takeRequestConn takes an idle connection that is still open, or dials
// one. An idle connection the peer closed (it stopped, or restarted) is
// dropped rather than used: a request written to it would be lost with an
// outcome unknown, where a dial that fails says it was never sent.
func (p *peer) takeRequestConn(t *Transport, ctx context.Context) (*requestConn, error) {
	for {
		p.requests.mu.Lock()
		n := len(p.requests.idle)
		if n == 0 {
			p.requests.mu.Unlock()
			break
		}
		rc := p.requests.idle[n-1]
		p.requests.idle = p.requests.idle[:n-1]
		p.requests.mu.Unlock()
		if rc.open() {
			return rc, nil
		}
		rc.conn.Close()
	}
	conn, err := p.messages.dialKind(ctx, streamRequests)
	if err != nil {
		return nil, err
	}
	return &requestConn{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn)}, nil
}

// open says whether an idle connection is still open: nothing may arrive
// on it between requests, so anything waiting to be read (the peer's
// close, a TLS close_notify, or bytes it should not have sent) means it
// is not. The socket is peeked without blocking.
func (rc *requestConn) open() bool {
	if rc.r.Buffered() > 0 {
		return false
	}
	conn := rc.conn
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := false
	var b [1]byte
	err = raw.Read(func(fd uintptr) bool {
		_, _, rerr := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		open = rerr == unix.EAGAIN
		return true // one look, never wait
	})
	return err == nil && open
}

func (p *peer) putRequestConn(rc *requestConn) {
	p.requests.mu.Lock()
	defer p.requests.mu.Unlock()
	if len(p.requests.idle) < maxIdleRequestConns {
		p.requests.idle = append(p.requests.idle, rc)
		return
	}
	rc.conn.Close()
}

// closeRequestConns closes the idle request connections.
func (p *peer) closeRequestConns() {
	p.requests.mu.Lock()
	defer p.requests.mu.Unlock()
	for _, rc := range p.requests.idle {
		rc.conn.Close()
	}
	p.requests.idle = nil
}

// answerRequests answers the requests a peer sends on conn.
func (t *Transport) answerRequests(from uint64, r *bufio.Reader, conn net.Conn) {
	h, ok := t.cfg.Handler.(RequestHandler)
	w := bufio.NewWriter(conn)
	var buf []byte
	for {
		var err error
		buf, err = readFrame(r, buf)
		if err != nil {
			return
		}
		var answer []byte
		var herr error
		if ok {
			answer, herr = h.HandleRequest(from, buf)
		} else {
			herr = errors.New("transport: this member answers no requests")
		}
		frame := []byte{0, 0, 0, 0, 0}
		if herr != nil {
			frame[4] = 1
			frame = append(frame, herr.Error()...)
		} else {
			frame = append(frame, answer...)
		}
		_ = conn.SetWriteDeadline(time.Now().Add(t.writeTimeout()))
		if err := writeFrame(w, frame); err != nil {
			return
		}
	}
}
