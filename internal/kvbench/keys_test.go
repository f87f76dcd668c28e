package kvbench

import (
	"bytes"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestKeys: key i is the prefix and i big-endian, padded to the key size;
// the keys sort by number and lie in [Key(0), End()); a reused buffer
// gives the same keys.
func TestKeys(t *testing.T) {
	for _, k := range []*Keys{
		{Prefix: "kv/", Size: 12, Space: 1000},
		{Prefix: "p", Size: 3, Space: 1 << 16},
		{Size: 8, Space: 1 << 20},
	} {
		require.NoError(t, (&Keys{Prefix: k.Prefix, Size: k.Size, Space: k.Space, Dist: "uniform"}).Validate())
		var buf []byte
		prev := ""
		for _, i := range slices.Compact([]uint64{0, 1, 255, 256, 999, k.Space - 1}) {
			key := k.Key(i)
			require.Len(t, key, k.Size)
			require.True(t, len(k.Prefix) == 0 || key[:len(k.Prefix)] == k.Prefix)
			require.Greater(t, key, prev, "key %d sorts after the one before", i)
			if k.Prefix != "" {
				require.Less(t, key, k.End())
			}
			buf = k.AppendKey(buf[:0], i)
			require.True(t, bytes.Equal([]byte(key), buf), "key %d from a reused buffer", i)
			prev = key
		}
	}
}
