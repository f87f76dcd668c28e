package pagefile

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// lockedKB is this process's locked memory (VmLck), in KiB.
func lockedKB(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	require.NoError(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmLck:") {
			var kb int64
			_, err := fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmLck:")), "%d kB", &kb)
			require.NoError(t, err)
			return kb
		}
	}
	t.Skip("no VmLck in /proc/self/status")
	return 0
}

// TestMlock: with Mlock the file's pages are locked in memory as it is
// opened and as it grows; closing unlocks them.
func TestMlock(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("locking megabytes takes root (RLIMIT_MEMLOCK)")
	}
	before := lockedKB(t)
	db := openTest(t, &Options{Mlock: true})
	require.GreaterOrEqual(t, lockedKB(t)-before, db.fileSize/1024, "locked at open")
	err := db.Update(func(tx *Tx) error {
		b, err := tx.CreateBucket([]byte("b"))
		if err != nil {
			return err
		}
		for i := range 64 {
			if err := b.Put([]byte{byte(i)}, bytes.Repeat([]byte{1}, 64<<10)); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, db.fileSize, int64(4<<20))
	require.GreaterOrEqual(t, lockedKB(t)-before, db.fileSize/1024, "locked as it grew")
	checkAndClose(t, db)
	require.Equal(t, before, lockedKB(t), "unlocked at close")
}
