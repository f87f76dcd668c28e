// Package testmember starts a cairn member in the test's process, on
// 127.0.0.1 with ports the kernel picks, for the tests of the commands
// and tools built on the server.
package testmember

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/server"
)

// Start starts a member of its own cluster in a temporary data directory
// (with set changing its configuration, if not nil) and stops it when the
// test ends. Its heartbeat is 10 ms and its election timeout 100 ms, so
// that it leads at once.
func Start(t testing.TB, set func(*server.Config)) *server.Server {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.ListenPeerURLs = []string{"http://127.0.0.1:0"}
	cfg.HeartbeatInterval, cfg.ElectionTimeout = 10*time.Millisecond, 100*time.Millisecond
	if set != nil {
		set(&cfg)
	}
	s, err := server.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(s.Stop)
	return s
}
