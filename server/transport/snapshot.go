package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/cairn-kv/cairn/raft"
)

// Snapshots. A leader sends a follower its state when the follower needs
// entries the leader's log no longer holds: raft's MsgSnap carries the
// snapshot's metadata, and the state (the page file) goes with it, zstd
// compressed, on a connection of its own (streamSnapshot), so neither
// stream waits behind it:
//
//	dialer:   hello, frame(a batch of one MsgSnap), chunk..., end, trailer
//	chunk   := len:u32 (1..maxChunk) zstd-compressed bytes
//	end     := len:u32 = 0
//	trailer := crc:u32 (CRC-32C of the uncompressed data) size:u64 (its length)
//	listener: status:u8 (0: received; 1: refused) len:u32 message
//
// The receiver checks the trailer against what it decompressed (zstd's
// frames carry their own checksum too), then answers once its member has
// the data safe and has stepped the message, or with why not.

// streamSnapshot carries one snapshot and its answer.
const streamSnapshot streamKind = 4

const (
	maxChunk = 1 << 20 // compressed bytes in one chunk, at most
	// snapshotAnswerTimeout bounds the wait for the receiver's answer
	// once everything is sent: it syncs and checks the whole file first.
	snapshotAnswerTimeout = 5 * time.Minute
)

var snapshotCRC = crc32.MakeTable(crc32.Castagnoli)

// SnapshotReceiver takes the snapshots peers send. The member implements
// it beside Handler.
type SnapshotReceiver interface {
	// ReceiveSnapshot reads a snapshot's data to its end (an error from
	// data means it did not arrive whole) and steps msg, a MsgSnap, once
	// the data is safe. Its error is answered to the sender.
	ReceiveSnapshot(msg raft.Message, data io.Reader) error
}

// SendSnapshot sends msg (a MsgSnap) to msg.To with the snapshot's data,
// which write writes, and returns once the peer answers that it has it
// (nil) or not. It takes as long as the send: call it off the raft loop.
func (t *Transport) SendSnapshot(ctx context.Context, msg raft.Message, write func(io.Writer) error) error {
	if msg.Type != raft.MsgSnap || msg.Snapshot == nil {
		return fmt.Errorf("transport: not a snapshot message: %v", msg)
	}
	t.mu.Lock()
	p := t.peers[msg.To]
	t.mu.Unlock()
	if p == nil {
		return fmt.Errorf("transport: no peer %x", msg.To)
	}
	if f := t.cfg.Faults; f != nil && f.cut(msg.From, msg.To) {
		return fmt.Errorf("transport: the link to %x is cut", msg.To)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(t.ctx, cancel)()
	conn, err := p.messages.dialKind(ctx, streamSnapshot)
	if err != nil {
		return err
	}
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()

	bw := bufio.NewWriterSize(conn, 64<<10)
	frame := encodeBatch([]byte{0, 0, 0, 0}, []raft.Message{msg})
	_ = conn.SetWriteDeadline(time.Now().Add(t.writeTimeout()))
	if err := writeFrame(bw, frame); err != nil {
		return err
	}
	if err := writeSnapshotData(bw, conn, t.writeTimeout(), write); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("transport: sending a snapshot to %x: %w", msg.To, ctx.Err())
		}
		return fmt.Errorf("transport: sending a snapshot to %x: %w", msg.To, err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(snapshotAnswerTimeout))
	var head [5]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return fmt.Errorf("transport: waiting for %x to take a snapshot: %w", msg.To, err)
	}
	n := binary.LittleEndian.Uint32(head[1:])
	if n > maxFrame {
		return fmt.Errorf("transport: %x answered a snapshot with %d bytes", msg.To, n)
	}
	text := make([]byte, n)
	if _, err := io.ReadFull(conn, text); err != nil {
		return err
	}
	if head[0] != 0 {
		return &RemoteError{Msg: string(text)}
	}
	return nil
}

// writeSnapshotData writes a snapshot's data as write gives it: chunks of
// zstd-compressed bytes, the end mark, and the trailer (CRC and size of
// the data); each write gets its own deadline on conn (if set).
func writeSnapshotData(bw *bufio.Writer, conn net.Conn, timeout time.Duration, write func(io.Writer) error) error {
	cw := &chunkWriter{w: bw, conn: conn, timeout: timeout}
	enc, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	sum := &summer{w: enc, crc: crc32.New(snapshotCRC)}
	err = write(sum)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = cw.end(sum.crc.Sum32(), sum.n)
	}
	return err
}

// summer counts and checksums what goes through it.
type summer struct {
	w   io.Writer
	crc hash.Hash32
	n   uint64
}

func (s *summer) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	_, _ = s.crc.Write(p[:n])
	s.n += uint64(n)
	return n, err
}

// chunkWriter frames what the compressor writes as chunks; each write
// gets its own deadline on conn (if set).
type chunkWriter struct {
	w       *bufio.Writer
	conn    net.Conn
	timeout time.Duration
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), maxChunk)
		if c.conn != nil {
			_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
		}
		var head [4]byte
		binary.LittleEndian.PutUint32(head[:], uint32(n))
		if _, err := c.w.Write(head[:]); err != nil {
			return written, err
		}
		if _, err := c.w.Write(p[:n]); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// end writes the end mark and the trailer, and flushes.
func (c *chunkWriter) end(crc uint32, size uint64) error {
	var b [4 + 4 + 8]byte
	binary.LittleEndian.PutUint32(b[4:], crc)
	binary.LittleEndian.PutUint64(b[8:], size)
	if c.conn != nil {
		_ = c.conn.SetWriteDeadline(time.Now().Add(c.timeout))
	}
	if _, err := c.w.Write(b[:]); err != nil {
		return err
	}
	return c.w.Flush()
}

// receiveSnapshot takes one snapshot on conn (after the hello) and
// answers it.
func (t *Transport) receiveSnapshot(from uint64, r *bufio.Reader, conn net.Conn) {
	answer := func(err error) {
		b := []byte{0, 0, 0, 0, 0}
		if err != nil {
			b[0] = 1
			b = append(b, err.Error()...)
		}
		binary.LittleEndian.PutUint32(b[1:], uint32(len(b)-5))
		_ = conn.SetWriteDeadline(time.Now().Add(t.writeTimeout()))
		_, _ = conn.Write(b)
	}
	_ = conn.SetReadDeadline(time.Now().Add(t.readTimeout()))
	buf, err := readFrame(r, nil)
	if err != nil {
		return
	}
	msgs, err := decodeBatch(buf)
	if err == nil && (len(msgs) != 1 || msgs[0].Type != raft.MsgSnap || msgs[0].Snapshot == nil || msgs[0].From != from || msgs[0].To != t.cfg.ID) {
		err = errors.New("transport: a snapshot stream must open with one MsgSnap from its sender to this member")
	}
	if err != nil {
		t.log.Warn("refused a snapshot", "remote-member-id", fmt.Sprintf("%x", from), "err", err)
		answer(err)
		return
	}
	rcv, ok := t.cfg.Handler.(SnapshotReceiver)
	if !ok {
		answer(errors.New("transport: this member takes no snapshots"))
		return
	}
	data, done, err := readSnapshotData(r, conn, t.readTimeout())
	if err != nil {
		answer(err)
		return
	}
	defer done()
	err = rcv.ReceiveSnapshot(msgs[0], data)
	if err == nil && !data.done {
		err = errors.New("transport: the receiver did not read the snapshot to its end")
	}
	answer(err)
}

// maxSnapshotWindow bounds the zstd window a sender may ask the receiver
// to keep (the memory a stream's decoder holds); cairn's sender uses 4 MiB
// or less.
const maxSnapshotWindow = 64 << 20

// readSnapshotData reads a snapshot's data from r, as writeSnapshotData
// wrote it: decompressed, and at its end checked against the trailer.
// done releases the decoder.
func readSnapshotData(r *bufio.Reader, conn net.Conn, timeout time.Duration) (data *checkedReader, done func(), err error) {
	cr := &chunkReader{r: r, conn: conn, timeout: timeout}
	dec, err := zstd.NewReader(cr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(maxSnapshotWindow))
	if err != nil {
		return nil, nil, err
	}
	return &checkedReader{r: dec, chunks: cr, crc: crc32.New(snapshotCRC)}, dec.Close, nil
}

// chunkReader reads the chunks' bytes, ending (io.EOF) at the end mark;
// each chunk gets its own deadline on conn (if set).
type chunkReader struct {
	r       *bufio.Reader
	conn    net.Conn
	timeout time.Duration
	left    uint32 // of the current chunk
	done    bool   // the end mark was read
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for c.left == 0 {
		if c.done {
			return 0, io.EOF
		}
		if c.conn != nil {
			_ = c.conn.SetReadDeadline(time.Now().Add(c.timeout))
		}
		var head [4]byte
		if _, err := io.ReadFull(c.r, head[:]); err != nil {
			return 0, noEOF(err)
		}
		c.left = binary.LittleEndian.Uint32(head[:])
		if c.left > maxChunk {
			return 0, fmt.Errorf("transport: a snapshot chunk of %d bytes, past the %d allowed", c.left, maxChunk)
		}
		c.done = c.left == 0
	}
	n, err := c.r.Read(p[:min(len(p), int(c.left))])
	c.left -= uint32(n)
	return n, noEOF(err)
}

// noEOF turns an end of the connection inside a snapshot into an error:
// only the end mark ends the data.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkedReader is the snapshot's data as the receiver reads it: at its
// end, the trailer is read and checked against what came through.
type checkedReader struct {
	r      io.Reader
	chunks *chunkReader
	crc    hash.Hash32
	n      uint64
	done   bool // read to its end, and the trailer matched
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.done {
		return 0, io.EOF
	}
	n, err := c.r.Read(p)
	_, _ = c.crc.Write(p[:n])
	c.n += uint64(n)
	if err != io.EOF {
		return n, err
	}
	if !c.chunks.done {
		// The compressed data ended: only the end mark may follow.
		if extra, err := io.Copy(io.Discard, c.chunks); err != nil || extra != 0 {
			return n, fmt.Errorf("transport: %d bytes after the snapshot's compressed data (%v)", extra, err)
		}
	}
	var b [12]byte
	if _, err := io.ReadFull(c.chunks.r, b[:]); err != nil {
		return n, noEOF(err)
	}
	if crc, size := binary.LittleEndian.Uint32(b[:]), binary.LittleEndian.Uint64(b[4:]); crc != c.crc.Sum32() || size != c.n {
		return n, fmt.Errorf("transport: the snapshot arrived damaged: %d bytes with CRC %08x, the sender sent %d with %08x", c.n, c.crc.Sum32(), size, crc)
	}
	c.done = true
	return n, io.EOF
}
