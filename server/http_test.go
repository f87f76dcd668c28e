package server

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/server/member"
	"github.com/gorilla/websocket"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// post sends body to the gateway and returns the status and decoded
// answer.
func post(t *testing.T, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]any{}
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s: answer %q is not JSON: %v", url, data, err)
	}
	return resp.StatusCode, out
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// TestHTTPGateway: the JSON gateway on the client port beside gRPC (put,
// range, a watch stream), etcd's error body and HTTP statuses, bad JSON,
// health, version and metrics.
func TestHTTPGateway(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	base := s.ClientURLs()[0]
	code, put := post(t, base+"/v3/kv/put", `{"key":"`+b64("foo")+`","value":"`+b64("bar")+`"}`)
	if code != 200 || put["header"] == nil {
		t.Fatalf("put: %d %v", code, put)
	}
	code, rng := post(t, base+"/v3/kv/range", `{"key":"`+b64("foo")+`"}`)
	kvs, _ := rng["kvs"].([]any)
	if code != 200 || len(kvs) != 1 || kvs[0].(map[string]any)["value"] != b64("bar") || rng["count"] != "1" {
		t.Fatalf("range: %d %v", code, rng)
	}
	// gRPC on the same port sees it.
	if g, err := c.Get(ctxT(t), "foo"); err != nil || string(g.Kvs[0].Value) != "bar" {
		t.Fatalf("gRPC get: %v %v", g, err)
	}
	code, e := post(t, base+"/v3/kv/put", `{"value":"`+b64("x")+`"}`)
	if code != 400 || e["error"] != "etcdserver: key is not provided" || e["message"] != e["error"] || e["code"] != float64(3) {
		t.Fatalf("empty key: %d %v", code, e)
	}
	code, e = post(t, base+"/v3/lease/revoke", `{"ID":12345}`)
	if code != 404 || e["error"] != "etcdserver: requested lease not found" {
		t.Fatalf("unknown lease: %d %v", code, e)
	}
	code, e = post(t, base+"/v3/kv/range", `{"key": `)
	if code != 400 || e["code"] != float64(3) {
		t.Fatalf("malformed JSON: %d %v", code, e)
	}
	// A watch over HTTP: one JSON object per line, created first.
	resp, err := http.Post(base+"/v3/watch", "application/json", strings.NewReader(`{"create_request":{"key":"`+b64("w")+`"}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() || !strings.Contains(lines.Text(), `"created":true`) {
		t.Fatalf("watch over HTTP, first line: %q %v", lines.Text(), lines.Err())
	}
	if _, err := c.Put(ctxT(t), "w", "1"); err != nil {
		t.Fatal(err)
	}
	if !lines.Scan() || !strings.Contains(lines.Text(), `"events"`) || !strings.Contains(lines.Text(), b64("w")) {
		t.Fatalf("watch over HTTP, event: %q %v", lines.Text(), lines.Err())
	}

	if code, body := get(t, base+"/health"); code != 200 || !strings.Contains(body, `"health":"true"`) {
		t.Fatalf("/health: %d %s", code, body)
	}
	if code, body := get(t, base+"/version"); code != 200 || !strings.Contains(body, `"etcdserver":"`+member.Version+`"`) {
		t.Fatalf("/version: %d %s", code, body)
	}
	if code, body := get(t, base+"/livez"); code != 200 || body != "ok" {
		t.Fatalf("/livez: %d %s", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.HasSuffix(body, "ok\n") {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	code, body := get(t, base+"/metrics")
	for _, name := range []string{"etcd_server_has_leader 1", "etcd_server_leader_changes_seen_total 1",
		"etcd_disk_wal_fsync_duration_seconds_count", "etcd_mvcc_db_total_size_in_bytes", "etcd_server_proposals_committed_total",
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"}`} {
		if code != 200 || !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}
	if code, _ := get(t, base+"/debug/pprof/"); code != 404 {
		t.Errorf("pprof served without --enable-pprof: %d", code)
	}
}

// TestHealthWithAlarm: an alarm makes /health false with etcd's reason,
// unless excluded.
func TestHealthWithAlarm(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	base := s.ClientURLs()[0]
	st, err := c.Status(ctxT(t), base)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := post(t, base+"/v3/maintenance/alarm", `{"action":"ACTIVATE","memberID":"`+jsonUint(st.Header.MemberId)+`","alarm":"NOSPACE"}`)
	if code != 200 {
		t.Fatalf("alarm activate: %d", code)
	}
	if code, body := get(t, base+"/health"); code != 503 || !strings.Contains(body, `"reason":"ALARM NOSPACE"`) {
		t.Fatalf("/health with NOSPACE: %d %s", code, body)
	}
	if code, body := get(t, base+"/health?exclude=NOSPACE"); code != 200 {
		t.Fatalf("/health excluding NOSPACE: %d %s", code, body)
	}
}

func jsonUint(v uint64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestHTTPLockAndElection: etcd's gateway routes for the Lock and
// Election services.
func TestHTTPLockAndElection(t *testing.T) {
	s, _, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	base := s.ClientURLs()[0]
	code, grant := post(t, base+"/v3/lease/grant", `{"TTL":30}`)
	lease, _ := grant["ID"].(string)
	if code != 200 || lease == "" {
		t.Fatalf("lease grant: %d %v", code, grant)
	}
	code, lock := post(t, base+"/v3/lock/lock", `{"name":"`+b64("l")+`","lease":"`+lease+`"}`)
	key, _ := lock["key"].(string)
	if code != 200 || key == "" {
		t.Fatalf("lock: %d %v", code, lock)
	}
	if k, _ := base64.StdEncoding.DecodeString(key); !strings.HasPrefix(string(k), "l/") {
		t.Fatalf("lock key %q", k)
	}
	if code, out := post(t, base+"/v3/lock/unlock", `{"key":"`+key+`"}`); code != 200 {
		t.Fatalf("unlock: %d %v", code, out)
	}

	code, camp := post(t, base+"/v3/election/campaign", `{"name":"`+b64("e")+`","lease":"`+lease+`","value":"`+b64("v1")+`"}`)
	leader, _ := camp["leader"].(map[string]any)
	if code != 200 || leader == nil {
		t.Fatalf("campaign: %d %v", code, camp)
	}
	leaderJSON, _ := json.Marshal(leader)
	value := func() any {
		code, out := post(t, base+"/v3/election/leader", `{"name":"`+b64("e")+`"}`)
		kv, _ := out["kv"].(map[string]any)
		if code != 200 || kv == nil {
			t.Fatalf("leader: %d %v", code, out)
		}
		return kv["value"]
	}
	if v := value(); v != b64("v1") {
		t.Fatalf("leader's value %v, want v1", v)
	}
	if code, out := post(t, base+"/v3/election/proclaim", `{"leader":`+string(leaderJSON)+`,"value":"`+b64("v2")+`"}`); code != 200 {
		t.Fatalf("proclaim: %d %v", code, out)
	}
	if v := value(); v != b64("v2") {
		t.Fatalf("leader's value %v after proclaim, want v2", v)
	}
	// Observe: a stream of the leader's proclamations, one JSON result per
	// line, the current one first.
	resp, err := http.Post(base+"/v3/election/observe", "application/json", strings.NewReader(`{"name":"`+b64("e")+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	observed := func(want string) {
		t.Helper()
		var line struct {
			Result struct {
				KV struct{ Value string } `json:"kv"`
			} `json:"result"`
		}
		if !lines.Scan() || json.Unmarshal(lines.Bytes(), &line) != nil || line.Result.KV.Value != b64(want) {
			t.Fatalf("observe: line %q (%v), want the value %s", lines.Text(), lines.Err(), want)
		}
	}
	observed("v2")
	if code, out := post(t, base+"/v3/election/proclaim", `{"leader":`+string(leaderJSON)+`,"value":"`+b64("v3")+`"}`); code != 200 {
		t.Fatalf("proclaim: %d %v", code, out)
	}
	observed("v3")
	if code, out := post(t, base+"/v3/election/resign", `{"leader":`+string(leaderJSON)+`}`); code != 200 {
		t.Fatalf("resign: %d %v", code, out)
	}
	code, e := post(t, base+"/v3/election/leader", `{"name":"`+b64("e")+`"}`)
	if code == 200 || e["error"] != "election: no leader" {
		t.Fatalf("leader after resign: %d %v", code, e)
	}
}

// TestGatewayWebsocket: the gateway over a websocket upgrade: a watch
// takes several requests on one socket and streams its events; a unary
// call takes one message and answers once, then closes; an error comes
// back as etcd's JSON error; with auth on, the token rides in the
// "Bearer, <token>" subprotocol; stopping the member ends an open session.
func TestGatewayWebsocket(t *testing.T) {
	s, c, stop := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	wsURL := "ws" + strings.TrimPrefix(s.ClientURLs()[0], "http")
	dial := func(path string, protocols ...string) *websocket.Conn {
		t.Helper()
		d := websocket.Dialer{Subprotocols: protocols, HandshakeTimeout: 5 * time.Second}
		conn, resp, err := d.Dial(wsURL+path, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", path, err)
		}
		resp.Body.Close()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		return conn
	}
	send := func(conn *websocket.Conn, msg string) {
		t.Helper()
		if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(conn *websocket.Conn, want ...string) string {
		t.Helper()
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v, want a message with %q", err, want)
		}
		for _, w := range want {
			if !strings.Contains(string(msg), w) {
				t.Fatalf("message %s lacks %q", msg, w)
			}
		}
		return string(msg)
	}
	closed := func(conn *websocket.Conn) {
		t.Helper()
		if _, msg, err := conn.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
			t.Fatalf("after the answer: %q %v, want a normal close", msg, err)
		}
	}

	watch := dial("/v3/watch")
	defer watch.Close()
	send(watch, `{"create_request":{"key":"`+b64("w")+`"}}`)
	recv(watch, `"created":true`)
	send(watch, `{"create_request":{"key":"`+b64("x")+`"}}`)
	recv(watch, `"created":true`, `"watch_id":"1"`)
	if _, err := c.Put(ctx, "x", "1"); err != nil {
		t.Fatal(err)
	}
	recv(watch, `"events"`, b64("x"), `"watch_id":"1"`)
	if _, err := c.Put(ctx, "w", "1"); err != nil {
		t.Fatal(err)
	}
	recv(watch, `"events"`, b64("w"))

	rng := dial("/v3/kv/range")
	send(rng, `{"key":"`+b64("w")+`"}`)
	recv(rng, `"kvs"`, b64("1"))
	closed(rng)
	bad := dial("/v3/kv/put")
	send(bad, `{"value":"`+b64("v")+`"}`)
	recv(bad, `"error":"etcdserver: key is not provided"`)
	closed(bad)

	for _, err := range []error{
		func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err }(),
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err }(),
		func() error { _, err := c.AuthEnable(ctx); return err }(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	code, auth := post(t, s.ClientURLs()[0]+"/v3/auth/authenticate", `{"name":"root","password":"rootpw"}`)
	token, _ := auth["token"].(string)
	if code != 200 || token == "" {
		t.Fatalf("authenticate: %d %v", code, auth)
	}
	noToken := dial("/v3/kv/range")
	send(noToken, `{"key":"`+b64("w")+`"}`)
	recv(noToken, `"error":"etcdserver: user name is empty"`)
	withToken := dial("/v3/kv/range", "Bearer", token)
	if p := withToken.Subprotocol(); p != "Bearer" {
		t.Fatalf("subprotocol %q, want Bearer", p)
	}
	send(withToken, `{"key":"`+b64("w")+`"}`)
	recv(withToken, `"kvs"`)

	// The watch socket is still open: stopping the member ends it (after,
	// perhaps, the stream's error).
	stop()
	for i := 0; ; i++ {
		_, msg, err := watch.ReadMessage()
		if err != nil {
			break
		}
		if i > 0 || !strings.HasPrefix(string(msg), `{"error":`) {
			t.Fatalf("watch socket after stop: %q", msg)
		}
	}
}

// TestAccessControl: what etcd puts in front of the client port's HTTP
// side, on a member: /v3beta/ served as /v3/, /v3alpha/ not found, OPTIONS
// answered at once with CORS headers (gateway's TestAccessControl checks
// the handler alone: origins, and the Host whitelist).
func TestAccessControl(t *testing.T) {
	s, _, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	base := s.ClientURLs()[0]
	if code, put := post(t, base+"/v3beta/kv/put", `{"key":"`+b64("b")+`","value":"`+b64("v")+`"}`); code != 200 || put["header"] == nil {
		t.Fatalf("put on /v3beta: %d %v", code, put)
	}
	code, rng := post(t, base+"/v3/kv/range", `{"key":"`+b64("b")+`"}`)
	if code != 200 || rng["count"] != "1" {
		t.Fatalf("range after a /v3beta put: %d %v", code, rng)
	}
	if resp, err := http.Post(base+"/v3alpha/kv/range", "application/json", strings.NewReader(`{"key":"`+b64("b")+`"}`)); err != nil || resp.StatusCode != 404 {
		t.Fatalf("/v3alpha: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}
	req, _ := http.NewRequest(http.MethodOptions, base+"/v3/kv/range", nil)
	req.Header.Set("Origin", "https://ui.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
		resp.Header.Get("Access-Control-Allow-Headers") != "accept, content-type, authorization" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
}
