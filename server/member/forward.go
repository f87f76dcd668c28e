package member

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/server/transport"
)

// Requests a follower forwards to the leader over the peer transport (as
// etcd forwards lease calls over its peer port): a kind byte, then the
// request's protobuf encoding; the answer is the response's encoding. An
// error travels as "<gRPC code> <message>", so the follower answers its
// client with the status the leader gave.
const (
	requestLeaseRenew      byte = 1
	requestLeaseTimeToLive byte = 2
)

// askLeader sends req to the leader and decodes its answer into resp. It
// returns asked false, and does nothing, when this member is the leader
// (the caller answers itself). Without a leader, or with one this member
// cannot reach (stopped, or removed a moment ago), the request was not
// sent and is sent again to the next leader, as long as ctx and
// requestTimeout allow (etcd waits for a leader as long).
func (m *Member) askLeader(ctx context.Context, kind byte, req, resp proto.Message) (asked bool, err error) {
	data, err := proto.Marshal(req)
	if err != nil {
		return true, err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	for {
		lead := m.lead.Load()
		if lead == m.id {
			return false, nil
		}
		if lead != 0 {
			answer, err := m.tr.Request(ctx, lead, append([]byte{kind}, data...))
			var remote *transport.RemoteError
			switch {
			case err == nil:
				return true, proto.Unmarshal(answer, resp)
			case errors.As(err, &remote):
				return true, remoteError(err)
			case !errors.Is(err, transport.ErrNotSent):
				// Sent, and the answer lost: it may have been done.
				return true, rpctypes.ErrGRPCTimeoutDueToConnectionLost
			}
		}
		select {
		case <-ctx.Done():
			if lead == 0 {
				return true, rpctypes.ErrGRPCNoLeader
			}
			return true, rpctypes.ErrGRPCTimeout
		case <-time.After(askLeaderRetry):
		}
	}
}

// remoteError is the status a peer answered a request with ("<gRPC code>
// <message>"), or err as it is when it is not a peer's answer.
func remoteError(err error) error {
	var remote *transport.RemoteError
	if !errors.As(err, &remote) {
		return err
	}
	code, msg, ok := strings.Cut(remote.Msg, " ")
	n, cerr := strconv.ParseUint(code, 10, 32)
	if !ok || cerr != nil {
		return status.Error(codes.Unavailable, remote.Msg)
	}
	return status.Error(codes.Code(n), msg)
}

// askLeaderRetry is how long a request waits before it is sent again to
// the leader it could not reach (or once there is one).
const askLeaderRetry = 50 * time.Millisecond

// handleRequest answers a request a peer sends this member: one a
// follower forwards to its leader, or a hash for a corruption check.
func (m *Member) handleRequest(from uint64, req []byte) ([]byte, error) {
	if len(req) == 0 {
		return nil, errors.New("an empty request")
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var resp proto.Message
	var err error
	switch req[0] {
	case requestLeaseRenew:
		var r pb.LeaseKeepAliveRequest
		if err = proto.Unmarshal(req[1:], &r); err == nil {
			var ttl int64
			ttl, err = m.renewLocal(ctx, r.ID)
			resp = &pb.LeaseKeepAliveResponse{ID: r.ID, TTL: ttl}
		}
	case requestLeaseTimeToLive:
		var r pb.LeaseTimeToLiveRequest
		if err = proto.Unmarshal(req[1:], &r); err == nil {
			resp, err = m.leaseTimeToLiveLocal(ctx, &r)
		}
	case requestMemberAdd:
		var r pb.MemberAddRequest
		if err = proto.Unmarshal(req[1:], &r); err == nil {
			resp, err = m.memberAddLocal(ctx, &r)
		}
	case requestMemberRemove:
		var r pb.MemberRemoveRequest
		if err = proto.Unmarshal(req[1:], &r); err == nil {
			resp, err = m.MemberRemove(ctx, &r)
		}
	case requestMemberUpdate:
		var r pb.MemberUpdateRequest
		if err = proto.Unmarshal(req[1:], &r); err == nil {
			resp, err = m.MemberUpdate(ctx, &r)
		}
	case requestMemberPromote:
		var r pb.MemberPromoteRequest
		if err = proto.Unmarshal(req[1:], &r); err == nil {
			resp, err = m.memberPromoteLocal(ctx, &r)
			m.metrics.promote(err)
		}
	case requestProbe:
		return nil, nil
	case requestHashKV:
		var r pb.HashKVRequest
		if err = proto.Unmarshal(req[1:], &r); err == nil {
			resp, err = m.hashKVLocal(r.Revision)
		}
	default:
		err = fmt.Errorf("unknown request kind %d from %x", req[0], from)
	}
	if err != nil {
		st := status.Convert(err)
		return nil, fmt.Errorf("%d %s", st.Code(), st.Message())
	}
	return proto.Marshal(resp)
}
