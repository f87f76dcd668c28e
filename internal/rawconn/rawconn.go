// Package rawconn wraps a network connection so that its reads and writes
// are raw system calls made through the connection's syscall.RawConn.
//
// Why: every ordinary system call goes through the Go scheduler's syscall
// bookkeeping (entersyscall), and the first one after the process was idle
// wakes the runtime's monitor thread (sysmon), which then polls every 20 µs
// until every P is idle again. A member answering one request at a time is
// idle between requests, so it paid that wake-up and a run of polls for
// each request; on a virtual machine each poll is a context switch, and
// they were about a third of the server's CPU time for a lone client's put.
//
// A raw call is safe here because the socket is non-blocking (the netpoller
// owns it): a read or write that would block returns EAGAIN at once, and
// the wrapper then waits on the netpoller as net.Conn's own methods do, so
// deadlines and Close interrupt it the same way. Only connections that
// expose a syscall.RawConn (TCP and Unix sockets) are wrapped; anything
// else is returned as it is (for TLS, wrap the connection under it).
package rawconn

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is a connection whose Read and Write are raw system calls.
type Conn struct {
	net.Conn
	rc syscall.RawConn
	// Each direction's call in progress, and the function the RawConn
	// calls for it, made once: a closure per call would be allocated.
	rmu, wmu        sync.Mutex
	r, w            rawOp
	readFn, writeFn func(fd uintptr) bool
}

// rawOp is a read or write in progress: the buffer, how much of it was
// done, and the system call's error.
type rawOp struct {
	p     []byte
	n     int
	errno syscall.Errno
}

// Wrap returns nc with raw reads and writes if it exposes its descriptor,
// else nc itself.
func Wrap(nc net.Conn) net.Conn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nc
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nc
	}
	c := &Conn{Conn: nc, rc: rc}
	c.readFn, c.writeFn = c.read, c.write
	return c
}

// do runs one read or write of p through the RawConn and returns what it
// did: one at a time in each direction, as the op's state is the Conn's.
func (c *Conn) do(write bool, p []byte) (rawOp, error) {
	mu, op := &c.rmu, &c.r
	if write {
		mu, op = &c.wmu, &c.w
	}
	mu.Lock()
	defer mu.Unlock()
	*op = rawOp{p: p}
	var err error
	if write {
		err = c.rc.Write(c.writeFn)
	} else {
		err = c.rc.Read(c.readFn)
	}
	res := *op
	*op = rawOp{}
	return res, err
}

// Read reads into p as net.Conn's Read does: at least one byte, or io.EOF
// once the peer has closed its side, or the error that ended the wait.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	op, err := c.do(false, p)
	switch {
	case err != nil:
		return 0, err
	case op.errno != 0:
		return 0, c.opError("read", op.errno)
	case op.n == 0:
		return 0, io.EOF
	}
	return op.n, nil
}

// read is called by the RawConn with the descriptor; false asks it to wait
// for the socket to be readable and call again.
func (c *Conn) read(fd uintptr) bool {
	p := c.r.p
	for {
		r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		case 0:
			c.r.n = int(r)
		default:
			c.r.errno = e
		}
		return true
	}
}

// Write writes all of p, waiting on the netpoller while the socket's
// buffer is full, as net.Conn's Write does.
func (c *Conn) Write(p []byte) (int, error) {
	op, err := c.do(true, p)
	switch {
	case err != nil:
		return op.n, err
	case op.errno != 0:
		return op.n, c.opError("write", op.errno)
	}
	return op.n, nil
}

func (c *Conn) write(fd uintptr) bool {
	p := c.w.p
	for c.w.n < len(p) {
		r, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[c.w.n])), uintptr(len(p)-c.w.n))
		switch e {
		case 0:
			c.w.n += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			c.w.errno = e
			return true
		}
	}
	return true
}

func (c *Conn) opError(op string, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// Listener wraps the connections a listener accepts (Wrap).
type Listener struct{ net.Listener }

// Accept returns the next connection, wrapped.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}
