package server

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestExtensiveMetrics: --metrics=extensive adds grpc_server_handling_seconds
// for each method called; basic, the default, does not.
func TestExtensiveMetrics(t *testing.T) {
	for _, extensive := range []bool{true, false} {
		s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "m"), func(cfg *Config) { cfg.ExtensiveMetrics = extensive })
		_, err := c.Put(ctxT(t), "k", "v")
		require.NoError(t, err)
		resp, err := http.Get(s.ClientURLs()[0] + "/metrics")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		has := func(s string) bool { return regexpContains(string(body), s) }
		require.Equal(t, extensive, has(`grpc_server_handling_seconds_bucket\{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary",le="0.005"\}`))
		require.True(t, has(`grpc_server_handled_total\{grpc_code="OK",grpc_method="Put"`))
	}
}

// regexpContains reports whether s holds a match of expr.
func regexpContains(s, expr string) bool { return regexp.MustCompile(expr).MatchString(s) }

// etcdMetrics is etcd 3.5's /metrics on a single member after a few
// requests: the families cairn must serve, with their types, labels and
// buckets.
const etcdMetrics = "testdata/etcd-3.5-metrics.txt"

// TestEveryEtcdMetricFamily: a member serves etcd 3.5's metric families
// by the same names and types, with the same labels and buckets, after
// the same kinds of requests.
func TestEveryEtcdMetricFamily(t *testing.T) {
	f, err := os.Open(etcdMetrics)
	require.NoError(t, err)
	defer f.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	etcd, err := parser.TextToMetricFamilies(f)
	require.NoError(t, err)

	s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "m"), nil)
	ctx := ctxT(t)
	lease, err := c.Grant(ctx, 60)
	require.NoError(t, err)
	_, err = c.KeepAliveOnce(ctx, lease.ID)
	require.NoError(t, err)
	w := c.Watch(clientv3.WithRequireLeader(ctx), "k")
	resp, err := c.Put(ctx, "k", "v", clientv3.WithLease(lease.ID))
	require.NoError(t, err)
	<-w
	_, err = c.Txn(ctx).If(clientv3.Compare(clientv3.Version("k"), ">", 0)).Then(clientv3.OpGet("k"), clientv3.OpPut("k2", "v")).Commit()
	require.NoError(t, err)
	_, err = c.Delete(ctx, "k2")
	require.NoError(t, err)
	_, err = c.Compact(ctx, resp.Header.Revision)
	require.NoError(t, err)
	_, err = c.HashKV(ctx, s.ClientURLs()[0], 0)
	require.NoError(t, err)
	_, err = c.Defragment(ctx, s.ClientURLs()[0])
	require.NoError(t, err)
	hr, err := http.Get(s.ClientURLs()[0] + "/health")
	require.NoError(t, err)
	hr.Body.Close()

	got, err := s.m.Registry().Gather()
	require.NoError(t, err)
	ours := map[string]*dto.MetricFamily{}
	for _, mf := range got {
		ours[mf.GetName()] = mf
	}
	for name, want := range etcd {
		if strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") || strings.HasPrefix(name, "promhttp_") {
			continue
		}
		mf, ok := ours[name]
		if !assertFamily(t, ok, "etcd's %s is missing", name) {
			continue
		}
		require.Equal(t, want.GetType(), mf.GetType(), "%s's type", name)
		if len(want.Metric) == 0 || len(mf.Metric) == 0 {
			continue
		}
		require.Equal(t, labelNames(want.Metric[0]), labelNames(mf.Metric[0]), "%s's labels", name)
		if want.GetType() == dto.MetricType_HISTOGRAM {
			require.Equal(t, bounds(want.Metric[0]), bounds(mf.Metric[0]), "%s's buckets", name)
		}
	}
}

func assertFamily(t *testing.T, ok bool, format string, args ...any) bool {
	t.Helper()
	if !ok {
		t.Errorf(format, args...)
	}
	return ok
}

func labelNames(m *dto.Metric) []string {
	var names []string
	for _, l := range m.GetLabel() {
		names = append(names, l.GetName())
	}
	slices.Sort(names)
	return names
}

func bounds(m *dto.Metric) []float64 {
	var b []float64
	for _, bk := range m.GetHistogram().GetBucket() {
		if !math.IsInf(bk.GetUpperBound(), 1) { // (the text form writes +Inf; a gathered one leaves it implied)
			b = append(b, bk.GetUpperBound())
		}
	}
	return b
}

// gatherValue is the value of name's series whose labels include want
// (-1 if there is none).
func gatherValue(t *testing.T, s *Server, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := s.m.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.Metric {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue series
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return -1
}

// TestPeerNetworkMetrics: in a cluster, etcd's etcd_network_peer_* count
// the bytes each member sends to and receives from each peer, its round
// trips, the peers connected, and a peer lost.
func TestPeerNetworkMetrics(t *testing.T) {
	c := startCluster(t, 3)
	lead := c.leader()
	_, err := c.clients[lead].Put(ctxT(t), "k", "v")
	require.NoError(t, err)
	s, f := c.servers[lead], (lead+1)%3
	id := fmt.Sprintf("%x", c.servers[f].m.ID())
	local := fmt.Sprintf("%x", s.m.ID())
	require.Positive(t, gatherValue(t, s, "etcd_network_peer_sent_bytes_total", map[string]string{"To": id}))
	require.Positive(t, gatherValue(t, s, "etcd_network_peer_received_bytes_total", map[string]string{"From": id}))
	require.True(t, eventually(func() bool {
		return gatherValue(t, s, "etcd_network_active_peers", map[string]string{"Local": local, "Remote": id}) == 1
	}), "the follower's stream is not counted active")
	// The prober measures each peer's round trip every 4 s.
	require.True(t, eventually(func() bool { return rttSamples(t, s, id) > 0 }), "no round trip to the follower measured")
	c.stop(f)
	require.True(t, eventually(func() bool {
		return gatherValue(t, s, "etcd_network_disconnected_peers_total", map[string]string{"Local": local, "Remote": id}) >= 1 &&
			gatherValue(t, s, "etcd_network_active_peers", map[string]string{"Local": local, "Remote": id}) == 0
	}), "the stopped follower is not counted disconnected")
}

// rttSamples is how many round trips to peer the member measured.
func rttSamples(t *testing.T, s *Server, peer string) uint64 {
	mfs, err := s.m.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "etcd_network_peer_round_trip_time_seconds" {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.GetLabel() {
				if l.GetName() == "To" && l.GetValue() == peer {
					return m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}
