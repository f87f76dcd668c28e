package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/cairn-kv/cairn/raft"
)

// Handler is what the transport delivers to: the member.
type Handler interface {
	// Process steps messages received from a peer, in the order sent.
	Process(msgs []raft.Message)
	// ReportUnreachable says messages to id were dropped because its
	// connection failed (what Send could not queue, Send returns).
	ReportUnreachable(id uint64)
	// IsRemoved says whether id was a member of the cluster, removed since:
	// its connections are refused with a status that tells it so.
	IsRemoved(id uint64) bool
	// Removed says that a peer refused this member as removed from the
	// cluster.
	Removed()
	// MemberList is what a member about to join is sent when it asks for
	// the cluster's members (FetchMembers).
	MemberList() []byte
}

// Config configures a transport.
type Config struct {
	// ID and ClusterID are this member's; every connection carries both.
	ID, ClusterID uint64
	Handler       Handler
	// TLS, if set, is used to dial https:// peer URLs (the client side of
	// --peer-cert-file and the rest); the listener's TLS is its own.
	TLS    *tls.Config
	Logger *slog.Logger
	// Faults, if set, drops or delays messages between chosen members
	// (tests).
	Faults *Faults
	// WriteTimeout bounds the write of one frame (--raft-write-timeout);
	// ReadTimeout the wait for an answer or a snapshot's next chunk
	// (--raft-read-timeout). 0, or less than etcd's least (5 s), is 5 s.
	WriteTimeout, ReadTimeout time.Duration
	// Resolver resolves the host names of peer URLs (nil: Go's default).
	Resolver *net.Resolver
	// Observer, if set, is told of the traffic, for etcd's peer metrics.
	Observer Observer
}

// Observer is told of a transport's traffic with its peers (from the
// streams' goroutines; it must not block).
type Observer interface {
	// Sent and SendFailed: a frame of messages written to a peer, or not.
	Sent(to uint64, bytes int)
	SendFailed(to uint64)
	// Received and ReceiveFailed: a frame read from a peer, or one that
	// could not be decoded.
	Received(from uint64, bytes int)
	ReceiveFailed(from uint64)
	// Active: the message stream to a peer connected, or was lost.
	Active(peer uint64, up bool)
}

type noObserver struct{}

func (noObserver) Sent(uint64, int)     {}
func (noObserver) SendFailed(uint64)    {}
func (noObserver) Received(uint64, int) {}
func (noObserver) ReceiveFailed(uint64) {}
func (noObserver) Active(uint64, bool)  {}

// MinTimeout is the least read and write timeout (etcd's).
const MinTimeout = 5 * time.Second

func (t *Transport) writeTimeout() time.Duration { return max(t.cfg.WriteTimeout, MinTimeout) }
func (t *Transport) readTimeout() time.Duration  { return max(t.cfg.ReadTimeout, MinTimeout) }

// Queue bounds and timings. A slow or dead peer never blocks the raft
// loop: Send drops what its stream cannot queue and reports the peer
// unreachable.
const (
	queueSize   = 1024        // messages queued per stream
	maxBatch    = 4 << 20     // bytes of messages in one frame, at most (one larger message goes alone)
	dialTimeout = time.Second // to connect and be answered
	backoffMin  = 20 * time.Millisecond
	backoffMax  = time.Second
)

// Transport carries raft messages between members: for each peer a
// stream of appends and a stream of everything else, each a long-lived
// connection this member dials, with a bounded queue; and a listener for
// the peers' streams to this member.
//
// Lock order: mu, then a stream's mu.
type Transport struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // ended by Stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	peers   map[uint64]*peer
	inbound map[net.Conn]uint64 // accepted connections (by the peer they said hello from), closed at Stop
	lns     []net.Listener
	stopped bool
}

// New returns a transport with no peers.
func New(cfg Config) *Transport {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Observer == nil {
		cfg.Observer = noObserver{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Transport{cfg: cfg, log: log, ctx: ctx, cancel: cancel,
		peers: map[uint64]*peer{}, inbound: map[net.Conn]uint64{}}
}

// peer is a remote member: its URLs and this member's two streams to it.
type peer struct {
	id       uint64
	messages *stream
	appends  *stream
	requests requestConns
}

// ParsePeerURL parses a peer URL: http or https, with a host.
func ParsePeerURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("transport: bad peer URL %q", s)
	}
	return u, nil
}

// AddPeer starts streams to member id at urls (its advertised peer URLs);
// a peer added again gets the new URLs.
func (t *Transport) AddPeer(id uint64, urls []string) error {
	var parsed []*url.URL
	for _, u := range urls {
		pu, err := ParsePeerURL(u)
		if err != nil {
			return fmt.Errorf("peer %x: %w", id, err)
		}
		parsed = append(parsed, pu)
	}
	if len(parsed) == 0 {
		return fmt.Errorf("peer %x: no URL", id)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return errors.New("transport: stopped")
	}
	if p, ok := t.peers[id]; ok {
		p.messages.setURLs(parsed)
		p.appends.setURLs(parsed)
		return nil
	}
	p := &peer{id: id}
	p.messages = t.newStream(id, streamMessages, parsed)
	p.appends = t.newStream(id, streamAppends, parsed)
	t.peers[id] = p
	return nil
}

// PeerIDs returns the peers' ids.
func (t *Transport) PeerIDs() []uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := make([]uint64, 0, len(t.peers))
	for id := range t.peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// ActiveSince is when this member's message stream to id last connected
// (zero while it is not connected, or id is not a peer).
func (t *Transport) ActiveSince(id uint64) time.Time {
	t.mu.Lock()
	p := t.peers[id]
	t.mu.Unlock()
	if p == nil {
		return time.Time{}
	}
	if ns := p.messages.activeSince.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// RemovePeer stops the streams to id (messages still queued are dropped)
// and closes its connections to this member: dialing again, it is refused.
func (t *Transport) RemovePeer(id uint64) {
	t.mu.Lock()
	p := t.peers[id]
	delete(t.peers, id)
	for c, from := range t.inbound {
		if from == id {
			c.Close()
		}
	}
	t.mu.Unlock()
	if p != nil {
		p.messages.stop()
		p.appends.stop()
		p.closeRequestConns()
	}
}

// Send queues messages for their peers without blocking: appends on the
// peer's append stream, the rest on its message stream (but MsgSnap, which
// goes with its data through SendSnapshot). A message to a
// member this transport does not know is dropped; one its stream cannot
// queue is dropped too, and Send returns that peer's id (each once) for
// the caller to report to raft: Send is called with the raft core held,
// so it does not call the Handler itself.
func (t *Transport) Send(msgs []raft.Message) (unreachable []uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range msgs {
		m := &msgs[i]
		p := t.peers[m.To]
		if p == nil {
			continue
		}
		if f := t.cfg.Faults; f != nil && f.cut(m.From, m.To) {
			continue
		}
		if m.Type == raft.MsgSnap {
			continue // never without its data: SendSnapshot sends it
		}
		s := p.messages
		if m.Type == raft.MsgApp {
			s = p.appends
		}
		if !s.enqueue(*m) && !slices.Contains(unreachable, m.To) {
			unreachable = append(unreachable, m.To)
		}
	}
	return unreachable
}

// Serve accepts peers' streams on ln until Stop (a TLS listener for
// https:// peer URLs).
func (t *Transport) Serve(ln net.Listener) error {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		ln.Close()
		return errors.New("transport: stopped")
	}
	t.lns = append(t.lns, ln)
	t.wg.Add(1)
	t.mu.Unlock()
	defer t.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if t.ctx.Err() != nil {
				return nil
			}
			return err
		}
		t.mu.Lock()
		if t.stopped {
			t.mu.Unlock()
			conn.Close()
			return nil
		}
		t.inbound[conn] = 0
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			t.receive(conn)
			t.mu.Lock()
			delete(t.inbound, conn)
			t.mu.Unlock()
		}()
	}
}

// receive answers a peer's hello and steps the batches it sends.
func (t *Transport) receive(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	if tc, ok := conn.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			t.log.Warn("refused a peer connection: TLS handshake", "remote", conn.RemoteAddr().String(), "err", err)
			return
		}
	}
	r := bufio.NewReaderSize(conn, 64<<10)
	h, err := readHello(r)
	if err != nil {
		if errors.Is(err, errBadHello) {
			_, _ = conn.Write(answer{status: statusBadHello, cluster: t.cfg.ClusterID, id: t.cfg.ID}.encode())
			t.log.Warn("refused a peer connection: not a cairn peer of this version", "remote", conn.RemoteAddr().String())
		}
		return
	}
	if h.kind == streamMembers {
		t.answerMembers(conn) // asked by a member about to join: no ids to check
		return
	}
	status := byte(statusOK)
	t.mu.Lock()
	_, known := t.peers[h.from]
	t.mu.Unlock()
	switch {
	case h.cluster != t.cfg.ClusterID:
		status = statusOtherCluster
		t.log.Error("refused a peer of another cluster", "remote", conn.RemoteAddr().String(),
			"remote-cluster-id", fmt.Sprintf("%x", h.cluster), "local-cluster-id", fmt.Sprintf("%x", t.cfg.ClusterID),
			"remote-member-id", fmt.Sprintf("%x", h.from))
	case h.to != t.cfg.ID:
		status = statusNotMe
		t.log.Warn("refused a peer connection meant for another member", "remote", conn.RemoteAddr().String(),
			"remote-member-id", fmt.Sprintf("%x", h.from), "wanted-member-id", fmt.Sprintf("%x", h.to), "local-member-id", fmt.Sprintf("%x", t.cfg.ID))
	case !known && t.cfg.Handler.IsRemoved(h.from):
		status = statusRemoved
		t.log.Warn("refused a peer connection from a member removed from the cluster", "remote", conn.RemoteAddr().String(),
			"remote-member-id", fmt.Sprintf("%x", h.from))
	case !known:
		status = statusUnknown
		t.log.Warn("refused a peer connection from a member not in the cluster", "remote", conn.RemoteAddr().String(),
			"remote-member-id", fmt.Sprintf("%x", h.from))
	}
	if _, err := conn.Write(answer{status: status, cluster: t.cfg.ClusterID, id: t.cfg.ID}.encode()); err != nil || status != statusOK {
		return
	}
	t.mu.Lock()
	if _, ok := t.peers[h.from]; !ok {
		t.mu.Unlock()
		return // removed meanwhile
	}
	t.inbound[conn] = h.from
	t.mu.Unlock()
	_ = conn.SetDeadline(time.Time{})
	switch h.kind {
	case streamRequests:
		t.answerRequests(h.from, r, conn)
		return
	case streamSnapshot:
		t.receiveSnapshot(h.from, r, conn)
		return
	}
	var buf []byte
	for {
		buf, err = readFrame(r, buf)
		if err != nil {
			return
		}
		t.cfg.Observer.Received(h.from, 4+len(buf))
		msgs, err := decodeBatch(buf)
		if err != nil {
			t.cfg.Observer.ReceiveFailed(h.from)
			t.log.Warn("closing a peer stream: bad batch", "remote-member-id", fmt.Sprintf("%x", h.from), "stream", h.kind.String(), "err", err)
			return
		}
		kept := msgs[:0]
		for _, m := range msgs {
			if m.From == h.from && m.To == t.cfg.ID {
				kept = append(kept, m)
			}
		}
		if len(kept) > 0 {
			t.cfg.Handler.Process(kept)
		}
	}
}

// Stop closes every connection and listener and waits for the
// transport's goroutines.
func (t *Transport) Stop() {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	t.stopped = true
	t.cancel()
	for _, ln := range t.lns {
		ln.Close()
	}
	for c := range t.inbound {
		c.Close()
	}
	peers := t.peers
	t.peers = map[uint64]*peer{}
	t.mu.Unlock()
	for _, p := range peers {
		p.messages.stop()
		p.appends.stop()
		p.closeRequestConns()
	}
	t.wg.Wait()
}
