package h2grpc

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Windows this server offers: a stream may have streamWindow bytes in
// flight to us, a connection connWindow. A window is credited back once a
// quarter of it has been used.
const (
	streamWindow = 1 << 20
	connWindow   = 16 << 20
	// defaultWindow is HTTP/2's initial window before SETTINGS change it.
	defaultWindow = 65535
	// sendQueueLimit is how much a stream may have queued unsent before a
	// streaming handler's SendMsg waits.
	sendQueueLimit = 1 << 20
	// readBufSize and writeBufSize size a connection's buffers.
	readBufSize  = 32 << 10
	writeBufSize = 32 << 10
	// ackDelay is how long a PING's ack may wait to leave with an answer:
	// clients (grpc-go's, measuring bandwidth) ping on each answer they
	// read, just before their next request, whose answer then carries the
	// ack, which saves a write each way.
	ackDelay = time.Millisecond
	// prefaceTimeout bounds the wait for the client's preface.
	prefaceTimeout = 10 * time.Second
	// ctrlBacklog bounds the control frames (PING and SETTINGS acks,
	// WINDOW_UPDATEs, RST_STREAMs, refusals) the reader may queue for a
	// client that does not read them: past it, the reader waits for the
	// writer, so a client that writes and never reads is held up by its
	// own socket rather than growing the server's memory.
	ctrlBacklog = 64 << 10
	// outBacklog bounds the answers a connection holds unsent (a client
	// that does not read, or grants no window): past it, new streams are
	// refused with RST_STREAM(REFUSED_STREAM), which gRPC clients retry.
	// The reader goes on reading, as a WINDOW_UPDATE may be what lets the
	// answers go.
	outBacklog = 16 << 20
	// maxOpenStreams bounds a connection's open streams when no
	// MaxConcurrentStreams is set (clients multiplex their watches on one
	// stream; each open stream holds memory, and a goroutine if it is a
	// streaming call).
	maxOpenStreams = 1 << 16
	// inlineLimit is how long a call run by the reader (runInline) may
	// keep the connection unread before reading goes on in a new
	// goroutine. After such a hand-off the connection's next
	// inlineBackoff calls run on workers: calls that outlast the limit
	// (a loaded member, a slow disk, a lock that waits) cost a hand-off
	// and a reader held up each, so a connection that has them does not
	// try again at once.
	inlineLimit   = time.Millisecond
	inlineBackoff = 8
)

// errHandedOff ends a reader whose reading went on in another goroutine
// while it ran a call.
var errHandedOff = errors.New("h2grpc: reading handed on")

// conn is one HTTP/2 connection. Its reader goroutine owns the stream
// table's inserts and the framer; its writer goroutine owns the HPACK
// encoder and the socket's writes. The reader's fields below go with the
// reading when a call it runs hands reading on (runInline).
type conn struct {
	s    *Server
	nc   net.Conn
	peer *peer.Peer

	br         *bufio.Reader
	hdec       *hpack.Decoder
	fields     []hpack.HeaderField // the header block being decoded
	hsize      int                 // its size, as HTTP/2 counts it
	hblock     int                 // its encoded size, frame headers counted
	hdrEnd     bool                // its HEADERS frame ended the stream
	contStream uint32              // the stream whose header block continues, or 0
	wakeLater  bool                // the reader queued output; wake the writer before blocking
	ackLater   bool                // the reader queued a PING ack: it may wait for ackTimer
	ackTimer   *time.Timer         // wakes the writer for PING acks no answer carried
	ackArmed   atomic.Bool
	maxStream  uint32  // highest stream id opened by the client
	recvConn   int     // bytes received on the connection not yet credited
	settled    bool    // the client's first frame, its SETTINGS, was read
	inline     *stream // a call to run on the reader once its frame is consumed
	inlineSeq  uint64  // how many calls the reader has run
	noInline   int     // calls to run on workers before the reader runs one again
	// inlineRun is inlineSeq<<1, plus 1 while the reader runs a call: the
	// call's end and handoff (its timer) race to clear that bit, and
	// whichever does decides who reads on.
	inlineRun atomic.Uint64
	handoff   *time.Timer
	// Keepalive: the client's pings that broke the policy, the last
	// one's time (the reader's); whether an answer went out since
	// (answered, the writer's); frames read (for the server's pings).
	pingStrikes int
	lastPingAt  time.Time
	answered    atomic.Bool
	framesRead  atomic.Uint64
	keepalive   *time.Timer

	mu      sync.Mutex
	streams map[uint32]*stream
	closed  bool
	err     error

	// Write side, under wmu. ctrl holds encoded control frames, ready the
	// streams with output to send, in the order they became ready.
	wmu          sync.Mutex
	ctrl         []byte
	ready        []*stream
	sendWindow   int64 // the connection's send window
	peerWindow   int32 // the peer's initial stream window
	peerFrame    int   // the peer's largest frame
	tableSize    int   // a new HPACK table limit to apply, or -1
	wakec        chan struct{}
	drained      chan struct{} // the writer took the queued control frames
	writerDone   chan struct{}
	outQueued    int // answer bytes the streams hold unsent
	wclosed      bool
	henc         *hpack.Encoder
	hbuf         []byte
	bw           *bufio.Writer
	httpRefusals []httpRefusal
	out          []byte // the next write, the writing goroutine's
	writing      bool   // a goroutine is gathering and writing
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		s:          s,
		nc:         nc,
		streams:    map[uint32]*stream{},
		sendWindow: defaultWindow,
		peerWindow: defaultWindow,
		peerFrame:  16384,
		tableSize:  -1,
		wakec:      make(chan struct{}, 1),
		drained:    make(chan struct{}, 1),
		writerDone: make(chan struct{}),
		bw:         bufio.NewWriterSize(nc, writeBufSize),
	}
	c.peer = &peer.Peer{Addr: nc.RemoteAddr(), LocalAddr: nc.LocalAddr()}
	c.henc = hpack.NewEncoder(byteAppender{&c.hbuf}) // the writer goroutine's alone
	c.ackTimer = time.AfterFunc(time.Hour, func() {
		c.ackArmed.Store(false)
		c.wake()
	})
	c.ackTimer.Stop()
	c.handoff = time.AfterFunc(time.Hour, c.handOff)
	c.handoff.Stop()
	if kp := s.opts.Keepalive; kp.Time > 0 {
		seen, pinged := uint64(0), false
		c.keepalive = time.AfterFunc(kp.Time, func() {
			switch n := c.framesRead.Load(); {
			case n != seen:
				seen, pinged = n, false
				c.keepalive.Reset(kp.Time)
			case !pinged:
				pinged = true
				c.control(appendPing(nil, [8]byte{'k', 'e', 'e', 'p', 'a', 'l', 'i', 'v'}))
				c.keepalive.Reset(max(kp.Timeout, time.Millisecond))
			default:
				c.close(fmt.Errorf("keepalive ping not acked within timeout %s", kp.Timeout))
			}
		})
	}
	return c
}

// maxPingStrikes is how many pings a client may send against the policy
// before it is disconnected (grpc-go's).
const maxPingStrikes = 2

// onPing applies the keepalive policy to a client's ping (grpc-go's): an
// error ends the connection with GOAWAY(ENHANCE_YOUR_CALM).
func (c *conn) onPing() error {
	kp := c.s.opts.Keepalive
	if kp.MinTime == 0 {
		return nil
	}
	now := time.Now()
	defer func() { c.lastPingAt = now }()
	if c.answered.Swap(false) {
		c.pingStrikes = 0
		return nil
	}
	c.mu.Lock()
	open := len(c.streams)
	c.mu.Unlock()
	least := kp.MinTime
	if open == 0 {
		least = 2 * time.Hour
	}
	if c.lastPingAt.Add(least).After(now) {
		c.pingStrikes++
	}
	if c.pingStrikes > maxPingStrikes {
		return errTooManyPings
	}
	return nil
}

// errTooManyPings ends a connection whose client pings too often.
var errTooManyPings = goAwayError{http2.ErrCodeEnhanceYourCalm, "too_many_pings"}

// errHeaderFlood ends a connection whose client sends a header block past
// maxHeaderList and does not end it.
var errHeaderFlood = goAwayError{http2.ErrCodeEnhanceYourCalm, "header block too large"}

// goAwayError ends a connection with a GOAWAY of this code and debug data.
type goAwayError struct {
	code  http2.ErrCode
	debug string
}

func (e goAwayError) Error() string { return "h2grpc: " + e.code.String() + ": " + e.debug }

// byteAppender is an HPACK encoder's output: it appends to a slice (a
// connection's header buffer).
type byteAppender struct{ b *[]byte }

func (a byteAppender) Write(p []byte) (int, error) { *a.b = append(*a.b, p...); return len(p), nil }

// serve runs the connection: the preface, then the reader here and the
// writer in its own goroutine, until either ends.
func (c *conn) serve() {
	go c.writeLoop()
	err := c.readPreface()
	if err == nil {
		err = c.readLoop()
	}
	if err != errHandedOff {
		c.end(err)
	}
}

// end ends the connection once its reader has: the writer, the timers,
// the socket; then the server forgets it.
func (c *conn) end(err error) {
	c.close(err)
	<-c.writerDone
	c.ackTimer.Stop()
	c.handoff.Stop()
	if c.keepalive != nil {
		c.keepalive.Stop()
	}
	c.nc.Close()
	c.s.connDone(c)
}

// close ends the connection: a GOAWAY when the connection is still
// sound, then the socket, which stops the reader; every call's context is
// cancelled.
func (c *conn) close(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.err = err
	streams := c.streams
	c.streams = map[uint32]*stream{}
	c.mu.Unlock()
	for _, st := range streams {
		st.reset(status.Error(codes.Unavailable, "transport is closing"))
	}
	code, debug := http2.ErrCodeNo, ""
	var ce http2.ConnectionError
	var ge goAwayError
	if errors.As(err, &ce) {
		code = http2.ErrCode(ce)
	} else if errors.As(err, &ge) {
		code, debug = ge.code, ge.debug
	}
	c.wmu.Lock()
	if !c.wclosed {
		c.ctrl = appendGoAway(c.ctrl, c.maxStreamID(), code, debug)
		c.wclosed = true
	}
	c.wmu.Unlock()
	c.wake()
	// The writer flushes the GOAWAY, then closes the socket; the reader
	// then fails and returns. A writer stuck on a peer that does not read
	// is freed by the deadline.
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
}

func (c *conn) maxStreamID() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.maxStream
}

// readPreface reads the client's preface and queues this server's
// SETTINGS and connection window.
func (c *conn) readPreface() error {
	br := bufio.NewReaderSize(c.nc, readBufSize)
	c.br = br
	_ = c.nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	var pre [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(br, pre[:]); err != nil {
		return err
	}
	if string(pre[:]) != http2.ClientPreface {
		return errors.New("h2grpc: the connection did not open with HTTP/2's preface")
	}
	_ = c.nc.SetReadDeadline(time.Time{})
	c.wmu.Lock()
	settings := []http2.Setting{{ID: http2.SettingInitialWindowSize, Val: streamWindow}}
	if n := c.s.opts.MaxConcurrentStreams; n > 0 {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: n})
	}
	c.ctrl = appendSettings(c.ctrl, settings...)
	c.ctrl = appendWindowUpdate(c.ctrl, 0, connWindow-defaultWindow)
	c.wmu.Unlock()
	c.wake()

	c.hdec = hpack.NewDecoder(4096, func(hf hpack.HeaderField) {
		c.hsize += len(hf.Name) + len(hf.Value) + 32
		if c.hsize <= maxHeaderList {
			c.fields = append(c.fields, hf)
		}
	})
	c.hdec.SetMaxStringLength(maxHeaderList)
	return nil
}

// readLoop reads and handles frames until the connection fails or ends,
// or it hands reading on to another goroutine (errHandedOff).
func (c *conn) readLoop() error {
	br := c.br
	for {
		if (c.wakeLater || c.ackLater) && c.readerIdle() {
			// What the reader queued may have left with an answer already.
			c.wmu.Lock()
			queued := len(c.ctrl) > 0 || len(c.httpRefusals) > 0 || len(c.ready) > 0
			c.wmu.Unlock()
			if queued && c.wakeLater {
				c.wake()
			} else if queued && !c.ackArmed.Swap(true) {
				c.ackTimer.Reset(ackDelay)
			}
			c.wakeLater, c.ackLater = false, false
		}
		if err := c.waitBacklog(); err != nil {
			return err
		}
		// A frame is read in place from the buffer: its header, then the
		// whole of it (our frame size limit is under the buffer's size).
		b, err := br.Peek(frameHeaderLen)
		if err != nil {
			return err
		}
		length := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		typ, flags, id := http2.FrameType(b[3]), http2.Flags(b[4]), binary.BigEndian.Uint32(b[5:9])&0x7fffffff
		if length > maxFrameSize {
			return http2.ConnectionError(http2.ErrCodeFrameSize)
		}
		if b, err = br.Peek(frameHeaderLen + length); err != nil {
			return err
		}
		if !c.settled && (typ != http2.FrameSettings || flags.Has(http2.FlagSettingsAck)) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		c.settled = true
		if c.keepalive != nil {
			c.framesRead.Add(1)
		}
		if err := c.onFrame(typ, flags, id, b[frameHeaderLen:]); err != nil {
			return err
		}
		if _, err := br.Discard(frameHeaderLen + length); err != nil {
			return err
		}
		if st := c.inline; st != nil {
			c.inline = nil
			if !c.readerIdle() {
				c.s.run(st) // more to read: it runs beside the reading
			} else if !c.runInline(st) {
				return errHandedOff
			}
		}
	}
}

// waitBacklog holds the reader while the control frames it queued for the
// client are past ctrlBacklog, until the writer has taken them (the client
// reads) or the connection has ended.
func (c *conn) waitBacklog() error {
	for {
		c.wmu.Lock()
		n, closed := len(c.ctrl)+16*len(c.httpRefusals), c.wclosed
		c.wmu.Unlock()
		if n <= ctrlBacklog || closed {
			return nil
		}
		c.wake()
		select {
		case <-c.drained:
		case <-c.writerDone:
			return errors.New("h2grpc: the connection ended while the client was not reading")
		}
	}
}

// runInline runs a unary call on the reader: the connection's only call,
// with nothing more to read. A lone client (one call at a time) then costs
// no hand-off between goroutines. If the call runs past inlineLimit,
// handOff goes on reading in a new goroutine, and runInline returns false:
// its goroutine ends with the call.
func (c *conn) runInline(st *stream) bool {
	c.inlineSeq++
	run := c.inlineSeq << 1
	c.inlineRun.Store(run | 1)
	c.handoff.Reset(inlineLimit)
	st.runUnary()
	if !c.inlineRun.CompareAndSwap(run|1, run) {
		return false
	}
	c.handoff.Stop()
	return true
}

// handOff runs when a call run by the reader passes inlineLimit: unless
// the call has just ended, this goroutine reads on, and ends the
// connection when reading ends. (A timer late from an earlier call finds
// the current one; handing that on early does no harm.)
func (c *conn) handOff() {
	for {
		run := c.inlineRun.Load()
		if run&1 == 0 {
			return
		}
		if c.inlineRun.CompareAndSwap(run, run&^1) {
			break
		}
	}
	c.s.handoffs.Add(1)
	c.noInline = inlineBackoff
	if err := c.readLoop(); err != errHandedOff {
		c.end(err)
	}
}

const (
	frameHeaderLen = 9
	// maxFrameSize is the largest frame a client may send: HTTP/2's
	// default, which this server does not raise.
	maxFrameSize = 16384
	// maxHeaderList bounds a request's decoded header list (grpc-go's).
	maxHeaderList = 16 << 20
)

// onFrame handles one frame, checking what RFC 9113 asks of its shape;
// an error ends the connection.
func (c *conn) onFrame(typ http2.FrameType, flags http2.Flags, id uint32, p []byte) error {
	protoErr := http2.ConnectionError(http2.ErrCodeProtocol)
	sizeErr := http2.ConnectionError(http2.ErrCodeFrameSize)
	if c.contStream != 0 && (typ != http2.FrameContinuation || id != c.contStream) {
		return protoErr // a header block must not be interleaved
	}
	switch typ {
	case http2.FrameData:
		if id == 0 {
			return protoErr
		}
		data, ok := unpad(flags.Has(http2.FlagDataPadded), p)
		if !ok {
			return protoErr
		}
		return c.onData(id, data, len(p), flags.Has(http2.FlagDataEndStream))
	case http2.FrameHeaders:
		if id == 0 {
			return protoErr
		}
		frag, ok := unpad(flags.Has(http2.FlagHeadersPadded), p)
		if !ok {
			return protoErr
		}
		if flags.Has(http2.FlagHeadersPriority) {
			if len(frag) < 5 {
				return sizeErr
			}
			frag = frag[5:]
		}
		c.fields, c.hsize, c.hblock = c.fields[:0], 0, 0
		c.hdrEnd = flags.Has(http2.FlagHeadersEndStream)
		return c.onHeaderBlock(id, frag, flags.Has(http2.FlagHeadersEndHeaders))
	case http2.FrameContinuation:
		if c.contStream == 0 {
			return protoErr
		}
		return c.onHeaderBlock(id, p, flags.Has(http2.FlagContinuationEndHeaders))
	case http2.FrameSettings:
		if id != 0 {
			return protoErr
		}
		if flags.Has(http2.FlagSettingsAck) {
			if len(p) != 0 {
				return sizeErr
			}
			return nil
		}
		if len(p)%6 != 0 {
			return sizeErr
		}
		return c.onSettings(p)
	case http2.FramePing:
		if id != 0 {
			return protoErr
		}
		if len(p) != 8 {
			return sizeErr
		}
		if !flags.Has(http2.FlagPingAck) {
			c.wmu.Lock()
			c.ctrl = appendPingAck(c.ctrl, [8]byte(p))
			c.wmu.Unlock()
			c.ackLater = true
			return c.onPing()
		}
	case http2.FrameWindowUpdate:
		if len(p) != 4 {
			return sizeErr
		}
		inc := binary.BigEndian.Uint32(p) & 0x7fffffff
		if inc == 0 {
			if id == 0 {
				return protoErr
			}
			c.resetStream(id, http2.ErrCodeProtocol)
			return nil
		}
		return c.onWindowUpdate(id, inc)
	case http2.FrameRSTStream:
		if id == 0 {
			return protoErr
		}
		if len(p) != 4 {
			return sizeErr
		}
		if st := c.stream(id); st != nil {
			c.forget(st)
			st.reset(status.Error(codes.Canceled, "context canceled"))
		}
	case http2.FramePriority:
		if id == 0 {
			return protoErr
		}
		if len(p) != 5 {
			return sizeErr
		}
	case http2.FrameGoAway:
		if id != 0 {
			return protoErr
		}
		if len(p) < 8 {
			return sizeErr
		}
		// The client opens no more streams; those open finish.
	case http2.FramePushPromise:
		return protoErr // a client may not push
	}
	// Unknown frame types are ignored.
	return nil
}

// unpad strips a padded frame's padding.
func unpad(padded bool, p []byte) ([]byte, bool) {
	if !padded {
		return p, true
	}
	if len(p) == 0 || int(p[0]) >= len(p) {
		return nil, false
	}
	return p[1 : len(p)-int(p[0])], true
}

// onHeaderBlock decodes a fragment of a header block; at its end, the
// request it opens (or the trailers it ends) is handled.
func (c *conn) onHeaderBlock(id uint32, frag []byte, end bool) error {
	if _, err := c.hdec.Write(frag); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	c.hblock += frameHeaderLen + len(frag)
	if !end && (c.hsize > maxHeaderList || c.hblock > maxHeaderList) {
		// A block past the limit that goes on (CONTINUATION after
		// CONTINUATION) would hold the connection's reading forever.
		return errHeaderFlood
	}
	if !end {
		c.contStream = id
		return nil
	}
	c.contStream = 0
	if err := c.hdec.Close(); err != nil {
		return http2.ConnectionError(http2.ErrCodeCompression)
	}
	return c.onHeaders(id, c.hdrEnd, c.fields)
}

// wake tells the writer there is something to write.
func (c *conn) wake() {
	select {
	case c.wakec <- struct{}{}:
	default:
	}
}

// control queues an encoded control frame and wakes the writer.
func (c *conn) control(b []byte) {
	c.wmu.Lock()
	c.ctrl = append(c.ctrl, b...)
	c.wmu.Unlock()
	c.wake()
}

// controlLater queues a control frame from the reader, which wakes the
// writer when it has read all it has (wakeLater): a request read with a
// PING or WINDOW_UPDATE goes to its handler first, and the acks leave
// with its answer when that is quick.
func (c *conn) controlLater(b []byte) {
	c.wmu.Lock()
	c.ctrl = append(c.ctrl, b...)
	c.wmu.Unlock()
	c.wakeLater = true
}

// readerIdle says whether the next frame must wait for the network: the
// buffer does not hold it whole.
func (c *conn) readerIdle() bool {
	n := c.br.Buffered()
	if n < 9 {
		return true
	}
	h, _ := c.br.Peek(9)
	return n < 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

func (c *conn) stream(id uint32) *stream {
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	return st
}

// forget drops a stream from the table; frames for it are ignored after.
func (c *conn) forget(st *stream) {
	c.mu.Lock()
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
	}
	c.mu.Unlock()
}

// resetStream answers a stream-level protocol error with RST_STREAM.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	if st := c.stream(id); st != nil {
		c.forget(st)
		st.reset(status.Error(codes.Internal, "stream reset: "+code.String()))
		c.wmu.Lock()
		st.dropOutputLocked()
		c.wmu.Unlock()
	}
	c.controlLater(appendRST(nil, id, code))
}

func (c *conn) onSettings(p []byte) error {
	var err error
	c.wmu.Lock()
	for ; len(p) >= 6 && err == nil; p = p[6:] {
		val := binary.BigEndian.Uint32(p[2:6])
		switch http2.SettingID(binary.BigEndian.Uint16(p)) {
		case http2.SettingInitialWindowSize:
			if val > 1<<31-1 {
				err = http2.ConnectionError(http2.ErrCodeFlowControl)
				break
			}
			delta := int64(val) - int64(c.peerWindow)
			c.peerWindow = int32(val)
			c.mu.Lock()
			for _, st := range c.streams {
				st.sendWindow += delta
				if delta > 0 {
					c.readyLocked(st)
				}
			}
			c.mu.Unlock()
		case http2.SettingMaxFrameSize:
			if val < 16384 || val > 1<<24-1 {
				err = http2.ConnectionError(http2.ErrCodeProtocol)
				break
			}
			c.peerFrame = int(val)
		case http2.SettingHeaderTableSize:
			c.tableSize = int(min(val, 1<<20))
		case http2.SettingEnablePush:
			if val > 1 {
				err = http2.ConnectionError(http2.ErrCodeProtocol)
			}
		}
	}
	if err == nil {
		// Acknowledged in order with the frames queued before it, so the
		// peer sees the new settings applied from the ack on.
		c.ctrl = appendSettingsAck(c.ctrl)
	}
	c.wmu.Unlock()
	c.wakeLater = true
	return err
}

func (c *conn) onWindowUpdate(id, inc uint32) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if id == 0 {
		c.sendWindow += int64(inc)
		if c.sendWindow > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	} else {
		st := c.stream(id)
		if st == nil {
			return nil
		}
		st.sendWindow += int64(inc)
		c.readyLocked(st)
	}
	if len(c.ready) > 0 {
		c.wakeLater = true
	}
	return nil
}

// readyLocked puts a stream with output on the writer's list.
func (c *conn) readyLocked(st *stream) {
	if !st.queued && st.hasOutputLocked() {
		st.queued = true
		c.ready = append(c.ready, st)
	}
}

func (c *conn) onHeaders(id uint32, endStream bool, fields []hpack.HeaderField) error {
	if st := c.stream(id); st != nil {
		// Trailers from the client: gRPC has none; take the end of stream.
		if endStream {
			st.recvEOS()
		}
		return nil
	}
	if id%2 == 0 || id <= c.maxStream {
		// A closed stream's late trailers, or a stream the client may
		// not open.
		if id%2 == 0 || !endStream {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil
	}
	c.mu.Lock()
	c.maxStream = id
	open := len(c.streams)
	c.mu.Unlock()
	limit := uint32(maxOpenStreams)
	if n := c.s.opts.MaxConcurrentStreams; n > 0 {
		limit = n
	}
	c.wmu.Lock()
	held := c.outQueued
	c.wmu.Unlock()
	if uint32(open) >= limit || held > outBacklog {
		c.controlLater(appendRST(nil, id, http2.ErrCodeRefusedStream))
		return nil
	}

	if c.hsize > maxHeaderList {
		c.refuse(id, status.Errorf(codes.Internal, "header list size %d exceeds the limit %d", c.hsize, maxHeaderList))
		return nil
	}
	var method, path, ctype, timeout, enc string
	for _, hf := range fields {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":path":
			path = hf.Value
		case "content-type":
			ctype = hf.Value
		case "grpc-timeout":
			timeout = hf.Value
		case "grpc-encoding":
			enc = hf.Value
		}
	}
	if method != "POST" || !strings.HasPrefix(ctype, "application/grpc") {
		c.refuseHTTP(id, 415)
		return nil
	}
	svcName, methodName, ok := splitPath(path)
	var (
		svc *service
		um  *grpc.MethodDesc
		sd  *grpc.StreamDesc
	)
	if ok {
		svc = c.s.services[svcName]
	}
	st := &stream{c: c, id: id, method: path, recvComp: enc, eos: endStream}
	if svc != nil {
		um, sd = svc.methods[methodName], svc.streams[methodName]
		st.unary, st.impl = um, svc.impl
	}
	if sd != nil {
		st.rready, st.wready = make(chan struct{}, 1), make(chan struct{}, 1)
	}
	hdrs, bad, ok := metadataHeaders(fields)
	if !ok {
		c.refuse(id, status.Errorf(codes.Internal, "malformed binary metadata %q in header %q", bad.Value, bad.Name))
		return nil
	}
	st.cx = callCtx{st: st, hdrs: hdrs}
	st.ctx = &st.cx
	if timeout != "" {
		d, err := parseTimeout(timeout)
		if err != nil {
			c.refuse(id, status.Errorf(codes.Internal, "malformed grpc-timeout: %v", err))
			return nil
		}
		st.cx.start(d, true)
	}
	c.wmu.Lock()
	st.sendWindow = int64(c.peerWindow)
	st.sendComp = compressorFor(enc)
	if st.sendComp != nil {
		st.sendCompName = enc
	}
	c.wmu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		st.cx.cancel(context.Canceled)
		return nil
	}
	c.streams[id] = st
	c.mu.Unlock()

	switch {
	case svc == nil:
		st.finish(nil, status.Errorf(codes.Unimplemented, "unknown service %v", svcName))
	case um != nil:
		if st.eos {
			st.finish(nil, status.Error(codes.Internal, "grpc: the client sent no request message"))
		}
	case sd != nil:
		go st.runStream(svc.impl, sd)
	default:
		st.finish(nil, status.Errorf(codes.Unimplemented, "unknown method %v for service %v", methodName, svcName))
	}
	return nil
}

// refuse answers a stream that never started with a status. It is in the
// table until its status is written, as any stream, so that refusals a
// client does not read count against its open streams.
func (c *conn) refuse(id uint32, err error) {
	st := &stream{c: c, id: id, eos: true}
	st.cx.st = st
	st.ctx = &st.cx
	c.mu.Lock()
	if !c.closed {
		c.streams[id] = st
	}
	c.mu.Unlock()
	st.finish(nil, err)
}

// refuseHTTP answers a request that is not gRPC with an HTTP status.
func (c *conn) refuseHTTP(id uint32, code int) {
	c.wmu.Lock()
	c.httpRefusals = append(c.httpRefusals, httpRefusal{id, code})
	c.wmu.Unlock()
	c.wakeLater = true
}

type httpRefusal struct {
	id   uint32
	code int
}

func (c *conn) onData(id uint32, data []byte, n int, endStream bool) error {
	if n > 0 {
		c.recvConn += n
		if c.recvConn >= connWindow/4 {
			c.controlLater(appendWindowUpdate(nil, 0, uint32(c.recvConn)))
			c.recvConn = 0
		}
	}
	st := c.stream(id)
	if st == nil {
		if id > c.maxStream || id%2 == 0 {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // a stream already finished or reset
	}
	credit, run, err := st.recvData(data, n, endStream)
	if credit > 0 {
		c.controlLater(appendWindowUpdate(nil, st.id, uint32(credit)))
	}
	if err != nil {
		st.fail(err)
		return nil
	}
	if run {
		c.mu.Lock()
		alone := len(c.streams) == 1
		c.mu.Unlock()
		if alone && c.noInline == 0 {
			c.inline = st
		} else {
			c.noInline = max(c.noInline-1, 0)
			c.s.run(st)
		}
	}
	return nil
}

// Frame encoding of what the reader queues (the writer encodes HEADERS
// and DATA itself).

func appendFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendSettings(b []byte, settings ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

func appendSettingsAck(b []byte) []byte {
	return appendFrameHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

func appendWindowUpdate(b []byte, id, inc uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return binary.BigEndian.AppendUint32(b, inc&0x7fffffff)
}

func appendPingAck(b []byte, data [8]byte) []byte {
	b = appendFrameHeader(b, 8, http2.FramePing, http2.FlagPingAck, 0)
	return append(b, data[:]...)
}

func appendRST(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

func appendGoAway(b []byte, last uint32, code http2.ErrCode, debug string) []byte {
	b = appendFrameHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, last&0x7fffffff)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}

func appendPing(b []byte, data [8]byte) []byte {
	b = appendFrameHeader(b, 8, http2.FramePing, 0, 0)
	return append(b, data[:]...)
}

func (c *conn) String() string { return fmt.Sprintf("h2grpc conn %v", c.nc.RemoteAddr()) }
