package server

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/cairn-kv/cairn/internal/chanlisten"

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

// listen binds each URL (http or https).
func listen(flag string, urls []string) ([]listener, error) {
	var out []listener
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
			ln, err = net.Listen("tcp", pu.Host)
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
