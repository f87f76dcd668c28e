package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"time"

	"github.com/cairn-kv/cairn/internal/chanlisten"
	"golang.org/x/sys/unix"

	"github.com/cairn-kv/cairn/internal/rawconn"
)

// http2Preface is what every HTTP/2 connection sends first.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sniffTimeout bounds the wait for a new connection's first bytes.
const sniffTimeout = 10 * time.Second

// splitListener hands each accepted connection to one of two listeners
// by its first bytes.
type splitListener struct {
	net.Listener
	grpc, http *chanlisten.Listener
}

func newSplitListener(ln net.Listener) *splitListener {
	s := &splitListener{Listener: ln, grpc: chanlisten.New(ln.Addr()), http: chanlisten.New(ln.Addr())}
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
			s.grpc.Put(c)
			return
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	s.http.Put(c)
}

// peekedConn is a connection whose first bytes were read ahead.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// listener is a client or metrics URL bound.
type listener struct {
	ln     net.Listener
	secure bool
}

// SocketOptions are set on every listening socket (etcd's
// --socket-reuse-port and --socket-reuse-address).
type SocketOptions struct {
	// ReusePort: SO_REUSEPORT, so that another process may bind the same
	// port (and share its connections).
	ReusePort bool
	// ReuseAddress: SO_REUSEADDR, so that a port whose connections are in
	// TIME_WAIT may be bound again.
	ReuseAddress bool
}

// listenConfig is net's listen configuration with the options set.
func (o SocketOptions) listenConfig() *net.ListenConfig {
	return &net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if o.ReusePort {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
			if serr == nil && o.ReuseAddress {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
}

// listen binds each URL (http or https).
func listen(flag string, urls []string, opts SocketOptions) ([]listener, error) {
	var out []listener
	lc := opts.listenConfig()
	for _, u := range urls {
		pu, err := url.Parse(u)
		if err == nil && pu.Host == "" {
			err = errors.New("no host")
		}
		if err == nil && pu.Scheme != "http" && pu.Scheme != "https" {
			err = fmt.Errorf("URL scheme must be http or https")
		}
		var ln net.Listener
		if err == nil {
			ln, err = lc.Listen(context.Background(), "tcp", pu.Host)
		}
		if err != nil {
			for _, l := range out {
				l.ln.Close()
			}
			return nil, fmt.Errorf("%s %q: %w", flag, u, err)
		}
		out = append(out, listener{ln: ln, secure: pu.Scheme == "https"})
	}
	return out, nil
}
