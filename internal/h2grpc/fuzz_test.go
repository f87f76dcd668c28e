package h2grpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/internal/testleak"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
)

// fuzzConn is a connection whose client side is a script: reads return
// the script's bytes, then wait until released and end; writes are kept.
type fuzzConn struct {
	in       []byte
	consumed chan struct{} // closed once the script is read
	release  chan struct{} // closed to end reading
	mu       sync.Mutex
	out      bytes.Buffer
	closed   chan struct{}
	once     sync.Once
	cOnce    sync.Once
}

func newFuzzConn(in []byte) *fuzzConn {
	return &fuzzConn{in: in, consumed: make(chan struct{}), release: make(chan struct{}), closed: make(chan struct{})}
}

func (c *fuzzConn) Read(p []byte) (int, error) {
	if len(c.in) > 0 {
		n := copy(p, c.in)
		c.in = c.in[n:]
		return n, nil
	}
	c.cOnce.Do(func() { close(c.consumed) })
	select {
	case <-c.release:
		return 0, io.EOF
	case <-c.closed:
		return 0, net.ErrClosed
	}
}

func (c *fuzzConn) Write(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *fuzzConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *fuzzConn) LocalAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 2379} }
func (c *fuzzConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (c *fuzzConn) SetDeadline(t time.Time) error      { return nil }
func (c *fuzzConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fuzzConn) SetWriteDeadline(t time.Time) error { return nil }

// script builds a client's bytes frame by frame.
type script struct {
	buf bytes.Buffer
	fr  *http2.Framer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

func newScript() *script {
	s := &script{}
	s.buf.WriteString(http2.ClientPreface)
	s.fr = http2.NewFramer(&s.buf, nil)
	s.enc = hpack.NewEncoder(&s.hb)
	_ = s.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	return s
}

func (s *script) call(id uint32, path string, msg proto.Message, end bool) {
	s.hb.Reset()
	h := grpcHeaders(path)
	for i := 0; i < len(h); i += 2 {
		s.enc.WriteField(hpack.HeaderField{Name: h[i], Value: h[i+1]})
	}
	_ = s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: s.hb.Bytes(), EndHeaders: true})
	b, _ := proto.Marshal(msg)
	_ = s.fr.WriteData(id, end, append([]byte{0, 0, 0, 0, byte(len(b))}, b...))
}

// fuzzKV is testKV with its answers' size bounded, and nothing kept of a
// blocked call.
type fuzzKV struct{ *testKV }

func (k fuzzKV) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	r.Limit = min(max(r.Limit, 0), 64)
	return k.testKV.Range(ctx, r)
}

func (k fuzzKV) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if string(r.Key) == "block" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return k.testKV.Put(ctx, r)
}

// FuzzConn feeds a connection the preface and then arbitrary bytes (seeded
// with calls, pings, settings, resets, window updates, continuations,
// padding, a watch stream). The server must not panic, must end the
// connection when the bytes end, with every goroutine it started gone,
// and what it wrote must be well-formed HTTP/2 with a GOAWAY.
func FuzzConn(f *testing.F) {
	put := &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}
	seeds := []func(s *script){
		func(s *script) { s.call(1, "/etcdserverpb.KV/Put", put, true) },
		func(s *script) {
			s.call(1, "/etcdserverpb.KV/Range", &pb.RangeRequest{Key: []byte("k"), Limit: 3}, true)
			s.call(3, "/etcdserverpb.KV/Put", &pb.PutRequest{Key: []byte("error")}, true)
			_ = s.fr.WritePing(false, [8]byte{1})
			_ = s.fr.WriteWindowUpdate(0, 1<<20)
			_ = s.fr.WriteWindowUpdate(1, 1<<20)
		},
		func(s *script) {
			s.call(1, "/etcdserverpb.Watch/Watch", &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("a")}}}, false)
			s.call(3, "/etcdserverpb.KV/Put", &pb.PutRequest{Key: []byte("hold")}, true)
			_ = s.fr.WriteRSTStream(3, http2.ErrCodeCancel)
			_ = s.fr.WriteData(1, true, nil)
		},
		func(s *script) {
			s.hb.Reset()
			s.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
			b := s.hb.Bytes()
			_ = s.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:1], PadLength: 3})
			_ = s.fr.WriteContinuation(1, true, b[1:])
			_ = s.fr.WriteDataPadded(1, true, []byte{0, 0, 0, 0, 0}, []byte{0, 0})
			_ = s.fr.WritePriority(1, http2.PriorityParam{StreamDep: 3, Weight: 7})
			_ = s.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
			_ = s.fr.WriteSettingsAck()
			_ = s.fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye"))
		},
		func(s *script) {
			s.call(1, "/etcdserverpb.Maintenance/Snapshot", &pb.SnapshotRequest{}, true)
			s.call(3, "/nope.Service/X", put, true)
			s.call(5, "/etcdserverpb.KV/Put", put, false)
			_ = s.fr.WriteRawFrame(0x20, 0, 5, []byte("unknown frame type"))
		},
	}
	for _, seed := range seeds {
		s := newScript()
		seed(s)
		f.Add(s.buf.Bytes()[len(http2.ClientPreface):])
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		before := runtime.NumGoroutine()
		srv := NewServer(Options{MaxRecvMsgSize: 1 << 16, MaxConcurrentStreams: 16})
		kv := fuzzKV{&testKV{blocked: make(chan error, 1), holding: make(chan struct{}, 1), release: make(chan struct{})}}
		pb.RegisterKVServer(srv, kv)
		pb.RegisterWatchServer(srv, testWatch{})
		pb.RegisterMaintenanceServer(srv, &testMaint{})
		nc := newFuzzConn(append([]byte(http2.ClientPreface), in...))
		srv.ServeConn(nc)
		select {
		case <-nc.consumed:
		case <-nc.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the server did not read its input within 10 s")
		}
		// Let the calls the input made finish (bounded), then end it.
		for range 20 {
			if srv.check(true) == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if err := srv.check(false); err != nil {
			t.Fatal(err)
		}
		close(nc.release)
		ended := false
		for range 1000 {
			srv.mu.Lock()
			ended = len(srv.conns) == 0
			srv.mu.Unlock()
			if ended {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if !ended {
			t.Fatal("the connection did not end within 1 s of its input")
		}
		srv.Stop()
		testleak.Goroutines(t, before)
		if err := checkOutput(nc.out.Bytes()); err != nil {
			t.Fatal(err)
		}
	})
}

// checkOutput reads what the server wrote as a client would: frames that
// parse (header blocks that decode), opening with SETTINGS, with a GOAWAY
// (control frames the reader queued may follow it).
func checkOutput(out []byte) error {
	if len(out) == 0 {
		return nil // the preface was refused before any output (none here)
	}
	fr := http2.NewFramer(io.Discard, bytes.NewReader(out))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = 1 << 30
	var last http2.Frame
	goaway, n := false, 0
	for i := 0; ; i++ {
		f, err := fr.ReadFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("frame %d the server wrote: %v", i, err)
		}
		if i == 0 {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				return fmt.Errorf("the server opened with %v, not SETTINGS", f.Header().Type)
			}
		}
		last, n = f, n+1
		if _, ok := f.(*http2.GoAwayFrame); ok {
			goaway = true
		}
	}
	if !goaway {
		return fmt.Errorf("the server wrote no GOAWAY (%d frames, the last %v)", n, last)
	}
	return nil
}
