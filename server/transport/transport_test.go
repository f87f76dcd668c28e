package transport

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testlog"
	"github.com/cairn-kv/cairn/raft"
)

// recorder is a Handler that keeps what it is given; block, if set, holds
// Process for messages of that type until released.
type recorder struct {
	mu          sync.Mutex
	msgs        []raft.Message
	unreachable map[uint64]int
	block       raft.MessageType
	release     chan struct{}
	// removedIDs are the members IsRemoved names; removedCalls counts
	// Removed.
	removedIDs   map[uint64]bool
	removedCalls int
	list         []byte // MemberList's answer
}

func (r *recorder) Process(msgs []raft.Message) {
	if r.block != 0 && msgs[0].Type == r.block {
		<-r.release
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msgs...)
}

func (r *recorder) ReportUnreachable(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.unreachable == nil {
		r.unreachable = map[uint64]int{}
	}
	r.unreachable[id]++
}

func (r *recorder) IsRemoved(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removedIDs[id]
}

func (r *recorder) Removed() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removedCalls++
}

func (r *recorder) MemberList() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.list
}

func (r *recorder) removed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removedCalls
}

func (r *recorder) received() []raft.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]raft.Message(nil), r.msgs...)
}

// node is one transport serving on 127.0.0.1, with its handler and log.
type node struct {
	id  uint64
	url string
	t   *Transport
	h   *recorder
	log *testlog.Buffer
}

func startNode(t *testing.T, id, cluster uint64, faults *Faults) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	n := &node{id: id, url: "http://" + ln.Addr().String(), h: &recorder{}, log: &testlog.Buffer{}}
	n.t = New(Config{ID: id, ClusterID: cluster, Handler: n.h, Faults: faults,
		Logger: slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	go n.t.Serve(ln)
	t.Cleanup(n.t.Stop)
	return n
}

// connect makes every node a peer of every other.
func connect(t *testing.T, nodes ...*node) {
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b {
				require.NoError(t, a.t.AddPeer(b.id, []string{b.url}))
			}
		}
	}
}

// warmUpMark marks the messages warmUp sends (their Commit).
const warmUpMark = 1 << 62

// warmUp sends marked appends and heartbeats between every pair of nodes,
// again every 50 ms, until each node has had one on every stream: every
// stream is then connected. (What a stream queues before its first
// connection is dropped if that dial fails, as on a loaded machine it
// may.) Later marked arrivals are for the test to pass over (delivered).
func warmUp(t *testing.T, nodes ...*node) {
	t.Helper()
	ok := eventually(func() bool {
		done := true
		for _, b := range nodes {
			if len(delivered(b.h.received(), true)) < 2*(len(nodes)-1) {
				done = false
			}
		}
		if !done {
			for _, a := range nodes {
				for _, b := range nodes {
					if a != b {
						a.t.Send([]raft.Message{{Type: raft.MsgApp, From: a.id, To: b.id, Commit: warmUpMark}, {Type: raft.MsgHeartbeat, From: a.id, To: b.id, Commit: warmUpMark}})
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		return done
	})
	require.True(t, ok, "the streams did not connect")
}

// delivered returns the messages of msgs that warmUp sent (marked), or
// the others.
func delivered(msgs []raft.Message, marked bool) []raft.Message {
	var out []raft.Message
	for _, m := range msgs {
		if (m.Commit == warmUpMark) == marked {
			out = append(out, m)
		}
	}
	return out
}

// eventually polls cond every millisecond for up to 10 s (a bound on the
// loop, not a timing assertion).
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestDeliveryInOrder: three members send each other appends (with
// entries) and heartbeats; every message arrives whole, and each stream's
// messages in the order sent.
func TestDeliveryInOrder(t *testing.T) {
	nodes := []*node{startNode(t, 1, 7, nil), startNode(t, 2, 7, nil), startNode(t, 3, 7, nil)}
	connect(t, nodes...)
	warmUp(t, nodes...)
	const n = 500
	for i := range uint64(n) {
		for _, a := range nodes {
			var msgs []raft.Message
			for _, b := range nodes {
				if a != b {
					msgs = append(msgs,
						raft.Message{Type: raft.MsgApp, From: a.id, To: b.id, Index: i, Entries: []raft.Entry{{Index: i + 1, Data: bytes.Repeat([]byte{byte(i)}, int(i))}}},
						raft.Message{Type: raft.MsgHeartbeat, From: a.id, To: b.id, Commit: i})
				}
			}
			a.t.Send(msgs)
		}
	}
	for _, b := range nodes {
		got := func() []raft.Message { return delivered(b.h.received(), false) }
		require.True(t, eventually(func() bool { return len(got()) == 2*2*n }), "member %d got %d messages", b.id, len(got()))
		next := map[[2]uint64]uint64{}
		for _, m := range got() {
			require.Equal(t, b.id, m.To)
			k := [2]uint64{m.From, uint64(m.Type)}
			switch m.Type {
			case raft.MsgApp:
				require.Equal(t, next[k], m.Index, "append from %d out of order", m.From)
				require.True(t, bytes.Equal(bytes.Repeat([]byte{byte(m.Index)}, int(m.Index)), m.Entries[0].Data), "append %d from %d", m.Index, m.From)
			case raft.MsgHeartbeat:
				require.Equal(t, next[k], m.Commit, "heartbeat from %d out of order", m.From)
			}
			next[k]++
		}
	}
}

// TestAppendsDoNotDelayHeartbeats: while a peer is held up taking an
// append, heartbeats still reach it on their own stream.
func TestAppendsDoNotDelayHeartbeats(t *testing.T) {
	a, b := startNode(t, 1, 7, nil), startNode(t, 2, 7, nil)
	b.h.block, b.h.release = raft.MsgApp, make(chan struct{})
	connect(t, a, b)
	a.t.Send([]raft.Message{{Type: raft.MsgApp, From: 1, To: 2, Entries: []raft.Entry{{Index: 1, Data: make([]byte, 1<<20)}}}})
	a.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2}})
	require.True(t, eventually(func() bool { return len(b.h.received()) == 1 }), "the heartbeat waited behind the append")
	require.Equal(t, raft.MsgHeartbeat, b.h.received()[0].Type)
	close(b.h.release)
	require.True(t, eventually(func() bool { return len(b.h.received()) == 2 }))
}

// TestOtherClusterRefused: a member of another cluster is refused: nothing
// it sends is delivered, and both sides log it with both cluster ids.
func TestOtherClusterRefused(t *testing.T) {
	a, b := startNode(t, 1, 7, nil), startNode(t, 2, 8, nil)
	connect(t, a, b)
	a.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2}})
	require.True(t, eventually(func() bool {
		return strings.Contains(a.log.String(), "a peer belongs to another cluster") &&
			strings.Contains(b.log.String(), "refused a peer of another cluster")
	}), "logs:\n%s\n%s", a.log, b.log)
	require.Contains(t, a.log.String(), "remote-cluster-id=8")
	require.Contains(t, b.log.String(), "remote-cluster-id=7")
	require.Empty(t, b.h.received())
}

// TestDeadPeerNeverBlocks: sending to a peer nobody listens for returns at
// once however much is sent, and never calls back into the handler; what
// cannot be queued Send returns, and what a failed connection drops is
// reported unreachable; a request to it is not sent.
func TestDeadPeerNeverBlocks(t *testing.T) {
	a := startNode(t, 1, 7, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + ln.Addr().String()
	ln.Close()
	require.NoError(t, a.t.AddPeer(2, []string{dead}))
	// Sends happen with the handler's lock held, as a member sends with
	// its raft lock held: Send must not call back into the handler.
	done := make(chan struct{})
	refused := 0
	go func() {
		a.h.mu.Lock()
		for range 10 * queueSize {
			if ids := a.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2}, {Type: raft.MsgApp, From: 1, To: 2}}); len(ids) > 0 {
				refused++
			}
		}
		a.h.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Send blocked on a dead peer")
	}
	require.NotZero(t, refused, "Send never said a message could not be queued")
	require.True(t, eventually(func() bool {
		a.h.mu.Lock()
		defer a.h.mu.Unlock()
		return a.h.unreachable[2] > 0
	}), "the stream never reported the dead peer")
	// A request to it never leaves, and says so.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = a.t.Request(ctx, 2, []byte("x"))
	require.ErrorIs(t, err, ErrNotSent)
}

// TestFaults: a cut link drops what it carries, one way only, until
// healed; a delayed link delivers late but delivers.
func TestFaults(t *testing.T) {
	f := &Faults{}
	a, b := startNode(t, 1, 7, f), startNode(t, 2, 7, f)
	connect(t, a, b)
	f.Cut(1, 2)
	a.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2, Commit: 1}})
	b.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 2, To: 1, Commit: 1}})
	require.True(t, eventually(func() bool { return len(a.h.received()) == 1 }))
	f.Heal()
	f.Delay(1, 2, 50*time.Millisecond)
	a.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2, Commit: 2}})
	require.True(t, eventually(func() bool { return len(b.h.received()) == 1 }))
	require.Equal(t, uint64(2), b.h.received()[0].Commit, "the message sent while the link was cut arrived")
}

// TestUnknownAndMisaddressed: a connection from a member the listener
// does not know, or meant for another member, is refused; messages whose
// sender or recipient differ from the connection's are dropped.
func TestUnknownAndMisaddressed(t *testing.T) {
	a, b := startNode(t, 1, 7, nil), startNode(t, 2, 7, nil)
	require.NoError(t, a.t.AddPeer(2, []string{b.url})) // b does not know a
	a.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 1, To: 2}})
	require.True(t, eventually(func() bool { return strings.Contains(b.log.String(), "not in the cluster") }), b.log.String())
	require.Empty(t, b.h.received())

	c := startNode(t, 3, 7, nil)
	require.NoError(t, c.t.AddPeer(4, []string{b.url})) // b is not 4
	c.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 3, To: 4}})
	require.True(t, eventually(func() bool { return strings.Contains(c.log.String(), "a peer URL serves another member") }), c.log.String())

	// Once b knows a, a's messages get through, but not one claiming to
	// be from another member. (A dial refused just before b learnt of a
	// drops what was queued, as raft allows: send again until one lands,
	// as raft would. The first heartbeat, still queued when b learns of a,
	// may land too: Commit 0.)
	require.NoError(t, b.t.AddPeer(1, []string{a.url}))
	for deadline := time.Now().Add(10 * time.Second); len(b.h.received()) == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		a.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 9, To: 2}, {Type: raft.MsgHeartbeat, From: 1, To: 2, Commit: 5}})
	}
	require.NotEmpty(t, b.h.received())
	for _, m := range b.h.received() {
		require.Equal(t, uint64(1), m.From)
		require.Contains(t, []uint64{0, 5}, m.Commit, "a message a sent")
	}
}

// HandleRequest answers "echo:<req>", or fails a request "fail".
func (r *recorder) HandleRequest(from uint64, req []byte) ([]byte, error) {
	if string(req) == "fail" {
		return nil, fmt.Errorf("failed as asked by %d", from)
	}
	return append([]byte("echo:"), req...), nil
}

// TestRequests: requests from several goroutines each get their own
// answer over the pooled connections; an error comes back as a
// RemoteError with the peer's message; a request to a member the
// transport does not know fails at once.
func TestRequests(t *testing.T) {
	a, b := startNode(t, 1, 7, nil), startNode(t, 2, 7, nil)
	connect(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				req := fmt.Sprintf("g%d-%d", g, i)
				got, err := a.t.Request(ctx, 2, []byte(req))
				if err == nil && string(got) != "echo:"+req {
					err = fmt.Errorf("asked %q, got %q", req, got)
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
	_, err := a.t.Request(ctx, 2, []byte("fail"))
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "failed as asked by 1", re.Msg)
	_, err = a.t.Request(ctx, 9, []byte("x"))
	require.ErrorIs(t, err, ErrNotSent)
	a.t.mu.Lock()
	idle := len(a.t.peers[2].requests.idle)
	a.t.mu.Unlock()
	require.LessOrEqual(t, idle, maxIdleRequestConns)
}

// TestRequestToStoppedPeer: once the peer stops, a request to it is not
// sent (the idle connection it closed is not used), rather than sent and
// its outcome unknown.
func TestRequestToStoppedPeer(t *testing.T) {
	a, b := startNode(t, 1, 7, nil), startNode(t, 2, 7, nil)
	connect(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := a.t.Request(ctx, 2, []byte("x"))
	require.NoError(t, err)
	require.Equal(t, "echo:x", string(got))
	a.t.mu.Lock()
	idle := len(a.t.peers[2].requests.idle)
	a.t.mu.Unlock()
	require.Equal(t, 1, idle, "the request's connection is kept for the next")
	b.t.Stop()
	_, err = a.t.Request(ctx, 2, []byte("y"))
	require.ErrorIs(t, err, ErrNotSent)
}

// TestRemovedMemberRefused: a member removed from the cluster that dials a
// peer is told so (Removed), where an unknown one is only refused; and
// ActiveSince follows the stream's connection.
func TestRemovedMemberRefused(t *testing.T) {
	a, b, c := startNode(t, 1, 7, nil), startNode(t, 2, 7, nil), startNode(t, 3, 7, nil)
	b.h.mu.Lock()
	b.h.removedIDs = map[uint64]bool{1: true}
	b.h.mu.Unlock()
	require.NoError(t, a.t.AddPeer(2, []string{b.url}))
	require.NoError(t, c.t.AddPeer(2, []string{b.url}))
	require.True(t, a.t.ActiveSince(2).IsZero())
	for _, n := range []*node{a, c} {
		n.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: n.id, To: 2}})
	}
	require.True(t, eventually(func() bool { return a.h.removed() > 0 }), "the removed member was not told")
	require.Contains(t, b.log.String(), "removed from the cluster")
	require.True(t, eventually(func() bool { return strings.Contains(c.log.String(), "does not know this member") }))
	require.Zero(t, c.h.removed(), "an unknown member is not a removed one")
	require.True(t, a.t.ActiveSince(2).IsZero())

	// A known peer: the stream connects and stays active.
	require.NoError(t, b.t.AddPeer(3, []string{c.url}))
	require.NoError(t, c.t.AddPeer(2, []string{b.url}))
	require.True(t, eventually(func() bool {
		c.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: 3, To: 2}})
		return !c.t.ActiveSince(2).IsZero()
	}))
}

// TestFetchMembers: a member about to join, knowing neither ids, is sent
// the member list by any member it asks; a URL with nothing behind it is
// an error.
func TestFetchMembers(t *testing.T) {
	n := startNode(t, 2, 7, nil)
	n.h.mu.Lock()
	n.h.list = []byte(`[{"id":2}]`)
	n.h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cluster, list, err := FetchMembers(ctx, n.url, nil)
	require.NoError(t, err)
	require.Equal(t, uint64(7), cluster)
	require.Equal(t, `[{"id":2}]`, string(list))
	_, _, err = FetchMembers(ctx, "http://127.0.0.1:1", nil)
	require.Error(t, err)
	_, _, err = FetchMembers(ctx, "not a url", nil)
	require.Error(t, err)
}

// TestIdleStreamClosedByPeer: when the peer closes a stream's connection
// while nothing is being sent (a network that cut it, a proxy, the peer's
// restart), the stream dials again at once, so the next message arrives.
// A stream that found out only by writing would lose that message to the
// dead connection.
func TestIdleStreamClosedByPeer(t *testing.T) {
	a, b := startNode(t, 1, 7, nil), startNode(t, 2, 7, nil)
	connect(t, a, b)
	warmUp(t, a, b)
	inbound := func() map[net.Conn]bool {
		b.t.mu.Lock()
		defer b.t.mu.Unlock()
		conns := map[net.Conn]bool{}
		for c, from := range b.t.inbound {
			if from == a.id {
				conns[c] = true
			}
		}
		return conns
	}
	old := inbound()
	require.Len(t, old, 2, "an append stream and a message stream")
	// warmUp's first messages may be dropped (and reported) if a first
	// dial fails; count only what follows.
	a.h.mu.Lock()
	before := a.h.unreachable[b.id]
	a.h.mu.Unlock()
	for c := range old {
		require.NoError(t, c.Close())
	}
	require.True(t, eventually(func() bool {
		now := inbound()
		for c := range now {
			if old[c] {
				return false
			}
		}
		return len(now) == 2
	}), "the idle streams did not dial again")
	a.t.Send([]raft.Message{{Type: raft.MsgHeartbeat, From: a.id, To: b.id, Term: 1}, {Type: raft.MsgApp, From: a.id, To: b.id, Term: 1}})
	require.True(t, eventually(func() bool { return len(delivered(b.h.received(), false)) == 2 }),
		"got %v", delivered(b.h.received(), false))
	a.h.mu.Lock()
	defer a.h.mu.Unlock()
	require.Equal(t, before, a.h.unreachable[b.id], "a connection closed while idle loses nothing")
}

// TestTimeoutsAtLeastEtcds: --raft-read-timeout and --raft-write-timeout
// below etcd's least, 5 s, are raised to it; longer ones are kept.
func TestTimeoutsAtLeastEtcds(t *testing.T) {
	for _, tc := range []struct{ set, want time.Duration }{{0, 5 * time.Second}, {time.Millisecond, 5 * time.Second}, {7 * time.Second, 7 * time.Second}} {
		tr := New(Config{ReadTimeout: tc.set, WriteTimeout: tc.set})
		require.Equal(t, tc.want, tr.readTimeout())
		require.Equal(t, tc.want, tr.writeTimeout())
		tr.Stop()
	}
}
