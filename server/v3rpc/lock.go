package v3rpc

import (
	"context"
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/server/convert"
	"github.com/cairn-kv/cairn/server/v3electionpb"
	"github.com/cairn-kv/cairn/server/v3lockpb"
)

// The Lock and Election services, as etcd builds them on its concurrency
// recipes: a contender holds the key "<name>/<lease in hex>", attached to
// its lease, and owns the lock (leads) once every key of the name created
// before its own is gone. They run on the KV service's handlers, with the
// caller's context, so auth applies as it would to the caller's own
// requests.

// Errors with etcd's texts (its concurrency package's).
var (
	ErrElectionNotLeader = errors.New("election: not leader")
	ErrElectionNoLeader  = errors.New("election: no leader")
	ErrSessionExpired    = errors.New("mutex: session is expired")
	ErrMissingLeaderKey  = errors.New(`"leader" field must be provided`)
)

// sessionTTL is the lease a contender gets when it names none (etcd's
// session default).
const sessionTTL = 60

type recipes struct {
	kv    *kvServer
	lease *leaseServer
}

// contend makes key the caller's under prefix (created with lease and
// value unless the lease holds it already) and waits until it is the
// oldest key of prefix. It returns the key as it stands, and the header
// of the last read.
func (r *recipes) contend(ctx context.Context, prefix string, lease int64, value []byte) (*mvccpb.KeyValue, *pb.ResponseHeader, error) {
	if lease == 0 {
		g, err := r.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: sessionTTL})
		if err != nil {
			return nil, nil, err
		}
		lease = g.ID
	}
	key := []byte(fmt.Sprintf("%s%x", prefix, lease))
	txn, err := r.kv.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: key, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: key, Value: value, Lease: lease}}}},
		Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: key}}}},
	})
	if err != nil {
		return nil, nil, err
	}
	myRev := txn.Header.Revision
	if !txn.Succeeded {
		myRev = txn.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	if err := r.waitDeletes(ctx, []byte(prefix), myRev-1); err != nil {
		// Leave no key behind that would block the others.
		_, _ = r.kv.DeleteRange(context.WithoutCancel(ctx), &pb.DeleteRangeRequest{Key: key})
		return nil, nil, err
	}
	get, err := r.kv.Range(ctx, &pb.RangeRequest{Key: key})
	if err != nil {
		return nil, nil, err
	}
	if len(get.Kvs) == 0 {
		return nil, nil, ErrSessionExpired
	}
	return get.Kvs[0], get.Header, nil
}

// waitDeletes returns once no key of prefix created at or before maxRev
// is left.
func (r *recipes) waitDeletes(ctx context.Context, prefix []byte, maxRev int64) error {
	end := prefixEnd(prefix)
	for {
		resp, err := r.kv.Range(ctx, &pb.RangeRequest{Key: prefix, RangeEnd: end, MaxCreateRevision: maxRev,
			SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_CREATE, Limit: 1})
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		if _, err := r.nextEvent(ctx, resp.Kvs[0].Key, nil, resp.Header.Revision+1, mvccpb.DELETE); err != nil {
			return err
		}
	}
}

// nextEvent waits for the first event of the given type on [key, end)
// from revision from on, and returns it.
func (r *recipes) nextEvent(ctx context.Context, key, end []byte, from int64, typ mvccpb.Event_EventType) (*engine.Event, error) {
	ws := r.kv.m.Engine().NewWatchStream()
	defer ws.Close()
	if _, err := ws.Watch(engine.WatchOptions{Key: key, End: end, StartRev: from}); err != nil {
		return nil, err
	}
	for {
		select {
		case resp, ok := <-ws.Chan():
			if !ok {
				return nil, ctx.Err()
			}
			ws.Taken(resp)
			if resp.Canceled {
				return nil, convert.Error(engine.ErrCompacted)
			}
			for i := range resp.Events {
				if ev := &resp.Events[i]; mvccpb.Event_EventType(ev.Type) == typ {
					return ev, nil
				}
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.kv.m.Stopping():
			return nil, rpctypes.ErrGRPCStopped
		}
	}
}

// prefixEnd is the range end of every key starting with prefix.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}

// recipeError turns err as etcd's Lock and Election services send it:
// they call the KV service through a client, which turns etcd's errors
// into its own type, so those reach the caller with code Unknown and
// their text.
func recipeError(err *error) {
	if ee, ok := rpctypes.Error(*err).(rpctypes.EtcdError); ok {
		*err = status.Error(codes.Unknown, ee.Error())
	}
}

// lockServer is etcd's v3lock service.
type lockServer struct {
	v3lockpb.UnimplementedLockServer
	r recipes
}

func (s *lockServer) Lock(ctx context.Context, req *v3lockpb.LockRequest) (_ *v3lockpb.LockResponse, err error) {
	defer recipeError(&err)
	kv, h, err := s.r.contend(ctx, string(req.Name)+"/", req.Lease, nil)
	if err != nil {
		return nil, err
	}
	return &v3lockpb.LockResponse{Header: h, Key: kv.Key}, nil
}

func (s *lockServer) Unlock(ctx context.Context, req *v3lockpb.UnlockRequest) (_ *v3lockpb.UnlockResponse, err error) {
	defer recipeError(&err)
	resp, err := s.r.kv.DeleteRange(ctx, &pb.DeleteRangeRequest{Key: req.Key})
	if err != nil {
		return nil, err
	}
	return &v3lockpb.UnlockResponse{Header: resp.Header}, nil
}

// electionServer is etcd's v3election service.
type electionServer struct {
	v3electionpb.UnimplementedElectionServer
	r recipes
}

func (s *electionServer) Campaign(ctx context.Context, req *v3electionpb.CampaignRequest) (_ *v3electionpb.CampaignResponse, err error) {
	defer recipeError(&err)
	kv, h, err := s.r.contend(ctx, string(req.Name)+"/", req.Lease, req.Value)
	if err != nil {
		return nil, err
	}
	if string(kv.Value) != string(req.Value) {
		// The lease campaigned before with another value: it is now this.
		l := &v3electionpb.LeaderKey{Name: req.Name, Key: kv.Key, Rev: kv.CreateRevision, Lease: kv.Lease}
		p, err := s.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: l, Value: req.Value})
		if err != nil {
			return nil, err
		}
		h = p.Header
	}
	return &v3electionpb.CampaignResponse{Header: h, Leader: &v3electionpb.LeaderKey{
		Name: req.Name, Key: kv.Key, Rev: kv.CreateRevision, Lease: kv.Lease}}, nil
}

// ifLeader runs op if the leader key is still the one created at its
// revision; it reports whether it ran.
func (s *electionServer) ifLeader(ctx context.Context, l *v3electionpb.LeaderKey, op *pb.RequestOp) (*pb.TxnResponse, error) {
	if l == nil {
		return nil, ErrMissingLeaderKey
	}
	return s.r.kv.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: l.Key, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_CreateRevision{CreateRevision: l.Rev}}},
		Success: []*pb.RequestOp{op},
	})
}

func (s *electionServer) Proclaim(ctx context.Context, req *v3electionpb.ProclaimRequest) (_ *v3electionpb.ProclaimResponse, err error) {
	defer recipeError(&err)
	if req.Leader == nil {
		return nil, ErrMissingLeaderKey
	}
	resp, err := s.ifLeader(ctx, req.Leader, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{
		RequestPut: &pb.PutRequest{Key: req.Leader.Key, Value: req.Value, IgnoreLease: true}}})
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		return nil, ErrElectionNotLeader
	}
	return &v3electionpb.ProclaimResponse{Header: resp.Header}, nil
}

func (s *electionServer) Resign(ctx context.Context, req *v3electionpb.ResignRequest) (_ *v3electionpb.ResignResponse, err error) {
	defer recipeError(&err)
	if req.Leader == nil {
		return nil, ErrMissingLeaderKey
	}
	resp, err := s.ifLeader(ctx, req.Leader, &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{
		RequestDeleteRange: &pb.DeleteRangeRequest{Key: req.Leader.Key}}})
	if err != nil {
		return nil, err
	}
	return &v3electionpb.ResignResponse{Header: resp.Header}, nil
}

// leader reads the oldest key of the election.
func (s *electionServer) leader(ctx context.Context, name []byte) (*pb.RangeResponse, error) {
	prefix := append(append([]byte(nil), name...), '/')
	return s.r.kv.Range(ctx, &pb.RangeRequest{Key: prefix, RangeEnd: prefixEnd(prefix),
		SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_CREATE, Limit: 1})
}

func (s *electionServer) Leader(ctx context.Context, req *v3electionpb.LeaderRequest) (_ *v3electionpb.LeaderResponse, err error) {
	defer recipeError(&err)
	resp, err := s.leader(ctx, req.Name)
	if err != nil {
		return nil, err
	}
	if len(resp.Kvs) == 0 {
		return nil, ErrElectionNoLeader
	}
	return &v3electionpb.LeaderResponse{Header: resp.Header, Kv: resp.Kvs[0]}, nil
}

// Observe streams the election's leader: the current one (once there is
// one), each value it proclaims, and each leader after it.
func (s *electionServer) Observe(req *v3electionpb.LeaderRequest, stream v3electionpb.Election_ObserveServer) (err error) {
	defer recipeError(&err)
	ctx := stream.Context()
	prefix := append(append([]byte(nil), req.Name...), '/')
	for {
		resp, err := s.leader(ctx, req.Name)
		if err != nil {
			return err
		}
		var kv *mvccpb.KeyValue
		if len(resp.Kvs) > 0 {
			kv = resp.Kvs[0]
		} else {
			ev, err := s.r.nextEvent(ctx, prefix, prefixEnd(prefix), resp.Header.Revision+1, mvccpb.PUT)
			if err != nil {
				return err
			}
			kv = convert.KeyValue(&ev.KV)
		}
		h := s.r.kv.m.Header(kv.ModRevision)
		if err := stream.Send(&v3electionpb.LeaderResponse{Header: h, Kv: kv}); err != nil {
			return err
		}
		// Follow this leader until it goes.
		if err := s.follow(ctx, stream, kv); err != nil {
			return err
		}
	}
}

// follow sends each value the leader kv proclaims, and returns once its
// key is deleted.
func (s *electionServer) follow(ctx context.Context, stream v3electionpb.Election_ObserveServer, kv *mvccpb.KeyValue) error {
	ws := s.r.kv.m.Engine().NewWatchStream()
	defer ws.Close()
	if _, err := ws.Watch(engine.WatchOptions{Key: kv.Key, StartRev: kv.ModRevision + 1}); err != nil {
		return err
	}
	for {
		select {
		case resp, ok := <-ws.Chan():
			if !ok || resp.Canceled {
				return nil // look for the leader again
			}
			ws.Taken(resp)
			for i := range resp.Events {
				ev := &resp.Events[i]
				if ev.Type == engine.EventDelete {
					return nil
				}
				if err := stream.Send(&v3electionpb.LeaderResponse{Header: s.r.kv.m.Header(resp.Revision), Kv: convert.KeyValue(&ev.KV)}); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		case <-s.r.kv.m.Stopping():
			return rpctypes.ErrGRPCStopped
		}
	}
}
