package server

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/testlog"
)

// TestEtcdLogLines: the lines operators and tools watch etcd's logs for
// are written in etcd's words: how clients are served and "ready to serve
// client requests", the raft leader lines, the peer streams established,
// a compaction finished.
func TestEtcdLogLines(t *testing.T) {
	var logs [3]testlog.Buffer
	c := startClusterWith(t, 3, "http", func(cfg *Config) {
		cfg.Logger = slog.New(slog.NewJSONHandler(&logs[int(cfg.Name[1]-'1')], nil))
		cfg.CompactionBatchLimit, cfg.CompactionSleepInterval = 1, time.Millisecond
	})
	lead := c.leader()
	var rev int64
	for i := range 10 {
		resp, err := c.clients[lead].Put(ctxT(t), fmt.Sprint("k", i%2), "v")
		require.NoError(t, err)
		rev = resp.Header.Revision
	}
	_, err := c.clients[lead].Compact(ctxT(t), rev, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	for i := range logs {
		id := fmt.Sprintf("%x", c.servers[i].m.ID())
		out := logs[i].String()
		for _, want := range []string{
			`"msg":"serving client traffic insecurely; this is strongly discouraged!","traffic":"grpc+http","address":"127.0.0.1:`,
			`"msg":"ready to serve client requests"`,
			`"msg":"established TCP streaming connection with remote peer","stream-writer-type":"`,
			fmt.Sprintf(`"msg":"raft.node: %s elected leader %x at term `, id, c.servers[lead].m.ID()),
			`"msg":"finished scheduled compaction","compact-revision":` + fmt.Sprint(rev),
		} {
			// (A follower finishes the compaction on its own time.)
			require.True(t, eventually(func() bool { return strings.Contains(logs[i].String(), want) }), "member %d's log lacks %s:\n%s", i+1, want, out)
		}
	}
}
