package h2grpc

import (
	"encoding/base64"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// maxWrite is about how much one round of the writer gathers before it
// writes: a big stream does not hold the others back for long.
const maxWrite = 256 << 10

// writeLoop writes what is queued when woken, until the connection
// closes.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	defer c.nc.Close()
	for range c.wakec {
		// Let the calls that are finishing now queue their answers too,
		// so that one write carries them all.
		runtime.Gosched()
		c.writeOut()
		c.wmu.Lock()
		// (The GOAWAY a close queued after this round's gathering is
		// still to go: the close woke us for it.)
		done := c.wclosed && !c.writing && len(c.ctrl) == 0
		c.wmu.Unlock()
		if done {
			return
		}
	}
}

// writeOut gathers and writes, one system call a round, until nothing is
// queued. One goroutine writes at a time (HPACK's state follows the order
// of the writes): one that finds another writing leaves its output to it,
// as that one gathers again before it stops.
func (c *conn) writeOut() {
	c.wmu.Lock()
	if c.writing {
		c.wmu.Unlock()
		return
	}
	c.writing = true
	for {
		c.out = c.out[:0]
		c.gatherLocked()
		out, closed := c.out, c.wclosed
		if len(out) == 0 {
			c.writing = false
			if cap(c.out) > 4*maxWrite {
				c.out = nil
			}
			c.wmu.Unlock()
			if closed {
				c.wake() // the writer goroutine ends
			}
			return
		}
		c.wmu.Unlock()
		if _, err := c.nc.Write(out); err != nil {
			c.close(err)
		}
		c.wmu.Lock()
	}
}

// gatherLocked encodes into c.out the control frames, then for each
// ready stream in turn its headers, as much data as the windows allow,
// and its trailers once its data is out.
func (c *conn) gatherLocked() {
	if c.tableSize >= 0 {
		c.henc.SetMaxDynamicTableSizeLimit(uint32(c.tableSize))
		c.tableSize = -1
	}
	c.out = append(c.out, c.ctrl...)
	c.ctrl = c.ctrl[:0]
	signal(c.drained)
	for _, r := range c.httpRefusals {
		c.hbuf = c.hbuf[:0]
		c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(r.code)})
		c.writeHeaderBlock(r.id, true)
	}
	c.httpRefusals = c.httpRefusals[:0]
	if c.wclosed {
		// Closing: the GOAWAY is in ctrl; the streams' output is dropped.
		for _, st := range c.ready {
			st.queued = false
		}
		clear(c.ready)
		c.ready = c.ready[:0]
		return
	}
	keep := c.ready[:0]
	for i, st := range c.ready {
		if len(c.out) >= maxWrite {
			keep = append(keep, c.ready[i:]...)
			break
		}
		if !st.dead {
			if st.hdrQueued {
				c.writeHeaders(st)
			}
			c.writeDataLocked(st)
			if st.finished && !st.trailerSent && len(st.out) == 0 {
				c.writeTrailers(st)
			}
		}
		if !st.dead && len(st.out) > 0 && st.sendWindow > 0 {
			// Held back by the connection's window or this round's size.
			keep = append(keep, st)
		} else {
			// Done, or waiting for its own WINDOW_UPDATE.
			st.queued = false
		}
	}
	clear(c.ready[len(keep):])
	c.ready = keep
}

// writeHeaders writes a stream's response headers.
func (c *conn) writeHeaders(st *stream) {
	c.hbuf = c.hbuf[:0]
	c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	if st.sendCompName != "" {
		c.henc.WriteField(hpack.HeaderField{Name: "grpc-encoding", Value: st.sendCompName})
	}
	c.writeMD(st.header)
	c.writeHeaderBlock(st.id, false)
	st.hdrQueued, st.hdrSent = false, true
	c.noteAnswer()
}

// noteAnswer forgives the client's ping strikes, as grpc-go does when it
// sends headers or data (a client may ping on each answer it reads).
func (c *conn) noteAnswer() {
	if c.s.opts.Keepalive.MinTime > 0 && !c.answered.Load() {
		c.answered.Store(true)
	}
}

// writeTrailers writes the status: as trailers, or as a trailers-only
// answer when no headers went out.
func (c *conn) writeTrailers(st *stream) {
	c.hbuf = c.hbuf[:0]
	if !st.hdrSent {
		c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		c.henc.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
		c.writeMD(st.header)
		st.hdrSent = true
	}
	if st.final == nil {
		c.henc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
	} else {
		// As grpc-go's server: a handler's context error keeps its code.
		s, ok := status.FromError(st.final)
		if !ok {
			s = status.FromContextError(st.final)
		}
		c.henc.WriteField(hpack.HeaderField{Name: "grpc-status", Value: strconv.Itoa(int(s.Code()))})
		if m := s.Message(); m != "" && s.Code() != codes.OK {
			c.henc.WriteField(hpack.HeaderField{Name: "grpc-message", Value: encodeGrpcMessage(m)})
		}
		if p := s.Proto(); len(p.Details) > 0 {
			if b, err := proto.Marshal(p); err == nil {
				c.henc.WriteField(hpack.HeaderField{Name: "grpc-status-details-bin", Value: base64.RawStdEncoding.EncodeToString(b)})
			}
		}
	}
	c.writeMD(st.trailer)
	c.writeHeaderBlock(st.id, true)
	st.trailerSent = true
	if st.rstAfter {
		c.out = appendRST(c.out, st.id, http2.ErrCodeNo)
	}
	st.dead = true
	c.forget(st)
}

// writeMD writes metadata as headers, binary values base64-encoded.
func (c *conn) writeMD(md metadata.MD) {
	for k, vs := range md {
		if reservedHeader(k) {
			continue
		}
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.RawStdEncoding.EncodeToString([]byte(v))
			}
			c.henc.WriteField(hpack.HeaderField{Name: k, Value: v})
		}
	}
}

// writeHeaderBlock writes c.hbuf as HEADERS and, past the peer's frame
// size, CONTINUATION frames; end ends the stream.
func (c *conn) writeHeaderBlock(id uint32, end bool) {
	c.out = appendHeaderBlock(c.out, id, c.hbuf, end, c.peerFrame)
}

// appendHeaderBlock appends block as a HEADERS frame and, past maxFrame
// bytes, CONTINUATION frames; end sets END_STREAM.
func appendHeaderBlock(b []byte, id uint32, block []byte, end bool, maxFrame int) []byte {
	typ := http2.FrameHeaders
	var flags http2.Flags
	if end {
		flags = http2.FlagHeadersEndStream
	}
	for {
		n := min(len(block), maxFrame)
		f := flags
		if n == len(block) {
			f |= http2.FlagHeadersEndHeaders
		}
		b = appendFrameHeader(b, n, typ, f, id)
		b = append(b, block[:n]...)
		block = block[n:]
		if len(block) == 0 {
			return b
		}
		typ, flags = http2.FrameContinuation, 0
	}
}

// writeDataLocked writes as much of a stream's queued messages as both
// windows allow, in frames of at most the peer's frame size.
func (c *conn) writeDataLocked(st *stream) {
	for len(st.out) > 0 && len(c.out) < maxWrite {
		allowed := min(c.sendWindow, st.sendWindow, int64(c.peerFrame))
		if allowed <= 0 {
			return
		}
		// One frame: pieces of queued messages up to allowed bytes.
		n := 0
		for _, m := range st.out {
			n += len(*m.buf) - m.off
			if int64(n) >= allowed {
				n = int(allowed)
				break
			}
		}
		c.out = appendFrameHeader(c.out, n, http2.FrameData, 0, st.id)
		c.noteAnswer()
		left := n
		for left > 0 {
			m := &st.out[0]
			k := min(left, len(*m.buf)-m.off)
			c.out = append(c.out, (*m.buf)[m.off:m.off+k]...)
			m.off += k
			left -= k
			if m.off == len(*m.buf) {
				putBuf(m.buf)
				st.out[0] = outMsg{}
				st.out = st.out[1:]
			}
		}
		c.sendWindow -= int64(n)
		st.sendWindow -= int64(n)
		st.outBytes -= n
		c.outQueued -= n
	}
	if st.outBytes < sendQueueLimit {
		signal(st.wready)
	}
}
