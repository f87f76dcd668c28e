package h2grpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// clientServers runs test against the same services on this package's
// server and on grpc-go's.
func clientServers(t *testing.T, test func(t *testing.T, addr string, kv *testKV)) {
	t.Run("h2grpc", func(t *testing.T) {
		f := start(t, Options{MaxRecvMsgSize: 4 << 20})
		test(t, f.addr, f.kv)
		f.waitIdle(t)
	})
	t.Run("grpc-go", func(t *testing.T) {
		kv := &testKV{blocked: make(chan error, 1), holding: make(chan struct{}, 1), release: make(chan struct{})}
		s := grpc.NewServer(grpc.MaxRecvMsgSize(4 << 20))
		pb.RegisterKVServer(s, kv)
		pb.RegisterWatchServer(s, testWatch{})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- s.Serve(ln) }()
		t.Cleanup(func() {
			s.Stop()
			require.NoError(t, <-done)
		})
		test(t, ln.Addr().String(), kv)
	})
}

func dialClient(t *testing.T, addr, token string) *ClientConn {
	t.Helper()
	cc, err := Dial(ctxT(t), addr, nil, token)
	require.NoError(t, err)
	t.Cleanup(func() {
		require.NoError(t, cc.check(true), "every call done")
		cc.Close()
	})
	return cc
}

// TestClientUnary: the generated KV client over a ClientConn, against both
// servers: answers and requests past every flow-control window, a
// status's code and message as the server set them, metadata (binary
// too), the deadline reaching the handler, and a call cancelled or timed
// out ending with Canceled or DeadlineExceeded while its handler's
// context ends.
func TestClientUnary(t *testing.T) {
	clientServers(t, func(t *testing.T, addr string, tk *testKV) {
		kv := pb.NewKVClient(dialClient(t, addr, "tok1"))
		ctx := ctxT(t)
		for _, n := range []int64{0, 1, 100, 3000} {
			resp, err := kv.Range(ctx, &pb.RangeRequest{Limit: n})
			require.NoError(t, err, "range %d", n)
			require.Len(t, resp.Kvs, int(n))
			for i, kv := range resp.Kvs {
				require.Equal(t, fmt.Sprintf("k%d", i), string(kv.Key))
				require.Equal(t, bytes.Repeat([]byte{byte(i)}, 1000), kv.Value)
			}
		}
		for _, n := range []int{0, 1, 70000, 3 << 20} {
			resp, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: make([]byte, n)})
			require.NoError(t, err, "put of %d bytes", n)
			require.Equal(t, int64(n), resp.Header.Revision)
		}
		_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("error")})
		st := status.Convert(err)
		require.Equal(t, codes.FailedPrecondition, st.Code())
		require.Equal(t, errMessage, st.Message())

		ctx2 := metadata.AppendToOutgoingContext(ctx, "blob-bin", "\x00\xffbin")
		resp, err := kv.Put(ctx2, &pb.PutRequest{Key: []byte("echo")})
		require.NoError(t, err)
		require.Equal(t, "tok1", string(resp.PrevKv.Key), "the connection's token")
		require.Equal(t, "\x00\xffbin", string(resp.PrevKv.Value))

		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err = kv.Put(dctx, &pb.PutRequest{Key: []byte("deadline")})
		cancel()
		require.NoError(t, err)
		require.Positive(t, resp.Header.Revision)
		require.LessOrEqual(t, resp.Header.Revision, int64(5000))

		cctx, cancel := context.WithCancel(ctx)
		go func() {
			time.Sleep(20 * time.Millisecond)
			cancel()
		}()
		_, err = kv.Put(cctx, &pb.PutRequest{Key: []byte("block")})
		require.Equal(t, codes.Canceled, status.Code(err), "%v", err)
		require.Error(t, tk.wait(t), "the handler's context ended")

		dctx, cancel = context.WithTimeout(ctx, 30*time.Millisecond)
		_, err = kv.Put(dctx, &pb.PutRequest{Key: []byte("block")})
		cancel()
		require.Equal(t, codes.DeadlineExceeded, status.Code(err), "%v", err)
		require.Error(t, tk.wait(t))

		// The connection is still good.
		resp, err = kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: []byte("abc")})
		require.NoError(t, err)
		require.Equal(t, int64(3), resp.Header.Revision)
	})
}

// TestClientConcurrent: many goroutines' calls on one connection each get
// their own answer.
func TestClientConcurrent(t *testing.T) {
	clientServers(t, func(t *testing.T, addr string, _ *testKV) {
		kv := pb.NewKVClient(dialClient(t, addr, ""))
		ctx := ctxT(t)
		var wg sync.WaitGroup
		errs := make(chan error, 50)
		for g := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 100 {
					n := g*1000 + i
					resp, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Value: make([]byte, n)})
					if err == nil && resp.Header.Revision != int64(n) {
						err = fmt.Errorf("a put of %d bytes answered %d", n, resp.Header.Revision)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	})
}

// TestClientStream: a bidirectional stream (the generated Watch client):
// every request answered in order, headers, then io.EOF once the client
// closes its side and the server returns; a stream's context cancelled
// ends it with Canceled.
func TestClientStream(t *testing.T) {
	clientServers(t, func(t *testing.T, addr string, _ *testKV) {
		wc := pb.NewWatchClient(dialClient(t, addr, ""))
		ctx := ctxT(t)
		ws, err := wc.Watch(ctx)
		require.NoError(t, err)
		for i := range 200 {
			key := bytes.Repeat([]byte{'k'}, i+1)
			require.NoError(t, ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: key, RangeEnd: []byte("end")}}}))
			resp, err := ws.Recv()
			require.NoError(t, err)
			require.Equal(t, int64(i+1), resp.WatchId)
			require.Equal(t, key, resp.Events[0].Kv.Key)
		}
		_, err = ws.Header()
		require.NoError(t, err)
		require.NoError(t, ws.CloseSend())
		_, err = ws.Recv()
		require.Equal(t, io.EOF, err)

		cctx, cancel := context.WithCancel(ctx)
		ws, err = wc.Watch(cctx)
		require.NoError(t, err)
		require.NoError(t, ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("a")}}}))
		_, err = ws.Recv()
		require.NoError(t, err)
		cancel()
		_, err = ws.Recv()
		require.Equal(t, codes.Canceled, status.Code(err), "%v", err)
	})
}

// TestClientConnectionLost: a server that goes away fails the calls in
// flight and the ones after with Unavailable.
func TestClientConnectionLost(t *testing.T) {
	f := start(t, Options{})
	cc := dialClient(t, f.addr, "")
	kv := pb.NewKVClient(cc)
	ctx := ctxT(t)
	_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k")})
	require.NoError(t, err)
	held := make(chan error, 1)
	go func() {
		_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("hold")})
		held <- err
	}()
	<-f.kv.holding
	f.s.Stop()
	err = <-held
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	_, err = kv.Put(ctx, &pb.PutRequest{Key: []byte("k")})
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	require.NoError(t, cc.Close())
	_, err = kv.Put(ctx, &pb.PutRequest{Key: []byte("k")})
	require.Error(t, err)
	require.False(t, errors.Is(err, context.Canceled))
}

// TestClientCheckCatches: the table's checker finds a call left open on an
// idle connection, and an ended call left in the table.
func TestClientCheckCatches(t *testing.T) {
	f := start(t, Options{})
	cc, err := Dial(ctxT(t), f.addr, nil, "")
	require.NoError(t, err)
	defer cc.Close()
	st, err := cc.newStream(ctxT(t), "/etcdserverpb.KV/Put", false)
	require.NoError(t, err)
	require.NoError(t, cc.check(false))
	require.ErrorContains(t, cc.check(true), "1 streams open on an idle connection")
	cc.mu.Lock()
	st.st = status.New(codes.OK, "")
	cc.mu.Unlock()
	require.ErrorContains(t, cc.check(false), "ended (rpc error: code = OK desc = ) and is still in the table")
	st.cancel(status.New(codes.Canceled, "test"))
	require.NoError(t, cc.check(true))
}

// TestClientStreamLimit: against servers that take two streams at once,
// 40 goroutines' calls wait for room rather than being refused.
func TestClientStreamLimit(t *testing.T) {
	run := func(t *testing.T, addr string) {
		kv := pb.NewKVClient(dialClient(t, addr, ""))
		ctx := ctxT(t)
		_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k")}) // the server's SETTINGS are read by its answer
		require.NoError(t, err)
		var wg sync.WaitGroup
		errs := make(chan error, 40*10)
		for range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					if _, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("sleep"), Value: make([]byte, 200)}); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
	}
	t.Run("h2grpc", func(t *testing.T) {
		f := start(t, Options{MaxConcurrentStreams: 2})
		run(t, f.addr)
		f.waitIdle(t)
	})
	t.Run("grpc-go", func(t *testing.T) {
		s := grpc.NewServer(grpc.MaxConcurrentStreams(2))
		pb.RegisterKVServer(s, &testKV{})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		go s.Serve(ln)
		t.Cleanup(s.Stop)
		run(t, ln.Addr().String())
	})
}

// TestRSTStatus: a server's RST_STREAM maps to grpc-go's codes, and a
// CANCEL after the call's deadline (the server ending it at the timeout
// it was sent, perhaps before the client's own timer fired) is
// DeadlineExceeded.
func TestRSTStatus(t *testing.T) {
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	future, cancel2 := context.WithTimeout(context.Background(), time.Hour)
	defer cancel2()
	for _, c := range []struct {
		code http2.ErrCode
		ctx  context.Context
		want codes.Code
	}{
		{http2.ErrCodeCancel, context.Background(), codes.Canceled},
		{http2.ErrCodeCancel, future, codes.Canceled},
		{http2.ErrCodeCancel, past, codes.DeadlineExceeded},
		{http2.ErrCodeRefusedStream, past, codes.Unavailable},
		{http2.ErrCodeEnhanceYourCalm, context.Background(), codes.ResourceExhausted},
		{http2.ErrCodeInternal, context.Background(), codes.Internal},
	} {
		require.Equal(t, c.want, rstStatus(c.code, c.ctx).Code(), "%v", c.code)
	}
}
