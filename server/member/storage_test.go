package member

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/pagefile"
)

// TestSnapshotCopies: a snapshot copy is a whole page file holding what
// was applied, and goes when closed; one a crash left behind goes at the
// next start, and nothing else in the directory does.
func TestSnapshotCopies(t *testing.T) {
	dir := t.TempDir()
	snapDir := filepath.Join(dir, "member", "snap")
	require.NoError(t, os.MkdirAll(snapDir, 0o700))
	left := filepath.Join(snapDir, snapshotCopyPrefix+"crashed"+snapshotCopySuffix)
	other := filepath.Join(snapDir, "snapshot-kept")
	for _, p := range []string{left, other} {
		require.NoError(t, os.WriteFile(p, []byte("x"), 0o600))
	}
	m, _ := openTest(t, dir, nil)
	require.NoFileExists(t, left)
	require.FileExists(t, other)

	_, err := put(ctxT(t), m, "k", "v")
	require.NoError(t, err)
	f, err := m.Snapshot()
	require.NoError(t, err)
	data := make([]byte, f.Size())
	_, err = f.ReadAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	names, err := m.fs.ReadDir(snapDir)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"db", "snapshot-kept"}, names)

	path := filepath.Join(t.TempDir(), "copy")
	require.NoError(t, os.WriteFile(path, data, 0o600))
	db, err := pagefile.Open(path, nil)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.Check())
	eng, err := engine.Open(db)
	require.NoError(t, err)
	defer eng.Close()
	res, err := eng.Range([]byte("k"), nil, engine.RangeOptions{})
	require.NoError(t, err)
	require.Len(t, res.KVs, 1)
	require.Equal(t, "v", string(res.KVs[0].Value))
}
