package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestBinaryFollowerCatchesUpBySnapshot runs three and five cairn
// processes that snapshot every 100 entries and keep 10 before each; a
// follower killed while the leader writes 400 keys is restarted and
// catches up by the leader's page file. In the crash cases its first
// restart dies (a failpoint panics) in the middle of installing it: after
// the .snap file, before the WAL marker; or after the marker, before the
// page file is replaced. The next restart must come up whole either way.
// Every member then serves every key, HashKV agrees, and all stop cleanly.
func TestBinaryFollowerCatchesUpBySnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	for _, tc := range []struct {
		name     string
		n        int
		crash    string // the failpoint the first restart dies at
		recovery string // what the next restart logs
	}{
		{"3", 3, "", ""},
		{"5", 5, "", ""},
		{"crash-before-marker", 3, "member/installBeforeMarker", "dropped a snapshot whose install a crash cut short"},
		{"crash-before-page-file", 3, "member/installBeforePageFile", "finishing the install of a snapshot a crash cut short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startProcCluster(t, tc.n, "--snapshot-count", "100", "--experimental-snapshot-catchup-entries", "10")
			cl, err := clientv3.New(clientv3.Config{Endpoints: c.clients, DialTimeout: 10 * time.Second})
			require.NoError(t, err)
			defer cl.Close()
			lead := c.leader(cl)
			f := (lead + 1) % tc.n
			c.kill(f)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for i := range 400 {
				_, err := cl.Put(ctx, fmt.Sprintf("k%03d", i), fmt.Sprint(i))
				require.NoError(t, err)
			}
			if tc.crash != "" {
				c.env[f] = []string{"CAIRN_FAILPOINTS=" + tc.crash + "=panic"}
				c.start(f, c.initial())
				select {
				case err := <-c.waits[f]:
					require.Error(t, err, "the member did not die at %s", tc.crash)
				case <-time.After(time.Minute):
					t.Fatalf("the member did not reach %s within a minute", tc.crash)
				}
				c.cmds[f] = nil
			}
			c.start(f, c.initial())
			one, err := clientv3.New(clientv3.Config{Endpoints: []string{c.clients[f]}, DialTimeout: 10 * time.Second})
			require.NoError(t, err)
			defer one.Close()
			resp, err := one.Get(ctx, "k", clientv3.WithPrefix())
			require.NoError(t, err)
			require.Len(t, resp.Kvs, 400)
			require.Contains(t, c.logs[f].String(), tc.recovery)
			if tc.crash == "" {
				// It caught up by snapshot, not from the log.
				resp, err := http.Get(c.clients[f] + "/metrics")
				require.NoError(t, err)
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				require.Regexp(t, `etcd_network_snapshot_receive_success\{From="[0-9a-f]+"\} [1-9]`, string(body))
			}
			for i, kv := range resp.Kvs {
				require.Equal(t, fmt.Sprint(i), string(kv.Value))
			}
			var hashes []uint32
			for _, u := range c.clients {
				h, err := cl.HashKV(ctx, u, resp.Header.Revision)
				require.NoError(t, err)
				hashes = append(hashes, h.Hash)
			}
			for i := range hashes {
				require.Equal(t, hashes[0], hashes[i], "HashKV at %d: %x", resp.Header.Revision, hashes)
			}
			for i, cmd := range c.cmds {
				require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
				require.NoError(t, <-c.waits[i], "member %d's exit after SIGTERM", i+1)
				c.cmds[i] = nil
			}
		})
	}
}
