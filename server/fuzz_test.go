package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// fuzzMember is one member a fuzz worker process runs all its inputs
// against (a member a run would take too long to start for each).
var fuzzMember struct {
	once sync.Once
	dir  string
	s    *Server
	err  error
}

// TestMain stops the fuzz targets' member, if one ran, and removes its
// data.
func TestMain(m *testing.M) {
	code := m.Run()
	if fuzzMember.s != nil {
		fuzzMember.s.Stop()
	}
	if fuzzMember.dir != "" {
		os.RemoveAll(fuzzMember.dir)
	}
	os.Exit(code)
}

func sharedMember(t testing.TB) *Server {
	fuzzMember.once.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-fuzz-member-")
		if err != nil {
			fuzzMember.err = err
			return
		}
		fuzzMember.dir = dir
		fuzzMember.s, _, fuzzMember.err = openMember(dir, func(cfg *Config) {
			cfg.UnsafeNoFsync = true
			cfg.BcryptCost = 4
		})
	})
	require.NoError(t, fuzzMember.err)
	return fuzzMember.s
}

// alive checks that the member has not failed and still answers a
// linearizable read (through raft, whatever auth or alarms an input
// turned on).
func alive(t *testing.T, s *Server) {
	t.Helper()
	require.NoError(t, s.Err())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.m.LinearizableRead(ctx))
}

// FuzzApply proposes arbitrary requests through the log of a running
// member, as apply decodes entries: each is applied or refused, and the
// member neither fails nor stops answering.
func FuzzApply(f *testing.F) {
	for _, r := range []*pb.InternalRaftRequest{
		{Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v"), PrevKv: true}},
		{DeleteRange: &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte{0}, PrevKv: true}},
		{Txn: &pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("k"), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 0}}},
			Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("k")}}},
				{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{}}}},
			Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}}},
		}},
		{Compaction: &pb.CompactionRequest{Revision: 2, Physical: true}},
		{LeaseGrant: &pb.LeaseGrantRequest{ID: 5, TTL: 30}},
		{LeaseRevoke: &pb.LeaseRevokeRequest{ID: 5}},
		{Alarm: &pb.AlarmRequest{Action: pb.AlarmRequest_GET}},
		{AuthUserAdd: &pb.AuthUserAddRequest{Name: "u", HashedPassword: "x"}},
		{AuthRoleGrantPermission: &pb.AuthRoleGrantPermissionRequest{Name: "r"}},
		{Range: &pb.RangeRequest{Key: []byte("k")}},
	} {
		b, err := proto.Marshal(r)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := sharedMember(t)
		var req pb.InternalRaftRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		req.Header = nil // the proposer's to set
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = s.m.Propose(ctx, &req)
		alive(t, s)
	})
}

// gatewayRoutes are the JSON gateway's routes a fuzzed body may take:
// every one but the membership changes (an added voter would take a
// cluster of one's quorum away, a removal would stop it).
var gatewayRoutes = []string{
	"/v3/kv/range", "/v3/kv/put", "/v3/kv/deleterange", "/v3/kv/txn", "/v3/kv/compaction",
	"/v3/watch", "/v3/lease/grant", "/v3/lease/revoke", "/v3/lease/keepalive", "/v3/lease/timetolive", "/v3/lease/leases",
	"/v3/kv/lease/revoke", "/v3/kv/lease/timetolive", "/v3/kv/lease/leases",
	"/v3/cluster/member/list",
	"/v3/maintenance/alarm", "/v3/maintenance/status", "/v3/maintenance/defragment", "/v3/maintenance/hash",
	"/v3/maintenance/hashkv", "/v3/maintenance/snapshot", "/v3/maintenance/transfer-leadership", "/v3/maintenance/downgrade",
	"/v3/auth/enable", "/v3/auth/disable", "/v3/auth/status", "/v3/auth/authenticate",
	"/v3/auth/user/add", "/v3/auth/user/get", "/v3/auth/user/list", "/v3/auth/user/delete", "/v3/auth/user/changepw",
	"/v3/auth/user/grant", "/v3/auth/user/revoke",
	"/v3/auth/role/add", "/v3/auth/role/get", "/v3/auth/role/list", "/v3/auth/role/delete", "/v3/auth/role/grant", "/v3/auth/role/revoke",
	"/v3/lock/lock", "/v3/lock/unlock",
	"/v3/election/campaign", "/v3/election/proclaim", "/v3/election/leader", "/v3/election/observe", "/v3/election/resign",
}

// FuzzGateway posts arbitrary bodies to the JSON gateway's routes (seeded
// with a valid body for each): every answer is JSON (a stream's, JSON
// lines), an error's with etcd's code and message, and the member goes
// on.
func FuzzGateway(f *testing.F) {
	seeds := map[string]string{
		"/v3/kv/range":           `{"key":"YQ==","range_end":"AA==","limit":3}`,
		"/v3/kv/put":             `{"key":"YQ==","value":"MQ==","prev_kv":true}`,
		"/v3/kv/deleterange":     `{"key":"YQ=="}`,
		"/v3/kv/txn":             `{"compare":[{"key":"YQ==","target":"VALUE","result":"EQUAL","value":"MQ=="}],"success":[{"request_put":{"key":"Yg==","value":"Mg=="}}],"failure":[{"request_range":{"key":"YQ=="}}]}`,
		"/v3/kv/compaction":      `{"revision":1}`,
		"/v3/watch":              `{"create_request":{"key":"YQ==","start_revision":1}}`,
		"/v3/lease/grant":        `{"TTL":30,"ID":77}`,
		"/v3/lease/keepalive":    `{"ID":77}`,
		"/v3/lease/timetolive":   `{"ID":77,"keys":true}`,
		"/v3/maintenance/alarm":  `{"action":"GET"}`,
		"/v3/maintenance/hashkv": `{"revision":0}`,
		"/v3/auth/user/add":      `{"name":"u","password":"p"}`,
		"/v3/auth/role/grant":    `{"name":"r","perm":{"permType":"READ","key":"YQ==","range_end":"Yg=="}}`,
		"/v3/lock/lock":          `{"name":"bA==","lease":77}`,
		"/v3/election/campaign":  `{"name":"ZQ==","lease":77,"value":"dg=="}`,
		"/v3/election/observe":   `{"name":"ZQ=="}`,
	}
	for i, route := range gatewayRoutes {
		body, ok := seeds[route]
		if !ok {
			body = "{}"
		}
		f.Add(uint8(i), []byte(body))
	}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		s := sharedMember(t)
		path := gatewayRoutes[int(route)%len(gatewayRoutes)]
		// Streams (watch, keep-alive, observe) answer until the call's
		// deadline; a short one ends them.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "POST", s.ClientURLs()[0]+path, bytes.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			alive(t, s)
			return
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err == nil && path != "/v3/maintenance/snapshot" {
			dec := json.NewDecoder(bytes.NewReader(out))
			for dec.More() {
				var v map[string]any
				require.NoError(t, dec.Decode(&v), "%s %q answered %d: %q", path, body, resp.StatusCode, out)
				if resp.StatusCode != http.StatusOK {
					require.Contains(t, v, "code")
					require.Contains(t, v, "message")
				}
			}
		}
		alive(t, s)
	})
}

// websocketRoutes are the gateway's streams, and a unary route, as
// websockets take them.
var websocketRoutes = []string{"/v3/watch", "/v3/lease/keepalive", "/v3/election/observe", "/v3/kv/range", "/v3/kv/put"}

// FuzzWebsocket sends arbitrary messages (the input split at newlines)
// over a websocket to the gateway's streams: every message the member
// sends back is JSON, and the member goes on.
func FuzzWebsocket(f *testing.F) {
	f.Add(uint8(0), []byte(`{"create_request":{"key":"YQ==","range_end":"AA=="}}`+"\n"+`{"progress_request":{}}`+"\n"+`{"cancel_request":{"watch_id":0}}`))
	f.Add(uint8(1), []byte(`{"ID":77}`+"\n"+`{"ID":77}`))
	f.Add(uint8(2), []byte(`{"name":"ZQ=="}`))
	f.Add(uint8(3), []byte(`{"key":"YQ=="}`))
	f.Add(uint8(4), []byte(`{"key":"YQ==","value":"MQ=="}`))
	f.Fuzz(func(t *testing.T, route uint8, msgs []byte) {
		s := sharedMember(t)
		path := websocketRoutes[int(route)%len(websocketRoutes)]
		ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(s.ClientURLs()[0], "http")+path, nil)
		require.NoError(t, err)
		defer ws.Close()
		for _, m := range bytes.Split(msgs, []byte("\n")) {
			if ws.WriteMessage(websocket.TextMessage, m) != nil {
				break
			}
		}
		// What comes back within 100 ms (the streams answer until the
		// session ends).
		_ = ws.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			typ, out, err := ws.ReadMessage()
			if err != nil {
				break
			}
			if typ == websocket.TextMessage {
				var v map[string]any
				require.NoError(t, json.Unmarshal(out, &v), "%s answered %q", path, out)
			}
		}
		alive(t, s)
	})
}
