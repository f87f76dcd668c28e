package jepsen

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"math/rand"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Net is the network between members as the harness sees it: a proxy in
// front of each member's peer port (the URL the others know it by), and
// the state of every directed link (from, to), so that partitions,
// one-way cuts, delays and slow links need no root.
//
// A proxy learns which member a connection comes from by its first bytes:
// cairn's peer hello carries the sender's id, etcd's peer requests an
// X-Server-From header. Member ids map to indexes through SetID, which the
// cluster calls once it knows them (a connection made earlier is resolved
// when the id is known, as each chunk is forwarded). A connection whose
// sender is not known (etcd's version probes) is cut only when its
// destination is cut from every member.
//
// A cut link blackholes what it carries: the bytes are dropped and the
// connection stays open, as a partition leaves it. A connection that
// dropped bytes is closed when the link heals (the stream has a gap), so
// the members reconnect.
type Net struct {
	mu      sync.Mutex
	rng     *rand.Rand
	n       int
	links   map[[2]int]Link
	ids     map[uint64]int
	proxies []*proxy
}

// Link is the state of one direction between two members.
type Link struct {
	Cut    bool
	Delay  time.Duration // added to every chunk
	Jitter time.Duration // plus up to this, at random
	// Slow is the chance a chunk waits a TCP retransmission timeout
	// (200 ms) more, as a lost packet makes a TCP stream wait: what
	// follows waits behind it.
	Slow float64
}

// retransmitTimeout is the wait of a chunk "lost" on a slow link:
// Linux's minimum TCP retransmission timeout.
const retransmitTimeout = 200 * time.Millisecond

// NewNet makes the network of n members; seed drives delays and losses.
func NewNet(n int, seed int64) *Net {
	return &Net{rng: rand.New(rand.NewSource(seed)), n: n, links: map[[2]int]Link{}, ids: map[uint64]int{}}
}

// SetID says that member id is member index i (again, after it is
// replaced by a member with a new id).
func (nt *Net) SetID(id uint64, i int) {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	nt.ids[id] = i
}

// Listen starts the proxy in front of member i: it accepts on ln and
// forwards to target, the member's own peer address.
func (nt *Net) Listen(i int, ln net.Listener, target string) {
	p := &proxy{nt: nt, to: i, ln: ln, target: target, conns: map[*pconn]bool{}}
	nt.mu.Lock()
	nt.proxies = append(nt.proxies, p)
	nt.mu.Unlock()
	go p.serve()
}

// Set sets the link from → to.
func (nt *Net) Set(from, to int, l Link) {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	nt.links[[2]int{from, to}] = l
}

// Partition cuts every link between members of different groups, both
// ways; members in no group are cut from everyone.
func (nt *Net) Partition(groups ...[]int) {
	group := make([]int, nt.n)
	for i := range group {
		group[i] = -1 - i // alone
	}
	for g, ms := range groups {
		for _, m := range ms {
			group[m] = g
		}
	}
	nt.mu.Lock()
	defer nt.mu.Unlock()
	for a := range nt.n {
		for b := range nt.n {
			if a != b && group[a] != group[b] {
				l := nt.links[[2]int{a, b}]
				l.Cut = true
				nt.links[[2]int{a, b}] = l
			}
		}
	}
}

// Heal restores every link and closes the connections that lost bytes.
func (nt *Net) Heal() {
	nt.mu.Lock()
	nt.links = map[[2]int]Link{}
	proxies := nt.proxies
	nt.mu.Unlock()
	for _, p := range proxies {
		p.closeBroken()
	}
}

// Close stops every proxy and closes their connections.
func (nt *Net) Close() {
	nt.mu.Lock()
	proxies := nt.proxies
	nt.proxies = nil
	nt.mu.Unlock()
	for _, p := range proxies {
		p.close()
	}
}

// link returns the state of from → to; from is -1 for a sender not known.
func (nt *Net) link(from, to int) Link {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if from >= 0 && to >= 0 {
		return nt.links[[2]int{from, to}]
	}
	// Not known: cut only if the known end is cut from every member.
	known, other := to, func(m int) [2]int { return [2]int{m, to} }
	if to < 0 {
		known, other = from, func(m int) [2]int { return [2]int{from, m} }
	}
	for m := range nt.n {
		if m != known && !nt.links[other(m)].Cut {
			return Link{}
		}
	}
	return Link{Cut: nt.n > 1}
}

// index is the member index of id, or -1.
func (nt *Net) index(id uint64) int {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if i, ok := nt.ids[id]; ok {
		return i
	}
	return -1
}

// wait is how long a chunk crossing l waits.
func (nt *Net) wait(l Link) time.Duration {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	d := l.Delay
	if l.Jitter > 0 {
		d += time.Duration(nt.rng.Int63n(int64(l.Jitter)))
	}
	if l.Slow > 0 && nt.rng.Float64() < l.Slow {
		d += retransmitTimeout
	}
	return d
}

type proxy struct {
	nt     *Net
	to     int
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[*pconn]bool
	closed bool
}

// pconn is one proxied connection: from a member (its id once read) to
// the proxy's member.
type pconn struct {
	client, server net.Conn
	from           uint64 // the sender's id, 0 if not known

	mu     sync.Mutex
	broken bool // bytes were dropped: close on heal
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.handle(c)
	}
}

func (p *proxy) handle(client net.Conn) {
	server, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		client.Close()
		return
	}
	pc := &pconn{client: client, server: server}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	p.conns[pc] = true
	p.mu.Unlock()
	r := bufio.NewReaderSize(client, 32<<10)
	pc.from = senderID(r)
	done := make(chan struct{}, 2)
	go func() { p.pump(pc, r, server, true); done <- struct{}{} }()
	go func() { p.pump(pc, server, client, false); done <- struct{}{} }()
	<-done
	client.Close()
	server.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, pc)
	p.mu.Unlock()
}

// senderID reads (without consuming) the member id a connection's first
// bytes name: cairn's peer hello ("CRNP", version, kind, 0, cluster,
// from, to; little-endian), or an HTTP request's X-Server-From header
// (etcd's peer protocol, the id in hex). 0 if neither.
func senderID(r *bufio.Reader) uint64 {
	head, _ := r.Peek(4)
	if string(head) == "CRNP" {
		b, err := r.Peek(32)
		if err != nil {
			return 0
		}
		return binary.LittleEndian.Uint64(b[16:])
	}
	switch string(head) {
	case "GET ", "POST", "PUT ", "HEAD":
	default:
		return 0
	}
	// An HTTP request: what has arrived, then a byte more at a time,
	// until the end of the header (never waiting for bytes not sent).
	n := r.Buffered()
	for n <= 16<<10 {
		b, err := r.Peek(n)
		if err != nil {
			return 0
		}
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			return headerID(string(b[:i]))
		}
		n = max(n+1, r.Buffered())
	}
	return 0
}

// headerID is the X-Server-From header's id in an HTTP request's header.
func headerID(header string) uint64 {
	for _, line := range strings.Split(header, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "X-Server-From") {
			if id, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil {
				return id
			}
		}
	}
	return 0
}

type chunk struct {
	data []byte
	at   time.Time
}

// pump copies src to dst, the direction toward the proxy's member if
// inbound, through the link's state at each chunk.
func (p *proxy) pump(pc *pconn, src io.Reader, dst net.Conn, inbound bool) {
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		var last time.Time
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				from := p.nt.index(pc.from)
				l := p.nt.link(from, p.to)
				if !inbound {
					l = p.nt.link(p.to, from)
				}
				if l.Cut {
					pc.mu.Lock()
					pc.broken = true
					pc.mu.Unlock()
				} else {
					at := time.Now().Add(p.nt.wait(l))
					if at.Before(last) {
						at = last // in order
					}
					last = at
					q <- chunk{buf[:n], at}
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.data); err != nil {
			break
		}
	}
	// Whichever way ends first ends the connection.
	pc.client.Close()
	pc.server.Close()
	for range q {
	}
}

func (p *proxy) closeBroken() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pc := range p.conns {
		pc.mu.Lock()
		if pc.broken {
			pc.client.Close()
			pc.server.Close()
		}
		pc.mu.Unlock()
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.ln.Close()
	for pc := range p.conns {
		pc.client.Close()
		pc.server.Close()
	}
}
