package h2grpc

import (
	"context"
	"encoding/binary"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// stream is one call. Its receive side is under mu, its send side under
// the connection's wmu.
type stream struct {
	c        *conn
	id       uint32
	method   string
	ctx      context.Context // &cx, for handlers
	cx       callCtx
	recvComp string
	unary    *grpc.MethodDesc // nil for a streaming call
	impl     any

	mu         sync.Mutex
	rbuf       []byte // received bytes not yet taken as messages
	uncredited int    // received bytes not yet credited to the stream window
	eos        bool   // the client has half-closed
	rerr       error  // why receiving ended early
	recvDone   bool   // nothing more is received: the unary message went to its handler, or the call ended
	reqFlag    byte   // a unary call's request message, once whole (set before it runs)
	req        []byte
	rready     chan struct{} // a streaming call's reader waits here; nil for unary

	// Send side, under c.wmu.
	sendWindow   int64
	sendComp     encoding.Compressor
	sendCompName string
	header       metadata.MD // set by SetHeader, sent with the first message
	hdrQueued    bool        // headers are to be written
	hdrSent      bool
	out          []outMsg
	outOne       [1]outMsg // out's first backing array: a unary answer needs no other
	outBytes     int
	trailer      metadata.MD
	final        error // the call's error (nil: OK), once finished
	finished     bool  // final is set; trailers follow the output
	trailerSent  bool
	rstAfter     bool          // RST_STREAM(NO_ERROR) after the trailers: the client had not half-closed
	queued       bool          // on the writer's ready list
	dead         bool          // reset: nothing more is written
	wready       chan struct{} // a streaming call's SendMsg waits here; nil for unary
}

// outMsg is a framed message being sent; off bytes of it are written.
type outMsg struct {
	buf *[]byte
	off int
}

func (st *stream) hasOutputLocked() bool {
	if st.dead {
		return false
	}
	return st.hdrQueued || (len(st.out) > 0 && st.sendWindow > 0) || (st.finished && !st.trailerSent && len(st.out) == 0)
}

// dropOutputLocked discards what was queued and will queue nothing more.
func (st *stream) dropOutputLocked() {
	st.dead = true
	for _, m := range st.out {
		putBuf(m.buf)
	}
	st.c.outQueued -= st.outBytes
	st.out, st.outBytes = nil, 0
	signal(st.wready)
}

// queueLocked adds a framed message to the stream's output.
func (st *stream) queueLocked(buf *[]byte) {
	st.out = append(st.out, outMsg{buf: buf})
	st.outBytes += len(*buf)
	st.c.outQueued += len(*buf)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// recvData takes a DATA frame's payload (n bytes of flow control). It
// returns a window credit to send, and for a unary call whose message is
// now whole, the call to run.
func (st *stream) recvData(data []byte, n int, end bool) (credit int, run bool, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.rerr != nil || st.recvDone {
		return 0, false, nil
	}
	st.rbuf = append(st.rbuf, data...)
	st.uncredited += n
	if end {
		st.eos = true
	}
	max := st.c.s.opts.MaxRecvMsgSize
	whole := false
	if len(st.rbuf) >= msgPrefix {
		l := int(binary.BigEndian.Uint32(st.rbuf[1:msgPrefix]))
		if l > max {
			return 0, false, status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", l, max)
		}
		whole = len(st.rbuf) >= msgPrefix+l
	}
	if st.unary != nil {
		if whole {
			st.recvDone = true
			st.reqFlag, st.req = st.rbuf[0], st.rbuf[msgPrefix:msgPrefix+int(binary.BigEndian.Uint32(st.rbuf[1:msgPrefix]))]
			st.rbuf = nil
			return 0, true, nil
		}
		if st.eos {
			return 0, false, status.Error(codes.Internal, "grpc: the client sent a truncated request message")
		}
	} else {
		signal(st.rready)
	}
	// Credit the window while the handler is not behind (no whole message
	// waits for it); otherwise RecvMsg credits as it takes messages.
	if !whole && st.uncredited >= streamWindow/4 {
		credit, st.uncredited = st.uncredited, 0
	}
	return credit, false, nil
}

// recvEOS notes the client's half-close.
func (st *stream) recvEOS() {
	st.mu.Lock()
	st.eos = true
	truncated := st.unary != nil && !st.recvDone && st.rerr == nil
	st.mu.Unlock()
	if truncated {
		st.fail(status.Error(codes.Internal, "grpc: the client sent a truncated request message"))
		return
	}
	signal(st.rready)
}

// fail ends receiving with err: a unary call not yet run is answered
// with it; a streaming handler gets it from RecvMsg.
func (st *stream) fail(err error) {
	st.mu.Lock()
	if st.rerr != nil {
		st.mu.Unlock()
		return
	}
	st.rerr = err
	unaryPending := st.unary != nil && !st.recvDone
	st.recvDone = true
	st.rbuf = nil
	st.mu.Unlock()
	signal(st.rready)
	if unaryPending {
		st.finish(nil, err)
	}
}

// reset ends the call from outside (the client's RST_STREAM, the
// connection's end): its context is cancelled and nothing more is sent.
func (st *stream) reset(err error) {
	st.mu.Lock()
	if st.rerr == nil {
		st.rerr = err
	}
	st.mu.Unlock()
	signal(st.rready)
	st.c.wmu.Lock()
	st.dropOutputLocked()
	st.c.wmu.Unlock()
	st.cx.cancel(context.Canceled)
}

// finish queues the call's answer: resp (a framed message) if any, then
// the status of err. The stream is then done on this side.
func (st *stream) finish(resp *[]byte, err error) {
	st.mu.Lock()
	eos := st.eos
	st.recvDone = true
	st.rbuf = nil
	st.mu.Unlock()
	c := st.c
	// The answer to the connection's only call is written by the call's
	// goroutine, which saves waking the writer: a lone client waits for
	// nothing else. With other calls open, the writer gathers answers.
	c.mu.Lock()
	direct := st.unary != nil && len(c.streams) == 1 && c.streams[st.id] == st
	c.mu.Unlock()
	c.wmu.Lock()
	if st.finished {
		// Answered already (a unary call failed before it ran); what was
		// queued then stands.
		c.wmu.Unlock()
		if resp != nil {
			putBuf(resp)
		}
	} else if st.dead || c.wclosed {
		c.wmu.Unlock()
		if resp != nil {
			putBuf(resp)
		}
		c.forget(st)
	} else {
		if resp != nil {
			if !st.hdrSent {
				st.hdrQueued = true
			}
			if st.out == nil {
				st.out = st.outOne[:0]
			}
			st.queueLocked(resp)
		}
		st.final = err
		st.finished = true
		st.rstAfter = !eos
		c.readyLocked(st)
		c.wmu.Unlock()
		if direct {
			c.writeOut()
		} else {
			c.wake()
		}
		// The stream stays in the table until its trailers are written:
		// WINDOW_UPDATEs for what it still has to send must find it.
	}
	st.cx.cancel(context.Canceled)
}

// runUnary runs a unary call on its request (req, with its flag).
func (st *stream) runUnary() {
	max := st.c.s.opts.MaxRecvMsgSize
	dec := func(v any) error { return decodeMsg(st.reqFlag, st.req, v, st.recvComp, max) }
	resp, err := st.unary.Handler(st.impl, st.ctx, dec, st.c.s.opts.Unary)
	var buf *[]byte
	if err == nil {
		buf, err = encodeMsg(resp, st.sendComp)
	}
	st.finish(buf, err)
}

func (st *stream) runStream(impl any, sd *grpc.StreamDesc) {
	var err error
	if in := st.c.s.opts.Stream; in != nil {
		err = in(impl, st, &grpc.StreamServerInfo{FullMethod: st.method, IsClientStream: sd.ClientStreams, IsServerStream: sd.ServerStreams}, sd.Handler)
	} else {
		err = sd.Handler(impl, st)
	}
	st.finish(nil, err)
}

// grpc.ServerStream.

func (st *stream) Context() context.Context { return st.ctx }

func (st *stream) SetHeader(md metadata.MD) error {
	if md.Len() == 0 {
		return nil
	}
	st.c.wmu.Lock()
	defer st.c.wmu.Unlock()
	if st.hdrSent || st.hdrQueued {
		return status.Error(codes.Internal, "transport: the stream is done or WriteHeader was already called")
	}
	st.header = metadata.Join(st.header, md)
	return nil
}

func (st *stream) SendHeader(md metadata.MD) error {
	c := st.c
	c.wmu.Lock()
	if st.hdrSent || st.hdrQueued {
		c.wmu.Unlock()
		return status.Error(codes.Internal, "transport: the stream is done or WriteHeader was already called")
	}
	st.header = metadata.Join(st.header, md)
	st.hdrQueued = true
	c.readyLocked(st)
	c.wmu.Unlock()
	c.wake()
	return nil
}

func (st *stream) SetTrailer(md metadata.MD) {
	if md.Len() == 0 {
		return
	}
	st.c.wmu.Lock()
	st.trailer = metadata.Join(st.trailer, md)
	st.c.wmu.Unlock()
}

func (st *stream) SendMsg(m any) error {
	buf, err := encodeMsg(m, st.sendComp)
	if err != nil {
		return err
	}
	c := st.c
	c.wmu.Lock()
	for {
		if st.dead || c.wclosed || st.finished {
			c.wmu.Unlock()
			putBuf(buf)
			return st.doneErr()
		}
		if st.outBytes < sendQueueLimit {
			break
		}
		c.wmu.Unlock()
		select {
		case <-st.wready:
		case <-st.ctx.Done():
			putBuf(buf)
			return status.FromContextError(st.ctx.Err()).Err()
		}
		c.wmu.Lock()
	}
	if !st.hdrSent {
		st.hdrQueued = true
	}
	st.queueLocked(buf)
	c.readyLocked(st)
	c.wmu.Unlock()
	c.wake()
	return nil
}

// doneErr is what sending on a stream that has ended returns.
func (st *stream) doneErr() error {
	st.mu.Lock()
	err := st.rerr
	st.mu.Unlock()
	if err == nil {
		err = status.Error(codes.Canceled, "context canceled")
	}
	return err
}

func (st *stream) RecvMsg(m any) error {
	max := st.c.s.opts.MaxRecvMsgSize
	for {
		st.mu.Lock()
		if len(st.rbuf) >= msgPrefix {
			l := int(binary.BigEndian.Uint32(st.rbuf[1:msgPrefix]))
			if l > max {
				st.mu.Unlock()
				return status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", l, max)
			}
			if len(st.rbuf) >= msgPrefix+l {
				flag, payload := st.rbuf[0], st.rbuf[msgPrefix:msgPrefix+l]
				st.rbuf = st.rbuf[msgPrefix+l:]
				credit := 0
				if st.uncredited >= streamWindow/4 {
					credit, st.uncredited = st.uncredited, 0
				}
				st.mu.Unlock()
				if credit > 0 {
					st.c.control(appendWindowUpdate(nil, st.id, uint32(credit)))
				}
				return decodeMsg(flag, payload, m, st.recvComp, max)
			}
		}
		if st.rerr != nil {
			err := st.rerr
			st.mu.Unlock()
			return err
		}
		if st.eos {
			partial := len(st.rbuf) > 0
			st.mu.Unlock()
			if partial {
				return status.Error(codes.Internal, "grpc: the client sent a truncated message")
			}
			return io.EOF
		}
		st.mu.Unlock()
		select {
		case <-st.rready:
		case <-st.ctx.Done():
			return status.FromContextError(st.ctx.Err()).Err()
		}
	}
}

// transportStream is what grpc.SetHeader, grpc.SendHeader, grpc.SetTrailer
// and grpc.Method find in a unary call's context.
type transportStream struct{ st *stream }

func (t transportStream) Method() string                  { return t.st.method }
func (t transportStream) SetHeader(md metadata.MD) error  { return t.st.SetHeader(md) }
func (t transportStream) SendHeader(md metadata.MD) error { return t.st.SendHeader(md) }
func (t transportStream) SetTrailer(md metadata.MD) error { t.st.SetTrailer(md); return nil }
