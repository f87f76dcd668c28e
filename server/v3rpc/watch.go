package v3rpc

import (
	"errors"
	"io"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/server/auth"
	"github.com/cairn-kv/cairn/server/convert"
	"github.com/cairn-kv/cairn/server/member"
)

// watchServer is etcd's Watch service: one engine watch stream per gRPC
// stream, many watchers on each.
type watchServer struct {
	pb.UnimplementedWatchServer
	m *member.Member
}

// watchStream is one client stream. mu orders what goes out: a watcher's
// created reply is sent under mu together with the engine's Watch call, so
// it precedes the watcher's first events, and gRPC's Send is never called
// from two goroutines.
type watchStream struct {
	m      *member.Member
	stream pb.Watch_WatchServer
	ws     *engine.WatchStream

	mu sync.Mutex
	// live are the stream's watchers (by id), with whether each allows
	// fragmented responses; events of a watcher no longer live are dropped.
	live map[int64]bool
}

func (s *watchServer) Watch(stream pb.Watch_WatchServer) error {
	m := s.m
	w := &watchStream{m: m, stream: stream, ws: m.Engine().NewWatchStream(), live: map[int64]bool{}}
	defer w.ws.Close()
	user, err := m.Authenticate(stream.Context())
	if err != nil {
		return err
	}
	sendErr := make(chan error, 1)
	go func() { sendErr <- w.sendLoop() }()
	recvErr := make(chan error, 1)
	go func() { recvErr <- w.recvLoop(user) }()
	select {
	case err := <-recvErr:
		if errors.Is(err, io.EOF) {
			// The client closed its side only: its watchers go on (as in
			// etcd) until the stream ends.
			select {
			case err = <-sendErr:
				return err
			case <-stream.Context().Done():
				return rpctypes.ErrGRPCWatchCanceled
			case <-m.Stopping():
				return rpctypes.ErrGRPCStopped
			}
		}
		if stream.Context().Err() != nil {
			return rpctypes.ErrGRPCWatchCanceled
		}
		return err
	case err := <-sendErr:
		return err
	case <-stream.Context().Done():
		// The client went, or (its client requiring a leader) the member
		// lost the leader: the interceptor says which.
		return rpctypes.ErrGRPCWatchCanceled
	case <-m.Stopping():
		return rpctypes.ErrGRPCStopped
	}
}

func (w *watchStream) recvLoop(user auth.Caller) error {
	for {
		req, err := w.stream.Recv()
		if err != nil {
			return err
		}
		switch r := req.RequestUnion.(type) {
		case *pb.WatchRequest_CreateRequest:
			if err := w.create(r.CreateRequest, user); err != nil {
				return err
			}
		case *pb.WatchRequest_CancelRequest:
			if err := w.cancel(r.CancelRequest.WatchId); err != nil {
				return err
			}
		case *pb.WatchRequest_ProgressRequest:
			// The engine answers only when every watcher is synced.
			w.mu.Lock()
			w.ws.RequestProgress()
			w.mu.Unlock()
		}
	}
}

func (w *watchStream) create(cr *pb.WatchCreateRequest, user auth.Caller) error {
	o := engine.WatchOptions{ID: cr.WatchId, Key: cr.Key, End: convert.RangeEnd(cr.RangeEnd), StartRev: cr.StartRevision,
		PrevKV: cr.PrevKv, ProgressNotify: cr.ProgressNotify}
	if len(o.Key) == 0 {
		o.Key = []byte{0}
	}
	for _, f := range cr.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			o.NoPut = true
		case pb.WatchCreateRequest_NODELETE:
			o.NoDelete = true
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var err error
	id := int64(-1)
	if err = w.m.CheckPermission(user, o.Key, o.End, false); err == nil {
		id, err = w.ws.Watch(o)
	}
	resp := &pb.WatchResponse{Header: w.m.Header(w.m.Engine().Rev()), WatchId: id, Created: true}
	if err != nil {
		// etcd gives an auth refusal's whole status text as the reason.
		resp.Canceled, resp.CancelReason = true, convert.Error(err).Error()
	} else {
		w.live[id] = cr.Fragment
	}
	return w.stream.Send(resp)
}

func (w *watchStream) cancel(id int64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ws.Cancel(id) != nil {
		return nil // an unknown id gets no reply, as in etcd
	}
	delete(w.live, id)
	return w.stream.Send(&pb.WatchResponse{Header: w.m.Header(w.m.Engine().Rev()), WatchId: id, Canceled: true})
}

func (w *watchStream) sendLoop() error {
	for r := range w.ws.Chan() {
		w.ws.Taken(r)
		if err := w.send(r); err != nil {
			return err
		}
	}
	return nil
}

func (w *watchStream) send(r engine.WatchResponse) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	fragment, live := w.live[r.WatchID]
	if !live && r.WatchID != -1 {
		return nil // cancelled since
	}
	if r.Canceled {
		// Its next revision was compacted; the engine dropped it.
		delete(w.live, r.WatchID)
	}
	if len(r.Events) > 0 && failpoint.Hit("v3rpc/canaryDropWatchEvent") != nil {
		// The canary: one event is not sent, on purpose, once.
		failpoint.Disable("v3rpc/canaryDropWatchEvent")
		r.Events = r.Events[1:]
	}
	parts := []engine.WatchResponse{r}
	if fragment {
		parts = r.Fragments(w.m.Config().MaxRequestBytes + GRPCOverheadBytes)
	}
	h := w.m.Header(r.Revision)
	for _, p := range parts {
		resp := &pb.WatchResponse{Header: h, WatchId: p.WatchID, Canceled: p.Canceled,
			CompactRevision: p.CompactRevision, Fragment: p.Fragment, Events: events(p.Events)}
		if err := w.stream.Send(resp); err != nil {
			return err
		}
	}
	return nil
}

func events(evs []engine.Event) []*mvccpb.Event {
	if len(evs) == 0 {
		return nil
	}
	out := make([]*mvccpb.Event, len(evs))
	for i := range evs {
		e := &evs[i]
		out[i] = &mvccpb.Event{Type: mvccpb.Event_EventType(e.Type), Kv: convert.KeyValue(&e.KV), PrevKv: convert.KeyValue(e.PrevKV)}
	}
	return out
}
