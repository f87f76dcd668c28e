package member

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testlog"
	"github.com/cairn-kv/cairn/raft"
)

// metricValue reads a counter of the member's registry.
func metricValue(t *testing.T, m *Member, name string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestLateHeartbeatAndSlowSync: a leader's heartbeat to a follower more
// than two intervals after the one before is said as etcd says it and
// counted (etcd_server_heartbeat_send_failures_total); one on time is
// not. A WAL sync over a second is said ("slow fdatasync").
func TestLateHeartbeatAndSlowSync(t *testing.T) {
	var logs testlog.Buffer
	m, stop := openTest(t, t.TempDir(), func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	defer stop()
	m.raftMu.Lock()
	hb := m.cfg.HeartbeatInterval
	m.heartbeatsOnTime([]raft.Message{{Type: raft.MsgHeartbeat, To: 7}})
	m.lastHeartbeat[7] = time.Now().Add(-hb) // on time
	m.heartbeatsOnTime([]raft.Message{{Type: raft.MsgHeartbeat, To: 7}})
	require.Zero(t, metricValue(t, m, "etcd_server_heartbeat_send_failures_total"))
	m.lastHeartbeat[7] = time.Now().Add(-3 * hb) // late
	m.heartbeatsOnTime([]raft.Message{{Type: raft.MsgHeartbeat, To: 7}, {Type: raft.MsgApp, To: 7}})
	m.raftMu.Unlock()
	require.Equal(t, 1.0, metricValue(t, m, "etcd_server_heartbeat_send_failures_total"))
	require.Contains(t, logs.String(), `"msg":"leader failed to send out heartbeat on time; took too long, leader is overloaded likely from slow disk","to":"7"`)

	m.walSynced(1500 * time.Millisecond)
	require.Contains(t, logs.String(), `"msg":"slow fdatasync","took":"1.5s","expected-duration":"1s"`)
}
