package server

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/internal/vfs"
)

// TestStorageFailureStops: a WAL write that fails, or a page-file commit
// that fails, stops the whole server: the write in flight is not
// acknowledged, Failed is closed with the error, and nothing is served
// after, not even a serializable read.
func TestStorageFailureStops(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(t *testing.T, efs *vfs.ErrorFS)
	}{
		{"wal write", func(_ *testing.T, efs *vfs.ErrorFS) { efs.Inject(vfs.FaultWrite, 1, vfs.ErrInjected, true) }},
		{"page file commit", func(t *testing.T, _ *vfs.ErrorFS) {
			failpoint.Enable("pagefile/beforeDataSync", func() error { return vfs.ErrInjected })
			t.Cleanup(func() { failpoint.Disable("pagefile/beforeDataSync") })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			efs := vfs.NewErrorFS(vfs.Default)
			s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "data"), func(cfg *Config) { cfg.FS = efs })
			_, err := c.Put(ctxT(t), "before", "v")
			require.NoError(t, err)

			tc.fail(t, efs)
			// Puts until one fails (a page-file commit fails on the
			// applier's next one, after the puts that filled it; it
			// commits every 100 ms). A put sent as the server stops may
			// wait for a server until its context ends.
			for deadline := time.Now().Add(10 * time.Second); err == nil && time.Now().Before(deadline); {
				ctx, cancel := context.WithTimeout(ctxT(t), 2*time.Second)
				_, err = c.Put(ctx, "after", "v")
				cancel()
			}
			require.Error(t, err, "puts after the storage failed")
			select {
			case <-s.Failed():
			case <-time.After(10 * time.Second):
				t.Fatal("the server did not stop within 10 s of its member failing")
			}
			require.True(t, errors.Is(s.Err(), vfs.ErrInjected), "Err: %v", s.Err())
			// (clientv3 retries a read that finds no server until its
			// context ends.)
			ctx, cancel := context.WithTimeout(ctxT(t), time.Second)
			defer cancel()
			_, err = c.Get(ctx, "before", clientv3.WithSerializable())
			require.Error(t, err, "a serializable read after the failure")
		})
	}
}
