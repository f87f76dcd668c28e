package h2grpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/stretchr/testify/require"
)

// testKV answers Range with Limit values of 1,000 bytes; Put by its key:
// "echo" returns the token and blob-bin metadata, "error" a status with
// details, "block" waits for its context (which goes to blocked),
// "deadline" reports its deadline, "hold" waits for release, "sleep"
// sleeps a microsecond for each byte of its value; any other key returns
// the value's length as the revision.
type testKV struct {
	pb.UnimplementedKVServer
	blocked chan error
	holding chan struct{}
	release chan struct{}
}

// wait returns what a blocked handler's context ended with.
func (k *testKV) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-k.blocked:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the blocked handler's context did not end")
		return nil
	}
}

func (k *testKV) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	resp := &pb.RangeResponse{Count: r.Limit}
	for i := range r.Limit {
		resp.Kvs = append(resp.Kvs, &mvccpb.KeyValue{Key: fmt.Appendf(nil, "k%d", i), Value: bytes.Repeat([]byte{byte(i)}, 1000)})
	}
	return resp, nil
}

var errMessage = "bad input: 100% \"wrong\"\n— ünïcode"

func (k *testKV) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	switch string(r.Key) {
	case "echo":
		if m, ok := grpc.Method(ctx); !ok || m != "/etcdserverpb.KV/Put" {
			return nil, status.Errorf(codes.Internal, "grpc.Method: %q", m)
		}
		if p, ok := peer.FromContext(ctx); !ok || p.Addr == nil {
			return nil, status.Error(codes.Internal, "no peer")
		}
		md, _ := metadata.FromIncomingContext(ctx)
		return &pb.PutResponse{PrevKv: &mvccpb.KeyValue{Key: []byte(strings.Join(md.Get("token"), ",")), Value: []byte(strings.Join(md.Get("blob-bin"), ","))}}, nil
	case "error":
		st, _ := status.New(codes.FailedPrecondition, errMessage).WithDetails(&errdetails.ErrorInfo{Reason: "why"})
		return nil, st.Err()
	case "block":
		// A context derived from the call's ends with it.
		child, cancel := context.WithCancel(ctx)
		defer cancel()
		<-child.Done()
		k.blocked <- child.Err()
		return nil, child.Err()
	case "hold":
		select {
		case k.holding <- struct{}{}:
		default:
		}
		select {
		case <-k.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "sleep":
		time.Sleep(time.Duration(len(r.Value)) * time.Microsecond)
	case "deadline":
		d, ok := ctx.Deadline()
		if !ok {
			return &pb.PutResponse{}, nil
		}
		return &pb.PutResponse{Header: &pb.ResponseHeader{Revision: int64(time.Until(d) / time.Millisecond)}}, nil
	}
	return &pb.PutResponse{Header: &pb.ResponseHeader{Revision: int64(len(r.Value))}}, nil
}

// testWatch echoes each request's key and range end back as an event.
type testWatch struct{ pb.UnimplementedWatchServer }

func (testWatch) Watch(ws pb.Watch_WatchServer) error {
	for {
		r, err := ws.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		cr := r.GetCreateRequest()
		if err := ws.Send(&pb.WatchResponse{WatchId: int64(len(cr.GetKey())), Events: []*mvccpb.Event{{Kv: &mvccpb.KeyValue{Key: cr.GetKey(), Value: cr.GetRangeEnd()}}}}); err != nil {
			return err
		}
	}
}

// testMaint streams snapshotChunks chunks of 1 MiB, each filled with its
// number; sent counts them.
type testMaint struct {
	pb.UnimplementedMaintenanceServer
	sent atomic.Int64
}

const snapshotChunks = 64

func (m *testMaint) Snapshot(_ *pb.SnapshotRequest, ss pb.Maintenance_SnapshotServer) error {
	for i := range snapshotChunks {
		if err := ss.Send(&pb.SnapshotResponse{RemainingBytes: uint64(snapshotChunks - 1 - i), Blob: bytes.Repeat([]byte{byte(i)}, 1<<20)}); err != nil {
			return err
		}
		m.sent.Add(1)
	}
	return nil
}

type fixture struct {
	s     *Server
	kv    *testKV
	maint *testMaint
	addr  string
}

func start(t *testing.T, opts Options) *fixture {
	t.Helper()
	f := &fixture{s: NewServer(opts), kv: &testKV{blocked: make(chan error, 1), holding: make(chan struct{}, 1), release: make(chan struct{})}, maint: &testMaint{}}
	pb.RegisterKVServer(f.s, f.kv)
	pb.RegisterWatchServer(f.s, testWatch{})
	pb.RegisterMaintenanceServer(f.s, f.maint)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- f.s.Serve(ln) }()
	t.Cleanup(func() {
		f.s.Stop()
		if err := <-done; !errors.Is(err, ErrServerStopped) {
			t.Errorf("Serve: %v", err)
		}
	})
	return f
}

func (f *fixture) dial(t *testing.T, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(f.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// waitIdle waits (bounded) for every call to be done on the server, then
// runs its checker.
func (f *fixture) waitIdle(t *testing.T) {
	t.Helper()
	var err error
	for range 200 {
		if err = f.s.check(true); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal(err)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnary(t *testing.T) {
	f := start(t, Options{MaxRecvMsgSize: 4 << 20})
	kv := pb.NewKVClient(f.dial(t))
	ctx := ctxT(t)
	// Responses past the client's windows (64 KiB at first) and requests
	// past ours (1 MiB a stream).
	for _, n := range []int64{0, 1, 100, 3000} {
		resp, err := kv.Range(ctx, &pb.RangeRequest{Limit: n})
		if err != nil {
			t.Fatalf("range %d: %v", n, err)
		}
		if int64(len(resp.Kvs)) != n || resp.Count != n {
			t.Fatalf("range %d: %d kvs", n, len(resp.Kvs))
		}
		for i, kv := range resp.Kvs {
			if string(kv.Key) != fmt.Sprintf("k%d", i) || !bytes.Equal(kv.Value, bytes.Repeat([]byte{byte(i)}, 1000)) {
				t.Fatalf("range %d: kv %d wrong", n, i)
			}
		}
	}
	for _, n := range []int{0, 1, 70000, 3 << 20} {
		resp, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: make([]byte, n)})
		if err != nil || resp.Header.Revision != int64(n) {
			t.Fatalf("put of %d bytes: %v, %v", n, resp, err)
		}
	}
	_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: make([]byte, 5<<20)})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.HasPrefix(st.Message(), "grpc: received message larger than max (") {
		t.Fatalf("a 5 MiB put: %v", err)
	}
	// Metadata, binary values included.
	ctx2 := metadata.AppendToOutgoingContext(ctx, "token", "tok1", "blob-bin", "\x00\xffbin")
	resp, err := kv.Put(ctx2, &pb.PutRequest{Key: []byte("echo")})
	if err != nil || string(resp.PrevKv.Key) != "tok1" || string(resp.PrevKv.Value) != "\x00\xffbin" {
		t.Fatalf("metadata: %v, %v", resp, err)
	}
	// The deadline reaches the handler.
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err = kv.Put(dctx, &pb.PutRequest{Key: []byte("deadline")})
	if err != nil || resp.Header == nil || resp.Header.Revision <= 0 || resp.Header.Revision > 5000 {
		t.Fatalf("deadline: %v, %v", resp, err)
	}
	f.waitIdle(t)
}

// Frames out of shape end the connection with the error RFC 9113 names.
func TestRawProtocolErrors(t *testing.T) {
	f := start(t, Options{})
	for _, tc := range []struct {
		name string
		send func(r *rawConn)
		want http2.ErrCode
	}{
		{"a frame inside a header block", func(r *rawConn) {
			r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x83}})
			r.fr.WritePing(false, [8]byte{})
		}, http2.ErrCodeProtocol},
		{"a frame past the size limit", func(r *rawConn) {
			r.fr.WriteRawFrame(http2.FrameType(0xee), 0, 0, make([]byte, maxFrameSize+1))
		}, http2.ErrCodeFrameSize},
		{"a PING of 7 bytes", func(r *rawConn) {
			r.fr.WriteRawFrame(http2.FramePing, 0, 0, make([]byte, 7))
		}, http2.ErrCodeFrameSize},
		{"a connection WINDOW_UPDATE of 0", func(r *rawConn) {
			r.fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, make([]byte, 4))
		}, http2.ErrCodeProtocol},
		{"padding past the frame", func(r *rawConn) {
			r.headers(1, false, ":method", "POST", ":path", "/etcdserverpb.KV/Put", "content-type", "application/grpc")
			r.fr.WriteRawFrame(http2.FrameData, http2.FlagDataPadded, 1, []byte{5, 1, 2})
		}, http2.ErrCodeProtocol},
		{"a header block that does not decode", func(r *rawConn) {
			r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}, http2.ErrCodeCompression},
		{"an initial window past 2^31-1", func(r *rawConn) {
			r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl},
	} {
		r := dialRaw(t, f.addr)
		io.WriteString(r.nc, http2.ClientPreface)
		r.fr.WriteSettings()
		tc.send(r)
		g := r.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
		if g.ErrCode != tc.want {
			t.Errorf("%s: GOAWAY %v, want %v", tc.name, g.ErrCode, tc.want)
		}
		if _, err := io.ReadAll(r.nc); err != nil {
			t.Errorf("%s: the connection after GOAWAY: %v", tc.name, err)
		}
	}
	f.waitIdle(t)
}

func TestStatus(t *testing.T) {
	f := start(t, Options{})
	cc := f.dial(t)
	ctx := ctxT(t)
	_, err := pb.NewKVClient(cc).Put(ctx, &pb.PutRequest{Key: []byte("error")})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != errMessage {
		t.Fatalf("got %v, want %q", err, errMessage)
	}
	if d := st.Details(); len(d) != 1 || d[0].(*errdetails.ErrorInfo).Reason != "why" {
		t.Fatalf("details %v", d)
	}
	_, err = pb.NewLeaseClient(cc).LeaseGrant(ctx, &pb.LeaseGrantRequest{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != "unknown service etcdserverpb.Lease" {
		t.Fatalf("unknown service: %v", err)
	}
	err = cc.Invoke(ctx, "/etcdserverpb.KV/Nope", &pb.PutRequest{}, &pb.PutResponse{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != "unknown method Nope for service etcdserverpb.KV" {
		t.Fatalf("unknown method: %v", err)
	}
	f.waitIdle(t)
}

// A cancelled call's handler sees its context end; so do calls in flight
// when the server stops, and their clients see the connection go.
func TestCancelAndStop(t *testing.T) {
	f := start(t, Options{})
	kv := pb.NewKVClient(f.dial(t))
	ctx, cancel := context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() { _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("block")}); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := f.kv.wait(t); err != context.Canceled {
		t.Fatalf("handler's context: %v", err)
	}
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("client: %v", err)
	}
	f.waitIdle(t)

	// The call's deadline (grpc-timeout) ends the handler's context; a
	// raw client, which never cancels, sees DEADLINE_EXCEEDED.
	r := dialRaw(t, f.addr)
	io.WriteString(r.nc, http2.ClientPreface)
	r.fr.WriteSettings()
	r.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/etcdserverpb.KV/Put", ":authority", "x", "content-type", "application/grpc", "grpc-timeout", "50m")
	msg, _ := proto.Marshal(&pb.PutRequest{Key: []byte("block")})
	r.fr.WriteData(1, true, append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...))
	if err := f.kv.wait(t); err != context.DeadlineExceeded {
		t.Fatalf("handler's context past the deadline: %v", err)
	}
	h := r.until("trailers", func(f http2.Frame) bool { h, ok := f.(*http2.MetaHeadersFrame); return ok && h.StreamEnded() }).(*http2.MetaHeadersFrame)
	var got []string
	for _, hf := range h.Fields {
		got = append(got, hf.Name+"="+hf.Value)
	}
	if !strings.Contains(fmt.Sprint(got), "grpc-status=4") {
		t.Fatalf("past the deadline the client got %v", got)
	}
	f.waitIdle(t)

	go func() { _, err := kv.Put(ctxT(t), &pb.PutRequest{Key: []byte("block")}); errc <- err }()
	time.Sleep(50 * time.Millisecond)
	f.s.Stop()
	if err := f.kv.wait(t); err != context.Canceled {
		t.Fatalf("handler's context on stop: %v", err)
	}
	if err := <-errc; status.Code(err) != codes.Unavailable {
		t.Fatalf("client on stop: %v", err)
	}
}

// Concurrent bidirectional streams carry messages of random sizes both
// ways, intact and in order.
func TestStreams(t *testing.T) {
	seed := testseed.Seed(t)
	f := start(t, Options{})
	w := pb.NewWatchClient(f.dial(t))
	// A bound on a hang, not on speed: under the race detector, beside
	// other packages' tests, the streams have taken over 20 s.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed + int64(g)))
			ws, err := w.Watch(ctx)
			if err != nil {
				errs <- err
				return
			}
			const n = 200
			sent := make(chan []byte, n)
			go func() {
				for i := range n {
					key := fmt.Appendf(nil, "%d-%d", g, i)
					// Up to 100 kB: past a frame and the initial window.
					end := make([]byte, rng.Intn(3)*rng.Intn(50000))
					rng.Read(end)
					sent <- end
					if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: key, RangeEnd: end}}}); err != nil {
						errs <- err
						return
					}
				}
				ws.CloseSend()
			}()
			for i := range n {
				resp, err := ws.Recv()
				if err != nil {
					errs <- err
					return
				}
				key := fmt.Sprintf("%d-%d", g, i)
				want := <-sent
				if ev := resp.Events[0]; string(ev.Kv.Key) != key || resp.WatchId != int64(len(key)) || !bytes.Equal(ev.Kv.Value, want) {
					errs <- fmt.Errorf("stream %d message %d: got key %q, %d bytes", g, i, ev.Kv.Key, len(ev.Kv.Value))
					return
				}
			}
			if _, err := ws.Recv(); err != io.EOF {
				errs <- fmt.Errorf("stream %d after the last message: %v", g, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	f.waitIdle(t)
}

// A server stream is held back by a client that does not read: the
// handler's SendMsg blocks once the windows and the send queue are full,
// and the whole stream arrives once the client reads.
func TestServerStreamBackpressure(t *testing.T) {
	f := start(t, Options{})
	// A fixed 64 KiB window (no BDP growth) on the client.
	cc := f.dial(t, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ss, err := pb.NewMaintenanceClient(cc).Snapshot(ctxT(t), &pb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the handler to stop making progress.
	last, still := int64(-1), 0
	for range 500 {
		n := f.maint.sent.Load()
		if n == last {
			if still++; still == 10 {
				break
			}
		} else {
			last, still = n, 0
		}
		time.Sleep(10 * time.Millisecond)
	}
	// 1 MiB of queue, 64 KiB of window, the sockets' buffers: far from
	// all 64 MiB.
	if last >= snapshotChunks/2 {
		t.Fatalf("the handler sent %d of %d chunks to a client that reads nothing", last, snapshotChunks)
	}
	for i := range snapshotChunks {
		resp, err := ss.Recv()
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if len(resp.Blob) != 1<<20 || resp.Blob[0] != byte(i) || resp.Blob[1<<20-1] != byte(i) || resp.RemainingBytes != uint64(snapshotChunks-1-i) {
			t.Fatalf("chunk %d wrong", i)
		}
	}
	if _, err := ss.Recv(); err != io.EOF {
		t.Fatalf("after the last chunk: %v", err)
	}
	f.waitIdle(t)
}

// A unary call alone on its connection runs on the connection's reader;
// one that outlasts inlineLimit hands reading on, so a second call on the
// same connection is answered while the first still runs. (A raw client,
// so that nothing but the call is there to read when it arrives.)
func TestInlineHandOff(t *testing.T) {
	f := start(t, Options{})
	r := dialRaw(t, f.addr)
	io.WriteString(r.nc, http2.ClientPreface)
	r.fr.WriteSettings()
	r.until("SETTINGS ack", func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() })
	r.fr.WriteSettingsAck()
	call := func(id uint32, key, value string) {
		r.headers(id, false, ":method", "POST", ":scheme", "http", ":path", "/etcdserverpb.KV/Put", ":authority", "x", "content-type", "application/grpc", "te", "trailers")
		msg, _ := proto.Marshal(&pb.PutRequest{Key: []byte(key), Value: []byte(value)})
		r.fr.WriteData(id, true, append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))), msg...))
	}
	// ended reads until a stream's trailers and returns its grpc-status.
	ended := func() (uint32, string) {
		h := r.until("trailers", func(f http2.Frame) bool { h, ok := f.(*http2.MetaHeadersFrame); return ok && h.StreamEnded() }).(*http2.MetaHeadersFrame)
		for _, hf := range h.Fields {
			if hf.Name == "grpc-status" {
				return h.StreamID, hf.Value
			}
		}
		return h.StreamID, ""
	}
	call(1, "hold", "")
	select {
	case <-f.kv.holding:
	case <-time.After(10 * time.Second):
		t.Fatal("the held call did not start")
	}
	call(3, "k", "abc")
	if id, code := ended(); id != 3 || code != "0" {
		t.Fatalf("stream %d ended with %q first, want the call beside the held one", id, code)
	}
	if n := f.s.handoffs.Load(); n != 1 {
		t.Fatalf("%d hand-offs, want the held call's", n)
	}
	close(f.kv.release)
	if id, code := ended(); id != 1 || code != "0" {
		t.Fatalf("stream %d ended with %q, want the held call", id, code)
	}
	// The connection goes on with its new reader; for its next calls a
	// slow one runs on a worker (inlineBackoff), handing nothing on.
	id := uint32(5)
	for range inlineBackoff - 2 { // stream 3 was the first after the hand-off
		call(id, "k", "abc")
		if got, code := ended(); got != id || code != "0" {
			t.Fatalf("stream %d ended with %q, want %d", got, code, id)
		}
		id += 2
	}
	call(id, "sleep", strings.Repeat("s", int(5*inlineLimit/time.Microsecond)))
	if got, code := ended(); got != id || code != "0" {
		t.Fatalf("stream %d ended with %q, want %d", got, code, id)
	}
	if n := f.s.handoffs.Load(); n != 1 {
		t.Fatalf("%d hand-offs after a slow call soon after the first hand-off, want 1", n)
	}
	f.waitIdle(t)
}

// Calls that end about when their reader hands reading on (inlineLimit),
// on several connections, some with two calls at a time: every call is
// answered once and rightly, and the server ends idle.
func TestInlineRace(t *testing.T) {
	seed := testseed.Seed(t)
	f := start(t, Options{})
	ctx := ctxT(t)
	const conns, calls = 4, 150
	limit := int(inlineLimit / time.Microsecond)
	var wg sync.WaitGroup
	errs := make(chan error, conns*2)
	for g := range conns {
		kv := pb.NewKVClient(f.dial(t))
		rng := rand.New(rand.NewSource(seed + int64(g)))
		for lane := range 2 {
			// The second lane of a connection calls now and then, so that
			// some calls find another open on their connection.
			every := 1 + lane*4
			lrng := rand.New(rand.NewSource(rng.Int63()))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range calls / every {
					n := limit/2 + lrng.Intn(limit)
					key := "sleep"
					if lrng.Intn(3) == 0 {
						key, n = "k", lrng.Intn(100)
					}
					resp, err := kv.Put(ctx, &pb.PutRequest{Key: []byte(key), Value: make([]byte, n)})
					if err != nil {
						errs <- fmt.Errorf("conn %d lane %d call %d: %v", g, lane, i, err)
						return
					}
					if key == "k" && resp.Header.Revision != int64(n) {
						errs <- fmt.Errorf("conn %d lane %d call %d: revision %d, want %d", g, lane, i, resp.Header.Revision, n)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d hand-offs", f.s.handoffs.Load())
	f.waitIdle(t)
}

func TestCompression(t *testing.T) {
	f := start(t, Options{})
	kv := pb.NewKVClient(f.dial(t))
	ctx := ctxT(t)
	resp, err := kv.Range(ctx, &pb.RangeRequest{Limit: 300}, grpc.UseCompressor("gzip"))
	if err != nil || len(resp.Kvs) != 300 || resp.Kvs[299].Value[999] != byte(299%256) {
		t.Fatalf("gzip: %v", err)
	}
	put, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: make([]byte, 100000)}, grpc.UseCompressor("gzip"))
	if err != nil || put.Header.Revision != 100000 {
		t.Fatalf("gzip put: %v %v", put, err)
	}
	f.waitIdle(t)
}

// rawConn is an HTTP/2 client connection driven frame by frame.
type rawConn struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dialRaw(t *testing.T, addr string) *rawConn {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := &rawConn{t: t, nc: nc}
	r.fr = http2.NewFramer(nc, bufio.NewReader(nc))
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	r.enc = hpack.NewEncoder(&r.hb)
	return r
}

func (r *rawConn) headers(id uint32, end bool, fields ...string) {
	r.hb.Reset()
	for i := 0; i < len(fields); i += 2 {
		r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// until reads frames until one satisfies ok.
func (r *rawConn) until(what string, ok func(http2.Frame) bool) http2.Frame {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok(f) {
			return f
		}
	}
}

// The server's side of the protocol, frame by frame: its SETTINGS and
// window, PING, a non-gRPC request, a stream the client may not use.
func TestRawProtocol(t *testing.T) {
	f := start(t, Options{})

	bad := dialRaw(t, f.addr)
	io.WriteString(bad.nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := io.ReadAll(bad.nc); err != nil {
		t.Fatalf("a connection without the preface: %v", err)
	}

	r := dialRaw(t, f.addr)
	io.WriteString(r.nc, http2.ClientPreface)
	r.fr.WriteSettings()
	sf := r.until("SETTINGS", func(f http2.Frame) bool { _, ok := f.(*http2.SettingsFrame); return ok }).(*http2.SettingsFrame)
	if v, ok := sf.Value(http2.SettingInitialWindowSize); !ok || v != streamWindow {
		t.Fatalf("initial window %d, %v", v, ok)
	}
	wu := r.until("WINDOW_UPDATE", func(f http2.Frame) bool { _, ok := f.(*http2.WindowUpdateFrame); return ok }).(*http2.WindowUpdateFrame)
	if wu.StreamID != 0 || wu.Increment != connWindow-defaultWindow {
		t.Fatalf("window update %+v", wu)
	}
	r.until("SETTINGS ack", func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() })
	r.fr.WriteSettingsAck()

	r.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	p := r.until("PING ack", func(f http2.Frame) bool { _, ok := f.(*http2.PingFrame); return ok }).(*http2.PingFrame)
	if !p.IsAck() || p.Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
		t.Fatalf("ping answer %+v", p)
	}

	r.headers(1, true, ":method", "POST", ":scheme", "http", ":path", "/etcdserverpb.KV/Put", ":authority", "x", "content-type", "text/plain")
	h := r.until("415", func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }).(*http2.MetaHeadersFrame)
	if h.StreamID != 1 || h.PseudoValue("status") != "415" || !h.StreamEnded() {
		t.Fatalf("non-gRPC request answered %v", h.Fields)
	}

	// A unary call whose client sends its message and waits: the answer,
	// then trailers.
	r.headers(3, false, ":method", "POST", ":scheme", "http", ":path", "/etcdserverpb.KV/Put", ":authority", "x", "content-type", "application/grpc", "te", "trailers")
	msg, _ := proto.Marshal(&pb.PutRequest{Key: []byte("k"), Value: []byte("vvv")})
	r.fr.WriteData(3, true, append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...))
	var got []string
	r.until("trailers", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			for _, hf := range f.Fields {
				got = append(got, hf.Name+"="+hf.Value)
			}
			return f.StreamEnded()
		case *http2.DataFrame:
			var resp pb.PutResponse
			if err := proto.Unmarshal(f.Data()[5:], &resp); err != nil || resp.Header.Revision != 3 {
				t.Fatalf("response %v %v", &resp, err)
			}
		}
		return false
	})
	if want := []string{":status=200", "content-type=application/grpc", "grpc-status=0"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("headers and trailers %v, want %v", got, want)
	}

	// A message compressed with an encoding the server lacks.
	r.headers(5, false, ":method", "POST", ":scheme", "http", ":path", "/etcdserverpb.KV/Put", ":authority", "x", "content-type", "application/grpc", "grpc-encoding", "nope")
	r.fr.WriteData(5, true, append([]byte{1, 0, 0, 0, byte(len(msg))}, msg...))
	h = r.until("trailers-only", func(f http2.Frame) bool { _, ok := f.(*http2.MetaHeadersFrame); return ok }).(*http2.MetaHeadersFrame)
	if h.StreamID != 5 || !h.StreamEnded() || h.PseudoValue("status") != "200" {
		t.Fatalf("unknown encoding answered %v", h.Fields)
	}
	for _, hf := range h.Fields {
		got = append(got, hf.Name+"="+hf.Value)
	}
	if s := fmt.Sprint(got); !strings.Contains(s, "grpc-status=12") || !strings.Contains(s, `grpc-message=grpc: Decompressor is not installed for grpc-encoding "nope"`) {
		t.Fatalf("unknown encoding answered %v", got)
	}

	// A header block split over HEADERS (padded, with a priority) and
	// CONTINUATION, then a padded DATA frame: a call like any other.
	r.hb.Reset()
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/etcdserverpb.KV/Put"}, {":authority", "x"}, {"content-type", "application/grpc"}, {"token", strings.Repeat("t", 100)}} {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := bytes.Clone(r.hb.Bytes())
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: block[:10], PadLength: 7, Priority: http2.PriorityParam{Weight: 3}}); err != nil {
		t.Fatal(err)
	}
	r.fr.WriteContinuation(7, false, block[10:20])
	r.fr.WriteContinuation(7, true, block[20:])
	r.fr.WriteDataPadded(7, true, append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...), make([]byte, 33))
	r.until("stream 7's trailers", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == 7 && h.StreamEnded() && h.Fields[0].Value == "0"
	})

	// DATA on a stream the client never opened ends the connection.
	r.fr.WriteData(101, false, []byte{0})
	g := r.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	if g.ErrCode != http2.ErrCodeProtocol || g.LastStreamID != 7 {
		t.Fatalf("goaway %+v", g)
	}
	f.waitIdle(t)
}

// openRaw opens a raw connection through the SETTINGS exchange and
// returns the server's settings.
func openRaw(t *testing.T, addr string) (*rawConn, map[http2.SettingID]uint32) {
	r := dialRaw(t, addr)
	io.WriteString(r.nc, http2.ClientPreface)
	r.fr.WriteSettings()
	sf := r.until("SETTINGS", func(f http2.Frame) bool { _, ok := f.(*http2.SettingsFrame); return ok }).(*http2.SettingsFrame)
	settings := map[http2.SettingID]uint32{}
	_ = sf.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
	r.until("SETTINGS ack", func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() })
	r.fr.WriteSettingsAck()
	return r, settings
}

// TestMaxConcurrentStreams: the bound is advertised, and a stream past it
// is refused (RST_STREAM REFUSED_STREAM) while the connection goes on;
// once a stream ends, another is taken.
func TestMaxConcurrentStreams(t *testing.T) {
	f := start(t, Options{MaxConcurrentStreams: 1})
	r, settings := openRaw(t, f.addr)
	require.Equal(t, uint32(1), settings[http2.SettingMaxConcurrentStreams])
	watch := func(id uint32) {
		r.headers(id, false, ":method", "POST", ":scheme", "http", ":path", "/etcdserverpb.Watch/Watch", ":authority", "x", "content-type", "application/grpc", "te", "trailers")
	}
	watch(1)
	watch(3)
	rst := r.until("RST_STREAM", func(f http2.Frame) bool { _, ok := f.(*http2.RSTStreamFrame); return ok }).(*http2.RSTStreamFrame)
	require.Equal(t, uint32(3), rst.StreamID)
	require.Equal(t, http2.ErrCodeRefusedStream, rst.ErrCode)
	// The client ends its first stream; the next one is served.
	r.fr.WriteData(1, true, nil)
	r.until("stream 1's trailers", func(f http2.Frame) bool {
		h, ok := f.(*http2.MetaHeadersFrame)
		return ok && h.StreamID == 1 && h.StreamEnded()
	})
	f.waitIdle(t)
	watch(5)
	msg, _ := proto.Marshal(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k")}}})
	r.fr.WriteData(5, false, append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...))
	r.until("stream 5's answer", func(f http2.Frame) bool {
		d, ok := f.(*http2.DataFrame)
		return ok && d.StreamID == 5
	})
}

// TestKeepalivePolicy: a client that pings more often than the policy
// allows, three times over, is sent GOAWAY(ENHANCE_YOUR_CALM,
// "too_many_pings"); one that pings once per answer it reads is not.
func TestKeepalivePolicy(t *testing.T) {
	f := start(t, Options{Keepalive: Keepalive{MinTime: time.Hour}})
	ping := func(r *rawConn, b byte) {
		r.fr.WritePing(false, [8]byte{b})
		r.until("PING ack", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() && p.Data[0] == b })
	}
	// Once per answer: forgiven each time.
	r, _ := openRaw(t, f.addr)
	msg, _ := proto.Marshal(&pb.PutRequest{Key: []byte("k"), Value: []byte("v")})
	for i := range uint32(6) {
		id := 2*i + 1
		r.headers(id, false, ":method", "POST", ":scheme", "http", ":path", "/etcdserverpb.KV/Put", ":authority", "x", "content-type", "application/grpc", "te", "trailers")
		r.fr.WriteData(id, true, append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...))
		r.until("trailers", func(f http2.Frame) bool {
			if g, ok := f.(*http2.GoAwayFrame); ok {
				t.Fatalf("GOAWAY %v after %d answered pings", g.ErrCode, i)
			}
			h, ok := f.(*http2.MetaHeadersFrame)
			return ok && h.StreamID == id && h.StreamEnded()
		})
		ping(r, byte(i))
	}
	// Pings with nothing else: the fourth breaks the policy a third time.
	r, _ = openRaw(t, f.addr)
	for i := range 4 {
		r.fr.WritePing(false, [8]byte{byte(i)})
	}
	g := r.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	require.Equal(t, http2.ErrCodeEnhanceYourCalm, g.ErrCode)
	require.Equal(t, "too_many_pings", string(g.DebugData()))
	f.waitIdle(t)
}

// TestKeepaliveServerPings: after Time with nothing read the server
// pings; a client that answers keeps its connection (and is pinged
// again), one that does not is disconnected after Timeout.
func TestKeepaliveServerPings(t *testing.T) {
	f := start(t, Options{Keepalive: Keepalive{Time: 20 * time.Millisecond, Timeout: 20 * time.Millisecond}})
	r, _ := openRaw(t, f.addr)
	for range 3 {
		p := r.until("the server's PING", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() }).(*http2.PingFrame)
		r.fr.WritePing(true, p.Data)
	}
	r, _ = openRaw(t, f.addr)
	r.until("the server's PING", func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() })
	r.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	_, err := r.fr.ReadFrame()
	require.Error(t, err, "the connection is closed")
	f.waitIdle(t)
}
