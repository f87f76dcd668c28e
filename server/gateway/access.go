package gateway

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
)

// accessControl is what etcd puts in front of a client port's HTTP side:
// "/v3beta/" paths are served as "/v3/"; a plain-HTTP request whose Host
// is not whitelisted is refused (421, against DNS rebinding); allowed
// origins get CORS headers; OPTIONS (a browser's preflight) is answered
// 200 with them alone. While certAuth holds (client certificates name
// users, and auth is on), a gateway call over TLS from a certificate with a
// common name is refused (400), as etcd refuses it.
func accessControl(cors, hosts []string, certAuth func() bool, h http.Handler) http.Handler {
	allowed := func(list []string, v string) bool {
		return len(list) == 0 || slices.Contains(list, "*") || slices.Contains(list, v)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v3beta/"); ok {
			r.URL.Path = "/v3/" + rest
			r.URL.RawPath = ""
		}
		if r.TLS == nil {
			host := r.Host
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			if !allowed(hosts, host) {
				http.Error(w, fmt.Sprintf("The Host header %q is not whitelisted: serve TLS, or add it with --host-whitelist. "+
					"Plain-HTTP requests are checked against DNS rebinding attacks (CVE-2018-5702).", host), http.StatusMisdirectedRequest)
				return
			}
		} else if strings.HasPrefix(r.URL.Path, "/v3/") && certAuth() {
			// The gateway's calls do not carry the client's certificate:
			// its common name would be ignored, so the request is refused
			// (as etcd refuses it).
			for _, chain := range r.TLS.VerifiedChains {
				if len(chain) > 0 && chain[0].Subject.CommonName != "" {
					http.Error(w, "CommonName of client sending a request against gateway will be ignored and not used as expected", http.StatusBadRequest)
					return
				}
			}
		}
		origin := "*"
		if !allowed(cors, "*") {
			origin = r.Header.Get("Origin")
		}
		if origin != "" && allowed(cors, origin) {
			hd := w.Header()
			hd.Add("Access-Control-Allow-Methods", "POST, GET, OPTIONS, PUT, DELETE")
			hd.Add("Access-Control-Allow-Origin", origin)
			hd.Add("Access-Control-Allow-Headers", "accept, content-type, authorization")
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		h.ServeHTTP(w, r)
	})
}
