package h2grpc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"github.com/stretchr/testify/require"
)

// Clients that break the rules, each against the limit that holds it,
// while a well-behaved client on another connection is served.

// served checks that a well-behaved client is answered meanwhile.
func (f *fixture) served(t *testing.T) {
	t.Helper()
	resp, err := pb.NewKVClient(f.dial(t)).Put(ctxT(t), &pb.PutRequest{Key: []byte("k"), Value: []byte("four")})
	require.NoError(t, err)
	require.Equal(t, int64(4), resp.Header.Revision)
}

// conns returns the server's connections.
func (f *fixture) conns() []*conn {
	f.s.mu.Lock()
	defer f.s.mu.Unlock()
	var cs []*conn
	for c := range f.s.conns {
		cs = append(cs, c)
	}
	return cs
}

// grpcHeaders are a call's request headers.
func grpcHeaders(path string) []string {
	return []string{":method", "POST", ":scheme", "http", ":path", path, ":authority", "x", "content-type", "application/grpc", "te", "trailers"}
}

// TestHeaderFlood (limit: a header block of maxHeaderList, 16 MiB, as
// grpc-go's header list): a client that sends HEADERS and then
// CONTINUATION frames without end is disconnected with
// GOAWAY(ENHANCE_YOUR_CALM) once the block passes the limit, rather than
// read forever.
func TestHeaderFlood(t *testing.T) {
	f := start(t, Options{})
	r, _ := openRaw(t, f.addr)
	_ = r.nc.SetDeadline(time.Now().Add(time.Minute))
	var frag bytes.Buffer
	hpack.NewEncoder(&frag).WriteField(hpack.HeaderField{Name: "filler", Value: strings.Repeat("x", 16000), Sensitive: true})
	go func() {
		h := grpcHeaders("/etcdserverpb.KV/Put")
		var first bytes.Buffer
		enc := hpack.NewEncoder(&first)
		for i := 0; i < len(h); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: h[i], Value: h[i+1]})
		}
		if r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first.Bytes(), EndStream: true}) != nil {
			return
		}
		for range 2 * maxHeaderList / frag.Len() {
			if r.fr.WriteContinuation(1, false, frag.Bytes()) != nil {
				return
			}
		}
	}()
	g := r.until("GOAWAY", func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }).(*http2.GoAwayFrame)
	require.Equal(t, http2.ErrCodeEnhanceYourCalm, g.ErrCode)
	require.Equal(t, "header block too large", string(g.DebugData()))
	f.served(t)
	r.nc.Close()
	f.waitIdle(t)
}

// TestNonReadingPinger (limit: ctrlBacklog, 64 KiB of control frames held
// for a client): a client that pings and never reads its acks stops being
// read once the acks back up, so its own writes block, and the server
// holds no more for it than the limit.
func TestNonReadingPinger(t *testing.T) {
	f := start(t, Options{})
	r, _ := openRaw(t, f.addr)
	var pings []byte
	for i := range 4096 {
		pings = appendPing(pings, [8]byte{byte(i)})
	}
	written := 0
	const most = 512 << 20
	for written < most {
		_ = r.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
		n, err := r.nc.Write(pings)
		written += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		require.NoError(t, err)
	}
	require.Less(t, written, most, "the server went on reading a client that reads nothing")
	t.Logf("the client wrote %d MiB before its writes blocked", written>>20)
	for _, c := range f.conns() {
		c.wmu.Lock()
		held := len(c.ctrl)
		c.wmu.Unlock()
		require.LessOrEqual(t, held, ctrlBacklog+17)
	}
	f.served(t)
	r.nc.Close()
	f.waitIdle(t)
}

// TestNonReadingCaller (limit: outBacklog, 16 MiB of answers held unsent
// for a connection): a client that makes calls with large answers, grants
// no window and reads nothing has its streams refused once the answers it
// holds pass the limit; the server's memory for it stays there, and a
// well-behaved client is served.
func TestNonReadingCaller(t *testing.T) {
	f := start(t, Options{})
	r, _ := openRaw(t, f.addr)
	msg, _ := proto.Marshal(&pb.RangeRequest{Key: []byte("k"), Limit: 1000}) // about 1 MB answered
	server := func() *conn {
		for _, c := range f.conns() {
			return c
		}
		t.Fatal("no connection")
		return nil
	}()
	answered := func(id uint32) (open int, queued int) {
		server.wmu.Lock()
		defer server.wmu.Unlock()
		server.mu.Lock()
		defer server.mu.Unlock()
		if server.maxStream < id {
			return -1, 0 // not read yet
		}
		for _, st := range server.streams {
			if !st.finished {
				return -1, 0
			}
		}
		return len(server.streams), server.outQueued
	}
	opened := 0
	for i := range uint32(64) {
		id := 2*i + 1
		r.headers(id, false, grpcHeaders("/etcdserverpb.KV/Range")...)
		require.NoError(t, r.fr.WriteData(id, true, append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)))
		// Each call answered before the next (so each is refused or
		// answered knowing what the others hold).
		var open int
		require.Eventually(t, func() bool { open, _ = answered(id); return open >= 0 }, 10*time.Second, time.Millisecond)
		if open == opened+1 {
			opened++
		}
	}
	_, queued := answered(0)
	require.Less(t, opened, 64, "no stream was refused")
	require.LessOrEqual(t, queued, outBacklog+(1<<20), "held unsent")
	t.Logf("%d calls taken, %d MiB held, the rest refused", opened, queued>>20)
	require.NoError(t, f.s.check(false))
	f.served(t)
	r.nc.Close()
	f.waitIdle(t)
}

// TestSilentConnection (limit: prefaceTimeout, 10 s): a connection that
// says nothing is closed once the preface has not come in time.
func TestSilentConnection(t *testing.T) {
	t.Parallel()
	f := start(t, Options{})
	nc, err := net.Dial("tcp", f.addr)
	require.NoError(t, err)
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(time.Minute))
	_, err = io.ReadAll(nc)
	require.NoError(t, err, "closed by the server (EOF), not by the deadline")
	f.served(t)
	f.waitIdle(t)
}
