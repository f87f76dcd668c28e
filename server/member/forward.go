package member

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

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

// askLeader sends req to the leader lead and decodes its answer into resp.
func (m *Member) askLeader(ctx context.Context, lead uint64, kind byte, req, resp proto.Message) error {
	data, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	answer, err := m.tr.Request(ctx, lead, append([]byte{kind}, data...))
	var remote *transport.RemoteError
	switch {
	case errors.As(err, &remote):
		code, msg, ok := strings.Cut(remote.Msg, " ")
		n, cerr := strconv.ParseUint(code, 10, 32)
		if !ok || cerr != nil {
			return status.Error(codes.Unavailable, remote.Msg)
		}
		return status.Error(codes.Code(n), msg)
	case err != nil:
		return rpctypes.ErrGRPCTimeoutDueToConnectionLost
	}
	return proto.Unmarshal(answer, resp)
}

// handleRequest answers a request a follower forwards to this member, its
// leader.
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
	default:
		err = fmt.Errorf("unknown request kind %d from %x", req[0], from)
	}
	if err != nil {
		st := status.Convert(err)
		return nil, fmt.Errorf("%d %s", st.Code(), st.Message())
	}
	return proto.Marshal(resp)
}
