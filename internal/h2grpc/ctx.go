package h2grpc

import (
	"context"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// callCtx is a call's context, one value inside its stream: it ends when
// the call ends, is reset, or its connection goes (the connection resets
// every stream it has), or at the call's deadline. It carries the peer,
// the transport stream (for grpc.SetHeader and grpc.Method) and the
// incoming metadata, made from the request's headers when first asked
// for. The standard library's contexts would take a value context per
// item and a cancel context, and the metadata on every call, asked for or
// not.
type callCtx struct {
	st       *stream
	deadline time.Time

	mu     sync.Mutex
	timer  *time.Timer
	done   chan struct{} // made when first asked for
	err    error
	afters []*afterFunc
	hdrs   []hpack.HeaderField // the request's metadata headers
	md     metadata.MD
	mdMade bool
}

type afterFunc struct{ f func() }

// The keys grpc's packages look their values up by are unexported; they
// are learned by asking a context that records what it is asked for.
var peerKey, mdKey, streamKey = probeKeys()

type keyProbe struct {
	context.Context
	key any
}

func (p *keyProbe) Value(k any) any { p.key = k; return nil }

func probeKeys() (pk, mk, sk any) {
	p := &keyProbe{Context: context.Background()}
	peer.FromContext(p)
	pk = p.key
	metadata.FromIncomingContext(p)
	mk = p.key
	grpc.ServerTransportStreamFromContext(p)
	sk = p.key
	if pk == nil || mk == nil || sk == nil || pk == mk || mk == sk || pk == sk {
		panic("h2grpc: cannot learn the context keys of grpc's peer, metadata and stream")
	}
	return pk, mk, sk
}

var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (x *callCtx) Deadline() (time.Time, bool) { return x.deadline, !x.deadline.IsZero() }

func (x *callCtx) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.done == nil {
		if x.err != nil {
			return closedDone
		}
		x.done = make(chan struct{})
	}
	return x.done
}

func (x *callCtx) Err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

func (x *callCtx) Value(key any) any {
	switch key {
	case peerKey:
		return x.st.c.peer
	case streamKey:
		return transportStream{x.st}
	case mdKey:
		x.mu.Lock()
		defer x.mu.Unlock()
		if !x.mdMade {
			x.md = make(metadata.MD, len(x.hdrs))
			for _, hf := range x.hdrs {
				x.md[hf.Name] = append(x.md[hf.Name], hf.Value)
			}
			x.hdrs, x.mdMade = nil, true
		}
		return x.md
	}
	return nil
}

// AfterFunc is what lets contexts derived from this one follow its end
// without a goroutine each (the context package looks for it).
func (x *callCtx) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	x.afters = append(x.afters, a)
	x.mu.Unlock()
	return func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		for i, b := range x.afters {
			if b == a {
				x.afters = append(x.afters[:i], x.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

// cancel ends the context with err, once.
func (x *callCtx) cancel(err error) {
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		return
	}
	x.err = err
	if x.done != nil {
		close(x.done)
	}
	afters := x.afters
	x.afters = nil
	timer := x.timer
	x.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	for _, a := range afters {
		a.f()
	}
}

// start sets the call's deadline, timeout after now, when it has one.
func (x *callCtx) start(timeout time.Duration, has bool) {
	if !has {
		return
	}
	x.deadline = time.Now().Add(timeout)
	x.mu.Lock()
	x.timer = time.AfterFunc(timeout, func() { x.cancel(context.DeadlineExceeded) })
	x.mu.Unlock()
}

// metadataHeaders keeps the request's headers that are metadata, binary
// values decoded; it returns false and the header when one does not
// decode.
func metadataHeaders(fields []hpack.HeaderField) ([]hpack.HeaderField, hpack.HeaderField, bool) {
	var out []hpack.HeaderField
	for _, hf := range fields {
		if reservedHeader(hf.Name) {
			continue
		}
		if strings.HasSuffix(hf.Name, "-bin") {
			v, err := decodeBinHeader(hf.Value)
			if err != nil {
				return nil, hf, false
			}
			hf.Value = v
		}
		if out == nil {
			n := 0 // the metadata headers, usually one or two
			for _, f := range fields {
				if !reservedHeader(f.Name) {
					n++
				}
			}
			out = make([]hpack.HeaderField, 0, n)
		}
		out = append(out, hf)
	}
	return out, hpack.HeaderField{}, true
}
