package h2grpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cairn-kv/cairn/internal/rawconn"
)

// ClientConn is a gRPC client over one HTTP/2 connection, for a client
// that must cost the machine little (kvbench measures servers beside
// itself). It is a grpc.ClientConnInterface, so the generated clients
// (etcdserverpb.NewKVClient(cc)) run on it unchanged, unary and streaming.
//
// What it leaves out, against grpc-go's: name resolution and balancing (one
// address), retries, compression, keepalive pings, call options (ignored).
// Its cost: a call queues its frames for the connection's writer goroutine,
// which writes everything queued with one system call; the reader goroutine
// decodes the answers and hands each call its message.
//
// Lock order: ClientConn.mu, then nothing else.
type ClientConn struct {
	nc        net.Conn
	authority string
	scheme    string
	headers   []hpack.HeaderField // sent on every call (an auth token)

	readerDone, writerDone chan struct{}
	wake                   chan struct{} // the writer has output to write

	mu   sync.Mutex
	cond *sync.Cond // window credited, settings received, or failed
	// Guarded by mu:
	out        []byte // frames queued for the writer
	henc       *hpack.Encoder
	hbuf       []byte // henc's output
	nextID     uint32
	streams    map[uint32]*clientStream
	sendWindow int64  // the connection's, granted by the server
	initWindow int64  // a new stream's send window (the server's SETTINGS)
	maxFrame   int    // the largest DATA payload the server takes
	err        error  // why the connection is unusable (nil: usable)
	goaway     bool   // the server is going away: no new streams
	recvUnack  int    // connection bytes read and not yet credited (reader)
	tableLimit uint32 // the server's SETTINGS_HEADER_TABLE_SIZE, to apply
	maxStreams int    // the server's SETTINGS_MAX_CONCURRENT_STREAMS (0: no limit)
}

// removeLocked takes stream id out of the table; a call waiting for room
// under the server's limit of streams may go.
func (c *ClientConn) removeLocked(id uint32) {
	delete(c.streams, id)
	if c.maxStreams > 0 {
		c.cond.Broadcast()
	}
}

// Windows a ClientConn offers the server: answers are not held up by
// flow control short of a gigabyte.
const (
	clientWindow    = 1 << 30
	clientMaxRecv   = 1 << 30 // the largest answer a call takes
	clientUserAgent = "cairn-h2grpc"
)

// Dial connects to target (host:port, or an http:// or https:// URL) and
// starts the connection. With tlsConfig it speaks TLS (h2 by ALPN). token,
// when not empty, is sent with every call as etcd's "token" metadata.
func Dial(ctx context.Context, target string, tlsConfig *tls.Config, token string) (*ClientConn, error) {
	addr, scheme := target, "http"
	if tlsConfig != nil {
		scheme = "https"
	}
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil {
			return nil, fmt.Errorf("h2grpc: endpoint %q: %w", target, err)
		}
		addr = u.Host
		switch {
		case u.Scheme == "https" && tlsConfig == nil:
			tlsConfig = &tls.Config{}
			scheme = "https"
		case u.Scheme == "unix" || u.Scheme == "unixs":
			return nil, fmt.Errorf("h2grpc: endpoint %q: unix sockets are not supported", target)
		}
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	// Raw system calls: a client with one call in flight is idle between
	// calls, and each ordinary system call after an idle spell wakes the
	// runtime's monitor thread (rawconn's comment has the measure).
	nc = rawconn.Wrap(nc)
	if tlsConfig != nil {
		cfg := tlsConfig.Clone()
		cfg.NextProtos = []string{"h2"}
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, err
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
			nc.Close()
			return nil, fmt.Errorf("h2grpc: %s did not agree to HTTP/2 (ALPN %q)", addr, p)
		}
		nc = tc
	}
	c := &ClientConn{
		nc: nc, authority: addr, scheme: scheme,
		readerDone: make(chan struct{}), writerDone: make(chan struct{}), wake: make(chan struct{}, 1),
		nextID: 1, streams: map[uint32]*clientStream{},
		sendWindow: defaultWindow, initWindow: defaultWindow, maxFrame: 16 << 10,
	}
	if token != "" {
		c.headers = append(c.headers, hpack.HeaderField{Name: "token", Value: token})
	}
	c.cond = sync.NewCond(&c.mu)
	c.henc = hpack.NewEncoder(byteAppender{&c.hbuf})
	c.out = append(c.out, http2.ClientPreface...)
	c.out = appendSettings(c.out,
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: clientWindow})
	c.out = appendWindowUpdate(c.out, 0, clientWindow-defaultWindow)
	c.wake <- struct{}{}
	go c.writeLoop()
	go c.readLoop()
	return c, nil
}

// appendFrame appends a frame with its payload.
func appendFrame(b []byte, t http2.FrameType, flags http2.Flags, id uint32, payload []byte) []byte {
	return append(appendFrameHeader(b, len(payload), t, flags, id), payload...)
}

// wakeWriterLocked wakes the writer for frames just queued, if the queue
// was empty before them (else it is awake already).
func (c *ClientConn) wakeWriterLocked(wasEmpty bool) {
	if wasEmpty {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// writeLoop writes what is queued, one system call a round, until the
// connection fails.
func (c *ClientConn) writeLoop() {
	defer close(c.writerDone)
	var spare []byte
	for range c.wake {
		// Let the calls being made now queue theirs too.
		runtime.Gosched()
		c.mu.Lock()
		out := c.out
		c.out = spare[:0]
		err := c.err
		c.mu.Unlock()
		if err != nil {
			return
		}
		if len(out) > 0 {
			if _, err := c.nc.Write(out); err != nil {
				c.fail(status.Errorf(codes.Unavailable, "connection error: %v", err))
				return
			}
		}
		if cap(out) <= 4<<20 {
			spare = out
		} else {
			spare = nil
		}
	}
}

// fail makes the connection unusable with err: every open call ends with
// it, and the socket closes.
func (c *ClientConn) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	streams := c.streams
	c.streams = map[uint32]*clientStream{}
	c.cond.Broadcast()
	c.mu.Unlock()
	for _, st := range streams {
		st.finish(status.Convert(err))
	}
	c.nc.Close()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// check verifies the connection's table: an ended call is not in it, and
// with idle set (no call in flight) it is empty.
func (c *ClientConn) check(idle bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, st := range c.streams {
		if st.id != id || id%2 != 1 || id >= c.nextID {
			return fmt.Errorf("h2grpc: stream %d in the table as %d (next %d)", st.id, id, c.nextID)
		}
		if st.st != nil {
			return fmt.Errorf("h2grpc: stream %d ended (%v) and is still in the table", id, st.st)
		}
	}
	if idle && len(c.streams) > 0 {
		return fmt.Errorf("h2grpc: %d streams open on an idle connection", len(c.streams))
	}
	return nil
}

// Close closes the connection; calls in flight end with Canceled.
func (c *ClientConn) Close() error {
	c.fail(status.Error(codes.Canceled, "grpc: the client connection is closing"))
	<-c.readerDone
	<-c.writerDone
	return nil
}

// clientStream is one call.
type clientStream struct {
	c   *ClientConn
	id  uint32
	ctx context.Context

	// Guarded by c.mu:
	sendWindow int64
	recvUnack  int
	buf        []byte   // bytes of messages not yet whole
	msgs       [][]byte // whole messages, for the caller
	header     metadata.MD
	gotHeader  bool
	trailer    metadata.MD
	st         *status.Status // the call's end (nil: open)
	sentEnd    bool

	// ready is signalled when a message arrives or the call ends; hdr is
	// closed when the headers arrive or the call ends (streams only).
	ready chan struct{}
	hdr   chan struct{}
}

// headerDoneLocked closes hdr once.
func (st *clientStream) headerDoneLocked() {
	if st.hdr != nil {
		select {
		case <-st.hdr:
		default:
			close(st.hdr)
		}
	}
}

// finish ends the stream with s (the first end counts).
func (st *clientStream) finish(s *status.Status) {
	st.c.mu.Lock()
	if st.st == nil {
		st.st = s
	}
	st.headerDoneLocked()
	st.c.mu.Unlock()
	signal(st.ready)
}

// newStream opens a stream for method and queues its headers.
func (c *ClientConn) newStream(ctx context.Context, method string, streaming bool) (*clientStream, error) {
	st := &clientStream{c: c, ctx: ctx, ready: make(chan struct{}, 1)}
	if streaming {
		st.hdr = make(chan struct{})
	}
	w := ctxWait{c: c, ctx: ctx} // for room under the server's limit
	defer w.done()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if c.err != nil {
			return nil, c.err
		}
		if c.goaway {
			return nil, status.Error(codes.Unavailable, "the connection is draining")
		}
		if err := ctx.Err(); err != nil {
			return nil, status.FromContextError(err).Err()
		}
		if c.maxStreams == 0 || len(c.streams) < c.maxStreams {
			break
		}
		// The server takes no more streams at once: wait for one to end.
		w.waitLocked()
	}
	st.id = c.nextID
	c.nextID += 2
	st.sendWindow = c.initWindow
	c.streams[st.id] = st
	if c.tableLimit > 0 {
		c.henc.SetMaxDynamicTableSizeLimit(c.tableLimit)
		c.tableLimit = 0
	}
	c.hbuf = c.hbuf[:0]
	c.henc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
	c.henc.WriteField(hpack.HeaderField{Name: ":scheme", Value: c.scheme})
	c.henc.WriteField(hpack.HeaderField{Name: ":path", Value: method})
	c.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: c.authority})
	c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	c.henc.WriteField(hpack.HeaderField{Name: "user-agent", Value: clientUserAgent})
	c.henc.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
	if dl, ok := ctx.Deadline(); ok {
		c.henc.WriteField(hpack.HeaderField{Name: "grpc-timeout", Value: encodeTimeout(time.Until(dl))})
	}
	for _, h := range c.headers {
		c.henc.WriteField(h)
	}
	if md, ok := metadata.FromOutgoingContext(ctx); ok {
		for k, vs := range md {
			for _, v := range vs {
				if strings.HasSuffix(k, "-bin") {
					v = base64.RawStdEncoding.EncodeToString([]byte(v))
				}
				c.henc.WriteField(hpack.HeaderField{Name: k, Value: v})
			}
		}
	}
	empty := len(c.out) == 0
	c.out = appendHeaderBlock(c.out, st.id, c.hbuf, false, c.maxFrame)
	c.wakeWriterLocked(empty)
	return st, nil
}

// encodeTimeout writes d as grpc-timeout does: at most 8 digits and a unit.
func encodeTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	for _, u := range []struct {
		unit time.Duration
		c    string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}, {time.Hour, "H"}} {
		if v := (d + u.unit - 1) / u.unit; v < 1e8 {
			return strconv.FormatInt(int64(v), 10) + u.c
		}
	}
	return "99999999H"
}

// ctxWait waits on the connection's cond (a window credited, a stream
// ended, settings read, a failure) and is woken too when ctx ends.
type ctxWait struct {
	c    *ClientConn
	ctx  context.Context
	stop func() bool // removes the wake for ctx
}

// waitLocked waits under c.mu. The first call registers the wake for ctx
// and returns at once, so that the caller looks again: ctx may have ended
// before the wake was there.
func (w *ctxWait) waitLocked() {
	if w.stop == nil {
		c := w.c
		w.stop = context.AfterFunc(w.ctx, func() {
			c.mu.Lock()
			c.cond.Broadcast()
			c.mu.Unlock()
		})
		return
	}
	w.c.cond.Wait()
}

// done removes the wake for ctx, if there was one.
func (w *ctxWait) done() {
	if w.stop != nil {
		w.stop()
	}
}

// send queues msg (a framed message) as DATA, as the windows allow, and
// ends the stream's sending when end is set.
func (st *clientStream) send(msg []byte, end bool) error {
	c := st.c
	w := ctxWait{c: c, ctx: st.ctx} // for window
	defer w.done()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if st.st != nil {
			return nil // ended (RST_STREAM, or an answer): RecvMsg says how
		}
		if c.err != nil {
			return c.err
		}
		if err := st.ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		n := min(int64(len(msg)), c.sendWindow, st.sendWindow, int64(c.maxFrame))
		if n > 0 || (len(msg) == 0 && end) {
			var flags http2.Flags
			if int(n) == len(msg) && end {
				flags = http2.FlagDataEndStream
				st.sentEnd = true
			}
			empty := len(c.out) == 0
			c.out = appendFrame(c.out, http2.FrameData, flags, st.id, msg[:n])
			c.wakeWriterLocked(empty)
			c.sendWindow -= n
			st.sendWindow -= n
			msg = msg[n:]
			if len(msg) == 0 {
				return nil
			}
			continue
		}
		w.waitLocked()
	}
}

// cancel ends the stream from this side: RST_STREAM(CANCEL) if it is
// still open, and it leaves the table.
func (st *clientStream) cancel(s *status.Status) {
	c := st.c
	c.mu.Lock()
	if _, open := c.streams[st.id]; open && c.err == nil {
		c.removeLocked(st.id)
		empty := len(c.out) == 0
		c.out = appendRST(c.out, st.id, http2.ErrCodeCancel)
		c.wakeWriterLocked(empty)
	}
	if st.st == nil {
		st.st = s
	}
	st.headerDoneLocked()
	c.mu.Unlock()
	signal(st.ready)
}

// recv returns the stream's next whole message, or its end: io.EOF for
// an OK status once every message is taken, else the status's error.
func (st *clientStream) recv() ([]byte, error) {
	c := st.c
	for {
		c.mu.Lock()
		if len(st.msgs) > 0 {
			m := st.msgs[0]
			st.msgs[0] = nil
			st.msgs = st.msgs[1:]
			c.mu.Unlock()
			return m, nil
		}
		s := st.st
		c.mu.Unlock()
		if s != nil {
			if s.Code() == codes.OK {
				return nil, io.EOF
			}
			return nil, s.Err()
		}
		select {
		case <-st.ready:
		case <-st.ctx.Done():
			st.cancel(status.FromContextError(st.ctx.Err()))
		}
	}
}

// Invoke makes a unary call: grpc.ClientConnInterface.
func (c *ClientConn) Invoke(ctx context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	bp, err := encodeMsg(args, nil)
	if err != nil {
		return err
	}
	defer putBuf(bp)
	st, err := c.newStream(ctx, method, false)
	if err != nil {
		return err
	}
	if err := st.send(*bp, true); err != nil {
		st.cancel(status.Convert(err))
		return err
	}
	msg, err := st.recv()
	if err == io.EOF {
		return status.Error(codes.Internal, "grpc: the server answered a unary call with no message")
	}
	if err != nil {
		return err
	}
	// A unary answer is followed by the trailers; wait for its status.
	if _, err := st.recv(); err != io.EOF {
		if err == nil {
			return status.Error(codes.Internal, "grpc: the server answered a unary call with more than one message")
		}
		return err
	}
	return decodeMsg(msg[0], msg[msgPrefix:], reply, "", clientMaxRecv)
}

// NewStream opens a streaming call: grpc.ClientConnInterface.
func (c *ClientConn) NewStream(ctx context.Context, _ *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	st, err := c.newStream(ctx, method, true)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { st.cancel(status.FromContextError(ctx.Err())) })
	return &streamCall{st: st, stop: stop}, nil
}

// streamCall is a streaming call's grpc.ClientStream.
type streamCall struct {
	st   *clientStream
	stop func() bool
}

func (s *streamCall) Context() context.Context { return s.st.ctx }

// Header waits for the answer's headers.
func (s *streamCall) Header() (metadata.MD, error) {
	select {
	case <-s.st.hdr:
	case <-s.st.ctx.Done():
		return nil, status.FromContextError(s.st.ctx.Err()).Err()
	}
	c := s.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.st.gotHeader {
		return s.st.header, nil
	}
	return nil, s.st.st.Err()
}

func (s *streamCall) Trailer() metadata.MD {
	c := s.st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.st.trailer
}

// CloseSend ends the call's sending side.
func (s *streamCall) CloseSend() error {
	c := s.st.c
	c.mu.Lock()
	sent := s.st.sentEnd
	c.mu.Unlock()
	if sent {
		return nil
	}
	return s.st.send(nil, true)
}

// SendMsg sends one message.
func (s *streamCall) SendMsg(m any) error {
	bp, err := encodeMsg(m, nil)
	if err != nil {
		return err
	}
	defer putBuf(bp)
	if err := s.st.send(*bp, false); err != nil {
		return err
	}
	c := s.st.c
	c.mu.Lock()
	ended := s.st.st != nil
	c.mu.Unlock()
	if ended {
		return io.EOF // as grpc-go: RecvMsg returns the status
	}
	return nil
}

// RecvMsg receives one message into m; io.EOF once the server ended the
// call with OK.
func (s *streamCall) RecvMsg(m any) error {
	msg, err := s.st.recv()
	if err != nil {
		s.stop()
		return err
	}
	return decodeMsg(msg[0], msg[msgPrefix:], m, "", clientMaxRecv)
}

// readLoop reads frames until the connection fails.
func (c *ClientConn) readLoop() {
	defer close(c.readerDone)
	fr := http2.NewFramer(nil, bufio.NewReaderSize(c.nc, readBufSize))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 16 << 20
	fr.SetMaxReadFrameSize(1 << 20)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			c.fail(status.Errorf(codes.Unavailable, "connection error: %v", err))
			return
		}
		if err := c.handle(f); err != nil {
			c.fail(err)
			return
		}
	}
}

// stream returns the open stream id (nil once it ended here).
func (c *ClientConn) stream(id uint32) *clientStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[id]
}

// handle acts on one frame from the server.
func (c *ClientConn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.handleData(f)
	case *http2.MetaHeadersFrame:
		c.handleHeaders(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		c.mu.Lock()
		err := f.ForeachSetting(func(s http2.Setting) error {
			switch s.ID {
			case http2.SettingInitialWindowSize:
				delta := int64(s.Val) - c.initWindow
				c.initWindow = int64(s.Val)
				for _, st := range c.streams {
					st.sendWindow += delta
				}
			case http2.SettingMaxFrameSize:
				c.maxFrame = int(s.Val)
			case http2.SettingMaxConcurrentStreams:
				c.maxStreams = int(min(s.Val, 1<<30))
			case http2.SettingHeaderTableSize:
				c.tableLimit = min(s.Val, 4096)
				if c.tableLimit == 0 {
					c.henc.SetMaxDynamicTableSizeLimit(0)
				}
			}
			return nil
		})
		empty := len(c.out) == 0
		c.out = appendSettingsAck(c.out)
		c.wakeWriterLocked(empty)
		c.cond.Broadcast()
		c.mu.Unlock()
		return err
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		if f.StreamID == 0 {
			c.sendWindow += int64(f.Increment)
		} else if st := c.streams[f.StreamID]; st != nil {
			st.sendWindow += int64(f.Increment)
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	case *http2.PingFrame:
		if !f.IsAck() {
			c.mu.Lock()
			empty := len(c.out) == 0
			c.out = appendPingAck(c.out, f.Data)
			c.wakeWriterLocked(empty)
			c.mu.Unlock()
		}
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		st := c.streams[f.StreamID]
		c.removeLocked(f.StreamID)
		c.mu.Unlock()
		if st != nil {
			st.finish(rstStatus(f.ErrCode, st.ctx))
		}
	case *http2.GoAwayFrame:
		c.mu.Lock()
		c.goaway = true
		var refused []*clientStream
		for id, st := range c.streams {
			if id > f.LastStreamID {
				refused = append(refused, st)
				c.removeLocked(id)
			}
		}
		c.mu.Unlock()
		for _, st := range refused {
			st.finish(status.New(codes.Unavailable, "the connection is draining: the server did not take the call"))
		}
	}
	return nil
}

// rstStatus is the status of a call (on ctx) the server reset, as grpc-go
// maps it: a CANCEL once the call's deadline has passed is the server
// ending it at that deadline (the grpc-timeout it was sent), and so
// DeadlineExceeded, whichever side's timer saw it first.
func rstStatus(code http2.ErrCode, ctx context.Context) *status.Status {
	switch code {
	case http2.ErrCodeRefusedStream:
		return status.New(codes.Unavailable, "stream terminated by RST_STREAM with error code: REFUSED_STREAM")
	case http2.ErrCodeCancel:
		if d, ok := ctx.Deadline(); ok && !d.After(time.Now()) {
			return status.New(codes.DeadlineExceeded, "context deadline exceeded")
		}
		return status.New(codes.Canceled, "stream terminated by RST_STREAM with error code: CANCEL")
	case http2.ErrCodeEnhanceYourCalm:
		return status.New(codes.ResourceExhausted, "stream terminated by RST_STREAM with error code: ENHANCE_YOUR_CALM")
	}
	return status.Newf(codes.Internal, "stream terminated by RST_STREAM with error code: %v", code)
}

// handleData adds a DATA frame's bytes to its stream's messages, and
// credits the windows back as they are used.
func (c *ClientConn) handleData(f *http2.DataFrame) error {
	n := int(f.Length)
	c.mu.Lock()
	c.recvUnack += n
	if c.recvUnack >= clientWindow/4 {
		empty := len(c.out) == 0
		c.out = appendWindowUpdate(c.out, 0, uint32(c.recvUnack))
		c.wakeWriterLocked(empty)
		c.recvUnack = 0
	}
	st := c.streams[f.StreamID]
	if st == nil {
		c.mu.Unlock()
		return nil // a stream that ended here (cancelled)
	}
	st.recvUnack += n
	if st.recvUnack >= clientWindow/4 {
		empty := len(c.out) == 0
		c.out = appendWindowUpdate(c.out, st.id, uint32(st.recvUnack))
		c.wakeWriterLocked(empty)
		st.recvUnack = 0
	}
	st.buf = append(st.buf, f.Data()...)
	got := false
	for len(st.buf) >= msgPrefix {
		size := int(binary.BigEndian.Uint32(st.buf[1:msgPrefix]))
		if size > clientMaxRecv {
			c.mu.Unlock()
			st.cancel(status.Newf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", size, clientMaxRecv))
			return nil
		}
		if len(st.buf) < msgPrefix+size {
			break
		}
		m := st.buf[: msgPrefix+size : msgPrefix+size]
		st.msgs = append(st.msgs, m)
		st.buf = st.buf[msgPrefix+size:]
		got = true
	}
	if len(st.buf) == 0 {
		st.buf = nil // the next message gets a buffer of its own
	}
	var end *status.Status
	if f.StreamEnded() {
		c.removeLocked(st.id)
		end = status.New(codes.Internal, "server closed the stream without sending trailers")
	}
	c.mu.Unlock()
	if end != nil {
		st.finish(end)
	} else if got {
		signal(st.ready)
	}
	return nil
}

// handleHeaders takes a stream's response headers, or its trailers (the
// call's status).
func (c *ClientConn) handleHeaders(f *http2.MetaHeadersFrame) {
	c.mu.Lock()
	st := c.streams[f.StreamID]
	if st == nil {
		c.mu.Unlock()
		return
	}
	var md metadata.MD
	var (
		grpcStatus, grpcMessage, httpStatus, contentType string
		hasStatus                                        bool
	)
	for _, h := range f.Fields {
		switch h.Name {
		case ":status":
			httpStatus = h.Value
		case "content-type":
			contentType = h.Value
		case "grpc-status":
			grpcStatus, hasStatus = h.Value, true
		case "grpc-message":
			grpcMessage = decodeGrpcMessage(h.Value)
		default:
			if !strings.HasPrefix(h.Name, ":") {
				if md == nil {
					md = metadata.MD{}
				}
				v := h.Value
				if strings.HasSuffix(h.Name, "-bin") {
					if b, err := decodeBinHeader(v); err == nil {
						v = b
					}
				}
				md.Append(h.Name, v)
			}
		}
	}
	first := !st.gotHeader && !hasStatus
	if first {
		st.header, st.gotHeader = md, true
		st.headerDoneLocked()
	} else {
		st.trailer = md
	}
	var end *status.Status
	switch {
	case httpStatus != "" && httpStatus != "200":
		end = status.Newf(httpCode(httpStatus), "unexpected HTTP status code received from server: %s; transport: received unexpected content-type %q", httpStatus, contentType)
	case f.StreamEnded():
		if !hasStatus {
			end = status.New(codes.Internal, "server closed the stream without sending trailers")
		} else {
			code, err := strconv.Atoi(grpcStatus)
			if err != nil {
				end = status.Newf(codes.Internal, "transport: malformed grpc-status: %q", grpcStatus)
			} else {
				end = status.New(codes.Code(code), grpcMessage)
			}
		}
	}
	if end != nil {
		c.removeLocked(st.id)
	}
	c.mu.Unlock()
	if end != nil {
		st.finish(end)
	} else {
		signal(st.ready)
	}
}

// httpCode maps an HTTP status to a gRPC code, as grpc-go does.
func httpCode(s string) codes.Code {
	switch s {
	case "400":
		return codes.Internal
	case "401":
		return codes.Unauthenticated
	case "403":
		return codes.PermissionDenied
	case "404":
		return codes.Unimplemented
	case "429", "502", "503", "504":
		return codes.Unavailable
	}
	return codes.Unknown
}

// decodeGrpcMessage undoes the grpc-message trailer's percent-encoding.
func decodeGrpcMessage(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var _ grpc.ClientConnInterface = (*ClientConn)(nil)
