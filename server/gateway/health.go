package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/server/member"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// AddInfoHandlers adds what the client and metrics ports share: health,
// version, metrics, and pprof when enabled.
func AddInfoHandlers(mux *http.ServeMux, m *member.Member, enablePprof bool) {
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { health(w, r, m) })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) { readyz(w, r, m) })
	mux.HandleFunc("/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"etcdserver": member.Version, "etcdcluster": member.ClusterVersion})
	})
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry(), promhttp.HandlerOpts{}))
	if enablePprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
}

// healthTimeout bounds the read a health check makes.
const healthTimeout = 2 * time.Second

// health is etcd's /health: false with a reason when there is no leader,
// an alarm is raised (unless excluded with ?exclude=NOSPACE), or a read
// (linearizable unless ?serializable=true) fails.
func health(w http.ResponseWriter, r *http.Request, m *member.Member) {
	ok, reason := healthy(r, m)
	m.CountHealth(ok)
	code := http.StatusOK
	if !ok {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"health": fmt.Sprint(ok), "reason": reason})
}

func healthy(r *http.Request, m *member.Member) (bool, string) {
	excluded := map[string]bool{}
	for _, a := range r.URL.Query()["exclude"] {
		excluded[strings.ToUpper(a)] = true
	}
	for _, a := range m.Engine().Alarms() {
		name := pb.AlarmType(a.Type).String()
		if !excluded[name] {
			return false, "ALARM " + name
		}
	}
	if m.Lead() == 0 {
		return false, "RAFT NO LEADER"
	}
	if r.URL.Query().Get("serializable") != "true" {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		if err := m.LinearizableRead(ctx); err != nil {
			return false, "QGET ERROR:" + err.Error()
		}
	}
	return true, ""
}

// readyz is ok once the member serves: a leader, data readable, no
// corruption alarm.
func readyz(w http.ResponseWriter, r *http.Request, m *member.Member) {
	var out bytes.Buffer
	ok := true
	check := func(name string, err error) {
		if err != nil {
			ok = false
			fmt.Fprintf(&out, "[-]%s failed: %v\n", name, err)
		} else if r.URL.Query().Has("verbose") {
			fmt.Fprintf(&out, "[+]%s ok\n", name)
		}
	}
	var leaderErr error
	if m.Lead() == 0 {
		leaderErr = errors.New("no leader")
	}
	check("leader", leaderErr)
	ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
	defer cancel()
	check("linearizable_read", m.LinearizableRead(ctx))
	var corrupt error
	if m.Engine().Alarmed(engine.AlarmCorrupt) {
		corrupt = errors.New("alarm activated: CORRUPT")
	}
	check("data_corruption", corrupt)
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, out.String()+"readyz check failed\n")
		return
	}
	io.WriteString(w, out.String()+"ok\n")
}
