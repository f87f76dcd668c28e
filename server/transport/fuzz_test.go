package transport

import (
	"bufio"
	"bytes"
	"hash/crc32"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzSnapshotData feeds arbitrary bytes to the receiver's side of a
// snapshot stream (chunks, zstd, trailer), seeded with streams the sender
// wrote. Reading must end, with an error or with the data whole: its size
// and CRC what the trailer says.
func FuzzSnapshotData(f *testing.F) {
	for _, data := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("page"), 5000), make([]byte, 3<<20)} {
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		require.NoError(f, writeSnapshotData(bw, nil, 0, func(w io.Writer) error {
			_, err := w.Write(data)
			return err
		}))
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		data, done, err := readSnapshotData(bufio.NewReader(bytes.NewReader(in)), nil, 0)
		if err != nil {
			return
		}
		defer done()
		crc := crc32.New(snapshotCRC)
		// (A small stream may stand for far more data: a run of one
		// byte compresses to nothing. The fuzzing reads 64 MiB of it.)
		n, err := io.Copy(crc, io.LimitReader(data, 64<<20))
		if err != nil || n == 64<<20 {
			return
		}
		require.True(t, data.done, "read to its end without its trailer checked")
		require.Equal(t, uint64(n), data.n)
		require.Equal(t, data.crc.Sum32(), crc.Sum32())
	})
}
