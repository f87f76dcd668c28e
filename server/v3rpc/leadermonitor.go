package v3rpc

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// maxNoLeaderCount is how many election timeouts in a row a member must
// find no leader before it ends the streams that require one (etcd's
// count: reconnecting a stream costs more than refusing a new call).
const maxNoLeaderCount = 3

// leaderStreams are the open streams whose client requires a leader
// (clientv3.WithRequireLeader): when the member has known no leader for
// maxNoLeaderCount election timeouts, each is cancelled and its call ends
// with etcd's "no leader", as etcd's monitorLeader does.
type leaderStreams struct {
	mu      sync.Mutex
	streams map[*leaderStream]struct{}
}

// leaderStream is a stream whose context the monitor can cancel.
type leaderStream struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelFunc
	lost   atomic.Bool // cancelled for want of a leader
}

func (s *leaderStream) Context() context.Context { return s.ctx }

// wantsLeader reports whether a call carries the hasleader metadata.
func wantsLeader(ctx context.Context) bool {
	vs := metadata.ValueFromIncomingContext(ctx, rpctypes.MetadataRequireLeaderKey)
	return len(vs) > 0 && vs[0] == rpctypes.MetadataHasLeader
}

// run wraps a stream that requires a leader, runs h on it, and answers
// "no leader" if the monitor ended it.
func (ls *leaderStreams) run(srv any, ss grpc.ServerStream, h func(any, grpc.ServerStream) error) error {
	ctx, cancel := context.WithCancel(ss.Context())
	s := &leaderStream{ServerStream: ss, ctx: ctx, cancel: cancel}
	ls.mu.Lock()
	ls.streams[s] = struct{}{}
	ls.mu.Unlock()
	err := h(srv, s)
	ls.mu.Lock()
	delete(ls.streams, s)
	ls.mu.Unlock()
	cancel()
	if s.lost.Load() {
		return rpctypes.ErrGRPCNoLeader
	}
	return err
}

// cancelAll ends every stream that requires a leader.
func (ls *leaderStreams) cancelAll() {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for s := range ls.streams {
		s.lost.Store(true)
		s.cancel()
	}
	ls.streams = map[*leaderStream]struct{}{}
}

// monitor checks for a leader every election timeout until stop closes,
// and ends the streams that require one after maxNoLeaderCount checks in
// a row without.
func (ls *leaderStreams) monitor(electionTimeout time.Duration, lead func() uint64, stop <-chan struct{}) {
	tick := time.NewTicker(electionTimeout)
	defer tick.Stop()
	none := 0
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if lead() != 0 {
			none = 0
			continue
		}
		if none++; none >= maxNoLeaderCount {
			ls.cancelAll()
		}
	}
}
