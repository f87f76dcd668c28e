package v3rpc

import (
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/encoding"
)

// zstdCompressor is gRPC message compression named "zstd". A client that
// sends its requests with it (grpc.UseCompressor("zstd")) gets the
// responses compressed too, the Snapshot stream's chunks above all; a
// client that does not ask (etcdctl, clientv3) gets them as they are.
type zstdCompressor struct {
	encoders, decoders sync.Pool
}

func init() { encoding.RegisterCompressor(&zstdCompressor{}) }

func (*zstdCompressor) Name() string { return "zstd" }

// Encoders and decoders are pooled; each message gets its own wrapper,
// which lets go of its coder once, so a late Read or a second Close
// cannot reach a coder already in other hands.
type zstdWriter struct {
	e    *zstd.Encoder
	pool *sync.Pool
}

func (w *zstdWriter) Write(p []byte) (int, error) {
	if w.e == nil {
		return 0, io.ErrClosedPipe
	}
	return w.e.Write(p)
}

func (w *zstdWriter) Close() error {
	if w.e == nil {
		return nil
	}
	err := w.e.Close()
	w.pool.Put(w.e)
	w.e = nil
	return err
}

func (c *zstdCompressor) Compress(w io.Writer) (io.WriteCloser, error) {
	if e, ok := c.encoders.Get().(*zstd.Encoder); ok {
		e.Reset(w)
		return &zstdWriter{e: e, pool: &c.encoders}, nil
	}
	// The fastest level: the stream is bound by the network or the disk,
	// and most of a snapshot compresses well at any level.
	e, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &zstdWriter{e: e, pool: &c.encoders}, nil
}

type zstdReader struct {
	d    *zstd.Decoder
	pool *sync.Pool
}

// Read gives the decoder back at the end of the message.
func (r *zstdReader) Read(p []byte) (int, error) {
	if r.d == nil {
		return 0, io.EOF
	}
	n, err := r.d.Read(p)
	if err == io.EOF {
		_ = r.d.Reset(nil)
		r.pool.Put(r.d)
		r.d = nil
	}
	return n, err
}

func (c *zstdCompressor) Decompress(r io.Reader) (io.Reader, error) {
	if d, ok := c.decoders.Get().(*zstd.Decoder); ok {
		if err := d.Reset(r); err != nil {
			return nil, err
		}
		return &zstdReader{d: d, pool: &c.decoders}, nil
	}
	// The default window cap (8 MiB) holds any message a member accepts;
	// gRPC bounds what a message decompresses to.
	d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return &zstdReader{d: d, pool: &c.decoders}, nil
}
