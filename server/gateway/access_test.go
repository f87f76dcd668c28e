package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestAccessControl: CORS headers for allowed origins only, and a Host
// outside --host-whitelist refused with 421 (DNS rebinding).
func TestAccessControl(t *testing.T) {
	h := accessControl([]string{"https://ui.example"}, []string{"localhost", "127.0.0.1"}, func() bool { return false }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Path)
	}))
	serve := func(host, origin string) *http.Response {
		r, _ := http.NewRequest(http.MethodPost, "http://"+host+"/v3/kv/range", nil)
		r.Header.Set("Origin", origin)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Result()
	}
	if r := serve("localhost:2379", "https://ui.example"); r.StatusCode != 200 || r.Header.Get("Access-Control-Allow-Origin") != "https://ui.example" {
		t.Fatalf("allowed origin: %d %v", r.StatusCode, r.Header)
	}
	if r := serve("127.0.0.1:2379", "https://evil.example"); r.StatusCode != 200 || r.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("origin not allowed: %d %v", r.StatusCode, r.Header)
	}
	if r := serve("rebound.example:2379", ""); r.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("host not whitelisted: %d", r.StatusCode)
	}
}
