// Package chanlisten is a net.Listener fed connections by hand: by a
// listener that sorts connections between servers, or by in-process pipes.
package chanlisten

import (
	"net"
	"sync"
)

// Listener is a net.Listener fed connections by Put.
type Listener struct {
	addr   net.Addr
	ch     chan net.Conn
	once   sync.Once
	closed chan struct{}
}

// New returns a listener whose Addr is addr.
func New(addr net.Addr) *Listener {
	return &Listener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

// Put hands c to Accept; once the listener is closed, it closes c.
func (l *Listener) Put(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *Listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *Listener) Addr() net.Addr { return l.addr }
