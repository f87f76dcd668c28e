// Package testdns is a DNS server on 127.0.0.1 for tests: it answers SRV
// and A queries from the records it is given, and a resolver that asks it.
package testdns

import (
	"context"
	"net"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// SRV is a service record: _service._proto.domain points at Target:Port.
type SRV struct {
	Target string
	Port   uint16
}

// Server answers from its records until Close.
type Server struct {
	conn *net.UDPConn
	wg   sync.WaitGroup

	mu  sync.Mutex
	srv map[string][]SRV // by name, with the trailing dot
	a   map[string]net.IP
}

// Start listens on a free UDP port of 127.0.0.1.
func Start() (*Server, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	s := &Server{conn: conn, srv: map[string][]SRV{}, a: map[string]net.IP{}}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

func fqdn(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

// AddSRV adds a record for name (e.g. "_etcd-server._tcp.cairn.test").
func (s *Server) AddSRV(name string, r SRV) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv[fqdn(name)] = append(s.srv[fqdn(name)], SRV{Target: fqdn(r.Target), Port: r.Port})
}

// AddA adds an IPv4 address record.
func (s *Server) AddA(name string, ip net.IP) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.a[fqdn(name)] = ip.To4()
}

// Addr is the server's address.
func (s *Server) Addr() string { return s.conn.LocalAddr().String() }

// Resolver asks this server only.
func (s *Server) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", s.Addr())
	}}
}

// Close stops the server.
func (s *Server) Close() {
	s.conn.Close()
	s.wg.Wait()
}

func (s *Server) serve() {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if out, ok := s.answer(buf[:n]); ok {
			_, _ = s.conn.WriteToUDP(out, from)
		}
	}
}

// answer builds the response to one query: its records, or NXDOMAIN.
func (s *Server) answer(q []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, false
	}
	question, err := p.Question()
	if err != nil {
		return nil, false
	}
	name := question.Name.String()
	s.mu.Lock()
	srvs, ip := s.srv[name], s.a[name]
	s.mu.Unlock()
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
	known := len(srvs) > 0 || ip != nil
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(question)
	_ = b.StartAnswers()
	res := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 1}
	switch question.Type {
	case dnsmessage.TypeSRV:
		for _, r := range srvs {
			target, _ := dnsmessage.NewName(r.Target)
			_ = b.SRVResource(res, dnsmessage.SRVResource{Priority: 0, Weight: 10, Port: r.Port, Target: target})
		}
	case dnsmessage.TypeA:
		if ip != nil {
			_ = b.AResource(res, dnsmessage.AResource{A: [4]byte(ip)})
		}
	}
	out, err := b.Finish()
	return out, err == nil
}
