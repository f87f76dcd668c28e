package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Clients that abuse a running member, each against the limit that holds
// it, while a well-behaved client on a connection of its own goes on
// being served: its calls answered, within their usual deadlines.

// servedMeanwhile runs a well-behaved client beside abuse() until it
// returns, and checks that each of its calls (a put, then a get of it)
// was answered within 10 s, as etcd's clients' default deadlines expect.
func servedMeanwhile(t *testing.T, url string, abuse func()) {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer c.Close()
	done := make(chan struct{})
	errc := make(chan error, 1)
	calls := 0
	go func() {
		defer close(errc)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			key := fmt.Sprintf("well-behaved/%d", i%10)
			_, err := c.Put(ctx, key, fmt.Sprint(i))
			if err == nil {
				var get *clientv3.GetResponse
				get, err = c.Get(ctx, key)
				if err == nil && (len(get.Kvs) != 1 || string(get.Kvs[0].Value) != fmt.Sprint(i)) {
					err = fmt.Errorf("get %s: %v", key, get.Kvs)
				}
			}
			cancel()
			if err != nil {
				errc <- err
				return
			}
			calls++
			time.Sleep(10 * time.Millisecond)
		}
	}()
	abuse()
	close(done)
	require.NoError(t, <-errc, "the well-behaved client")
	require.Positive(t, calls, "the well-behaved client made no call")
	t.Logf("the well-behaved client made %d put+get pairs meanwhile", calls)
}

// heapAfterGC is the member process's live heap.
func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// h2Client is an HTTP/2 connection driven frame by frame, for clients
// that break the rules a library would keep.
type h2Client struct {
	t   *testing.T
	nc  net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dialH2(t *testing.T, url string) *h2Client {
	t.Helper()
	nc, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	c := &h2Client{t: t, nc: nc}
	c.fr = http2.NewFramer(nc, nc)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.hb)
	_, err = io.WriteString(nc, http2.ClientPreface)
	require.NoError(t, err)
	require.NoError(t, c.fr.WriteSettings())
	return c
}

// call opens stream id for a gRPC method and sends msg (ending the stream
// if end).
func (c *h2Client) call(id uint32, method string, msg proto.Message, end bool) error {
	c.hb.Reset()
	for _, hf := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", "x"},
		{"content-type", "application/grpc"}, {"te", "trailers"}} {
		c.enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hb.Bytes(), EndHeaders: true}); err != nil {
		return err
	}
	b, _ := proto.Marshal(msg)
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(b)))
	return c.fr.WriteData(id, end, append(frame, b...))
}

// TestAbuseStreamsPastLimit (limit: --max-concurrent-streams, here 8): a
// client that ignores the SETTINGS and opens 100 watch streams on one
// connection has the ones past 8 refused with RST_STREAM(REFUSED_STREAM).
func TestAbuseStreamsPastLimit(t *testing.T) {
	s, _, _ := startMemberWith(t, filepath.Join(t.TempDir(), "data"), func(cfg *Config) { cfg.MaxConcurrentStreams = 8 })
	url := s.ClientURLs()[0]
	servedMeanwhile(t, url, func() {
		c := dialH2(t, url)
		_ = c.nc.SetDeadline(time.Now().Add(30 * time.Second))
		for i := range uint32(100) {
			require.NoError(t, c.call(2*i+1, "/etcdserverpb.Watch/Watch", &pb.WatchRequest{}, false))
		}
		refused := 0
		for refused < 92 {
			f, err := c.fr.ReadFrame()
			require.NoError(t, err)
			if rst, ok := f.(*http2.RSTStreamFrame); ok {
				require.Equal(t, http2.ErrCodeRefusedStream, rst.ErrCode)
				require.Greater(t, rst.StreamID, uint32(15), "one of the first 8 streams refused")
				refused++
			}
		}
	})
}

// TestAbuseNonReadingCaller (limit: 16 MiB of answers held unsent for a
// connection, then its new streams are refused): a client that asks for
// 1 MB ranges and reads nothing, 200 times over, leaves the member's heap
// far below the 200 MB it asked for.
func TestAbuseNonReadingCaller(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	url := s.ClientURLs()[0]
	_, err := c.Put(ctxT(t), "big", string(bytes.Repeat([]byte("x"), 1<<20)))
	require.NoError(t, err)
	before := heapAfterGC()
	servedMeanwhile(t, url, func() {
		h := dialH2(t, url)
		_ = h.nc.SetDeadline(time.Now().Add(time.Minute))
		// One call at a time, each taken before the next is asked (a burst
		// of calls all run at once, each answer held: the stream bound,
		// --max-concurrent-streams, is what holds a burst). Reading frames
		// grants no window (the framer sends no WINDOW_UPDATE), so the
		// answers stay held: a stream's headers (not flow-controlled) or
		// its refusal says the member took the call.
		answered, refused := 0, 0
		for i := range uint32(200) {
			id := 2*i + 1
			require.NoError(t, h.call(id, "/etcdserverpb.KV/Range", &pb.RangeRequest{Key: []byte("big"), Serializable: true}, true))
			for taken := false; !taken; {
				f, err := h.fr.ReadFrame()
				require.NoError(t, err)
				switch f := f.(type) {
				case *http2.MetaHeadersFrame:
					if f.StreamID == id {
						answered, taken = answered+1, true
					}
				case *http2.RSTStreamFrame:
					require.Equal(t, http2.ErrCodeRefusedStream, f.ErrCode)
					if f.StreamID == id {
						refused, taken = refused+1, true
					}
				}
			}
		}
		t.Logf("%d calls answered (held unsent), %d refused", answered, refused)
		require.Positive(t, refused)
	})
	grown := int64(heapAfterGC()) - int64(before)
	t.Logf("the member's heap grew %d MiB", grown>>20)
	require.Less(t, grown, int64(64<<20))
}

// TestAbuseSilentConnection (limit: 10 s for a connection's first bytes):
// a connection that says nothing is closed.
func TestAbuseSilentConnection(t *testing.T) {
	s, _, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	url := s.ClientURLs()[0]
	servedMeanwhile(t, url, func() {
		var conns []net.Conn
		for range 50 {
			nc, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			require.NoError(t, err)
			defer nc.Close()
			conns = append(conns, nc)
		}
		for _, nc := range conns {
			_ = nc.SetReadDeadline(time.Now().Add(time.Minute))
			_, err := io.ReadAll(nc)
			require.NoError(t, err, "closed by the member (EOF), not by our deadline")
		}
	})
}

// TestAbuseHeaderFlood (limit: a header block of 16 MiB): a client that
// sends CONTINUATION frames without end is sent GOAWAY(ENHANCE_YOUR_CALM)
// and disconnected.
func TestAbuseHeaderFlood(t *testing.T) {
	s, _, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	url := s.ClientURLs()[0]
	servedMeanwhile(t, url, func() {
		c := dialH2(t, url)
		_ = c.nc.SetDeadline(time.Now().Add(time.Minute))
		var frag bytes.Buffer
		hpack.NewEncoder(&frag).WriteField(hpack.HeaderField{Name: "x-filler", Value: strings.Repeat("x", 16000), Sensitive: true})
		go func() {
			c.hb.Reset()
			c.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
			if c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: c.hb.Bytes()}) != nil {
				return
			}
			for range 2 * (16 << 20) / frag.Len() {
				if c.fr.WriteContinuation(1, false, frag.Bytes()) != nil {
					return
				}
			}
		}()
		for {
			f, err := c.fr.ReadFrame()
			require.NoError(t, err)
			if g, ok := f.(*http2.GoAwayFrame); ok {
				require.Equal(t, http2.ErrCodeEnhanceYourCalm, g.ErrCode)
				return
			}
		}
	})
}

// TestAbuseOversizeRequests (limits: --max-request-bytes, 1.5 MiB, past
// which a request is refused with etcd's "request is too large"; and the
// gRPC message bound, 2 MiB, past which the message is refused unread):
// four clients sending oversize puts leave the member serving.
func TestAbuseOversizeRequests(t *testing.T) {
	s, _, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	url := s.ClientURLs()[0]
	servedMeanwhile(t, url, func() {
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				kv := pb.NewKVClient(rawConn(t, url))
				for i := range 25 {
					size := 1600 << 10
					if (w+i)%2 == 1 {
						size = 3 << 20
					}
					_, err := kv.Put(context.Background(), &pb.PutRequest{Key: []byte("big"), Value: make([]byte, size)})
					if size < 2<<20 {
						assertStatus(t, err, rpctypes.ErrGRPCRequestTooLarge)
					} else {
						assertCode(t, err, codes.ResourceExhausted)
					}
				}
			}()
		}
		wg.Wait()
	})
}

func assertStatus(t *testing.T, err, want error) {
	if !sameStatus(err, want) {
		t.Errorf("got %v, want %v", err, want)
	}
}

func assertCode(t *testing.T, err error, want codes.Code) {
	if status.Code(err) != want {
		t.Errorf("got %v, want code %v", err, want)
	}
}

// TestAbuseGatewayBody (limit: a JSON body or websocket message of 4
// times the gRPC message bound, 8 MiB): a 100 MB body to the gateway is
// refused with the gRPC server's own words (429, ResourceExhausted) before
// it is read, so the member allocates little for it, with its length
// given or not; a websocket message past the bound closes the session
// (1009).
func TestAbuseGatewayBody(t *testing.T) {
	s, _, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	url := s.ClientURLs()[0]
	body := func() io.Reader {
		return io.MultiReader(strings.NewReader(`{"key":"`+base64.StdEncoding.EncodeToString([]byte("k"))+`","value":"`),
			io.LimitReader(repeatByte('A'), 100<<20), strings.NewReader(`"}`))
	}
	servedMeanwhile(t, url, func() {
		for _, sized := range []bool{true, false} {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			allocated := ms.TotalAlloc
			req, err := http.NewRequest("POST", url+"/v3/kv/put", body())
			require.NoError(t, err)
			if sized {
				req.ContentLength = 100<<20 + 20
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			var e struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&e))
			resp.Body.Close()
			require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
			require.Equal(t, int(codes.ResourceExhausted), e.Code)
			require.True(t, strings.HasPrefix(e.Message, "grpc: received message larger than max ("), e.Message)
			runtime.ReadMemStats(&ms)
			t.Logf("length given %v: %d MiB allocated meanwhile (member and client)", sized, (ms.TotalAlloc-allocated)>>20)
			require.Less(t, ms.TotalAlloc-allocated, uint64(64<<20))
		}

		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/v3/watch", nil)
		require.NoError(t, err)
		defer ws.Close()
		// The member closes the session as the message's length shows
		// (1009), which may cut the write short.
		werr := ws.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("A"), 9<<20))
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _, rerr := ws.ReadMessage()
		require.True(t, werr != nil || websocket.IsCloseError(rerr, websocket.CloseMessageTooBig), "write: %v, read: %v", werr, rerr)
	})
}

type repeatByte byte

func (r repeatByte) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// TestAbuseKeepAliveFlood (limit: each stream's 1 MiB of queued answers,
// past which the member reads no more from it): a client that sends
// keep-alives as fast as it can and reads none leaves the heap bounded.
func TestAbuseKeepAliveFlood(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	url := s.ClientURLs()[0]
	l, err := c.Grant(ctxT(t), 60)
	require.NoError(t, err)
	before := heapAfterGC()
	servedMeanwhile(t, url, func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		stream, err := pb.NewLeaseClient(rawConn(t, url)).LeaseKeepAlive(ctx)
		require.NoError(t, err)
		sent := 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			// Send blocks once the member stops reading the stream.
			for ; sent < 1_000_000; sent++ {
				if stream.Send(&pb.LeaseKeepAliveRequest{ID: int64(l.ID)}) != nil {
					return
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			cancel()
			<-done
		}
		t.Logf("%d keep-alives sent, none read", sent)
	})
	grown := int64(heapAfterGC()) - int64(before)
	t.Logf("the member's heap grew %d MiB", grown>>20)
	require.Less(t, grown, int64(64<<20))
	ttl, err := c.TimeToLive(ctxT(t), l.ID)
	require.NoError(t, err)
	require.Positive(t, ttl.TTL, "the lease is alive")
}

// TestAbuseNonReadingWatcher (limits: a watch stream holds 128 responses
// for its reader, then its watchers are set aside as slow and caught up
// from history when it reads again; its connection queues 1 MiB): 4,000
// puts of 4 KiB go by twice, first with a watcher that reads, then with
// one that never reads as well; the heap grows no more the second time
// than the first (plus 16 MiB), and the reading watcher sees every event.
func TestAbuseNonReadingWatcher(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	url := s.ClientURLs()[0]
	phase := func(round int, withSlow bool) int64 {
		before := heapAfterGC()
		servedMeanwhile(t, url, func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if withSlow {
				// A fixed 64 KiB window: the client library holds no more
				// for it.
				cc, err := grpc.NewClient(strings.TrimPrefix(url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()),
					grpc.WithInitialWindowSize(1<<16), grpc.WithInitialConnWindowSize(1<<16))
				require.NoError(t, err)
				defer cc.Close()
				slow, err := pb.NewWatchClient(cc).Watch(ctx)
				require.NoError(t, err)
				require.NoError(t, slow.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
					Key: []byte("w/"), RangeEnd: []byte("w0")}}}))
				_, err = slow.Recv() // created; nothing read after
				require.NoError(t, err)
			}
			good := c.Watch(ctx, "w/", clientv3.WithPrefix())
			value := strings.Repeat("v", 4096)
			const puts = 4000
			for i := range puts {
				_, err := c.Put(ctx, fmt.Sprintf("w/%d/%d", round, i%100), value)
				require.NoError(t, err)
			}
			seen := 0
			for seen < puts {
				select {
				case r := <-good:
					require.NoError(t, r.Err())
					seen += len(r.Events)
				case <-time.After(30 * time.Second):
					t.Fatalf("the reading watcher saw %d of %d events", seen, puts)
				}
			}
		})
		return int64(heapAfterGC()) - int64(before)
	}
	reading := phase(0, false)
	both := phase(1, true)
	t.Logf("the member's heap grew %d MiB with a reading watcher, %d MiB with a non-reading one as well (16 MiB of events each time)", reading>>20, both>>20)
	require.Less(t, both, reading+16<<20)
}

// TestAbuseManyWatchers (10,000 watchers on one connection, one stream):
// every one is created and sees the put of its key; the member serves
// others meanwhile.
func TestAbuseManyWatchers(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	url := s.ClientURLs()[0]
	servedMeanwhile(t, url, func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		const n = 10000
		chans := make([]clientv3.WatchChan, n)
		for i := range n {
			chans[i] = c.Watch(ctx, fmt.Sprintf("many/%d", i%100), clientv3.WithCreatedNotify())
		}
		for i, ch := range chans {
			select {
			case r := <-ch:
				require.True(t, r.Created, "watcher %d: %+v", i, r)
			case <-time.After(30 * time.Second):
				t.Fatalf("watcher %d not created", i)
			}
		}
		for k := range 100 {
			_, err := c.Put(ctx, fmt.Sprintf("many/%d", k), "v")
			require.NoError(t, err)
		}
		for i, ch := range chans {
			select {
			case r := <-ch:
				require.Len(t, r.Events, 1, "watcher %d", i)
				require.Equal(t, fmt.Sprintf("many/%d", i%100), string(r.Events[0].Kv.Key))
			case <-time.After(30 * time.Second):
				t.Fatalf("watcher %d saw no event", i)
			}
		}
	})
}
