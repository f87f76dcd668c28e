package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-kv/cairn/raft"
)

// errPeerClosed: the peer closed a stream's connection while it was idle.
var errPeerClosed = errors.New("transport: the peer closed the connection")

// stream is this member's connection of one kind to one peer: a bounded
// queue, and a goroutine that dials the peer (again, with backoff, after a
// failure) and writes whatever has queued as one frame. Messages in a
// frame whose write fails are lost, as raft allows; the peer is reported
// unreachable.
type stream struct {
	t    *Transport
	to   uint64
	kind streamKind
	q    chan raft.Message
	ctx  context.Context
	done chan struct{}
	end  context.CancelFunc

	mu   sync.Mutex
	urls []*url.URL
	next int // the URL to dial next

	// activeSince is when the current connection was made (unix
	// nanoseconds; 0: none).
	activeSince atomic.Int64
}

func (t *Transport) newStream(to uint64, kind streamKind, urls []*url.URL) *stream {
	ctx, cancel := context.WithCancel(t.ctx)
	s := &stream{t: t, to: to, kind: kind, q: make(chan raft.Message, queueSize), ctx: ctx, end: cancel,
		done: make(chan struct{}), urls: urls}
	go s.run()
	return s
}

func (s *stream) setURLs(urls []*url.URL) {
	s.mu.Lock()
	s.urls, s.next = urls, 0
	s.mu.Unlock()
}

// enqueue queues m unless the queue is full.
func (s *stream) enqueue(m raft.Message) bool {
	select {
	case s.q <- m:
		return true
	default:
		return false
	}
}

// stop ends the stream and waits for its goroutine.
func (s *stream) stop() {
	s.end()
	<-s.done
}

// run connects and writes until the stream stops.
func (s *stream) run() {
	defer close(s.done)
	backoff := backoffMin
	var frame []byte
	lastErr := ""
	for s.ctx.Err() == nil {
		conn, err := s.dial()
		if err != nil {
			// Each new reason once (a peer down is tried again and again).
			if msg := err.Error(); msg != lastErr && s.ctx.Err() == nil {
				lastErr = msg
				s.t.log.Warn("cannot reach a peer", "peer", fmt.Sprintf("%x", s.to), "stream", s.kind.String(), "err", err)
			}
			s.drain()
			select {
			case <-time.After(backoff):
			case <-s.ctx.Done():
				return
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff, lastErr = backoffMin, ""
		s.activeSince.Store(time.Now().UnixNano())
		// etcd's words for a stream's life, which operators watch for.
		ids := []any{"stream-writer-type", s.kind.String(), "local-member-id", fmt.Sprintf("%x", s.t.cfg.ID), "remote-peer-id", fmt.Sprintf("%x", s.to)}
		s.t.log.Info("established TCP streaming connection with remote peer", ids...)
		if s.kind == streamMessages {
			s.t.cfg.Observer.Active(s.to, true)
		}
		frame, err = s.write(s.watchClose(conn), conn, frame)
		s.activeSince.Store(0)
		if s.kind == streamMessages {
			s.t.cfg.Observer.Active(s.to, false)
		}
		conn.Close()
		switch {
		case err == nil || s.ctx.Err() != nil:
		case errors.Is(err, errPeerClosed):
			// Closed while idle: nothing was lost; dial again.
			s.t.log.Debug("peer closed an idle stream", ids...)
		default:
			s.t.log.Warn("lost TCP streaming connection with remote peer", append(ids, "error", err.Error())...)
			s.t.cfg.Handler.ReportUnreachable(s.to)
		}
	}
}

// drain drops what is queued while the peer cannot be reached, so that
// stale messages do not go out once it can: raft sends again what it
// still needs. It reports the peer unreachable if it dropped anything.
func (s *stream) drain() {
	dropped := false
	for {
		select {
		case <-s.q:
			dropped = true
		default:
			if dropped {
				s.t.cfg.Handler.ReportUnreachable(s.to)
			}
			return
		}
	}
}

// dial connects the stream to the peer.
func (s *stream) dial() (net.Conn, error) {
	return s.dialKind(s.ctx, s.kind)
}

// dialKind connects to the peer's next URL for a connection of kind and
// says hello; a refusal is logged with what the peer said it is.
func (s *stream) dialKind(ctx context.Context, kind streamKind) (net.Conn, error) {
	s.mu.Lock()
	u := s.urls[s.next%len(s.urls)]
	s.next++
	s.mu.Unlock()
	conn, a, err := dialPeer(ctx, u, s.t.cfg.TLS, s.t.cfg.Resolver, hello{kind: kind, cluster: s.t.cfg.ClusterID, from: s.t.cfg.ID, to: s.to})
	if err != nil {
		return nil, err
	}
	if a.status != statusOK {
		conn.Close()
		err := fmt.Errorf("transport: peer %s refused the %s stream (status %d)", u.Host, kind, a.status)
		switch a.status {
		case statusOtherCluster:
			s.t.log.Error("a peer belongs to another cluster", "peer-url", u.String(), "remote-cluster-id", fmt.Sprintf("%x", a.cluster),
				"local-cluster-id", fmt.Sprintf("%x", s.t.cfg.ClusterID), "remote-member-id", fmt.Sprintf("%x", a.id))
		case statusNotMe:
			s.t.log.Error("a peer URL serves another member", "peer-url", u.String(), "remote-member-id", fmt.Sprintf("%x", a.id),
				"wanted-member-id", fmt.Sprintf("%x", s.to))
		case statusUnknown:
			s.t.log.Warn("a peer does not know this member", "peer-url", u.String(), "remote-member-id", fmt.Sprintf("%x", a.id))
		case statusRemoved:
			s.t.log.Error("a peer says this member was removed from the cluster", "peer-url", u.String(), "remote-member-id", fmt.Sprintf("%x", a.id))
			s.t.cfg.Handler.Removed()
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// dialPeer connects to the peer at u, says hello h and reads the answer;
// the connection is left with a deadline dialTimeout away.
func dialPeer(ctx context.Context, u *url.URL, tlsCfg *tls.Config, r *net.Resolver, h hello) (net.Conn, answer, error) {
	d := net.Dialer{Timeout: dialTimeout, Resolver: r}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var conn net.Conn
	var err error
	if u.Scheme == "https" {
		if tlsCfg == nil {
			tlsCfg = &tls.Config{}
		}
		td := tls.Dialer{NetDialer: &d, Config: tlsCfg}
		conn, err = td.DialContext(ctx, "tcp", u.Host)
	} else {
		conn, err = d.DialContext(ctx, "tcp", u.Host)
	}
	if err != nil {
		return nil, answer{}, err
	}
	_ = conn.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := conn.Write(h.encode()); err != nil {
		conn.Close()
		return nil, answer{}, err
	}
	a, err := readAnswer(conn)
	if err != nil {
		conn.Close()
		return nil, answer{}, err
	}
	return conn, a, nil
}

// watchClose returns a channel closed once the peer has closed conn. The
// peer sends nothing on a stream after its answer, so a read returns
// only when the connection ends. An idle stream must notice that at once:
// a write to a connection the peer has closed is accepted by the kernel
// and lost, so the first messages after the stream's quiet time (a
// pre-vote after a leader is lost, between two followers that had
// nothing to say to each other) would vanish, and an election would wait
// out another timeout.
func (s *stream) watchClose(conn net.Conn) <-chan struct{} {
	closed := make(chan struct{})
	go func() {
		var b [1]byte
		_, _ = conn.Read(b[:])
		close(closed)
	}()
	return closed
}

// write sends what queues as frames until the connection fails, the peer
// closes it (closed) or the stream stops; frame is a buffer to reuse.
func (s *stream) write(closed <-chan struct{}, conn net.Conn, frame []byte) ([]byte, error) {
	w := bufio.NewWriterSize(conn, 64<<10)
	var batch []raft.Message
	for {
		var first raft.Message
		select {
		case first = <-s.q:
		case <-closed:
			return frame, errPeerClosed
		case <-s.ctx.Done():
			return frame, nil
		}
		batch = append(batch[:0], first)
		size := encodedSize(&first)
	more:
		for size < maxBatch {
			select {
			case m := <-s.q:
				batch = append(batch, m)
				size += encodedSize(&m)
			default:
				break more
			}
		}
		if f := s.t.cfg.Faults; f != nil {
			if d := f.delay(s.t.cfg.ID, s.to); d > 0 {
				select {
				case <-time.After(d):
				case <-s.ctx.Done():
					return frame, nil
				}
			}
		}
		frame = encodeBatch(append(frame[:0], 0, 0, 0, 0), batch)
		clear(batch) // the entries' data go with the messages
		_ = conn.SetWriteDeadline(time.Now().Add(s.t.writeTimeout()))
		if err := writeFrame(w, frame); err != nil {
			s.t.cfg.Observer.SendFailed(s.to)
			return frame, err
		}
		s.t.cfg.Observer.Sent(s.to, len(frame))
	}
}
