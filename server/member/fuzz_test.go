package member

import (
	"encoding/binary"
	"hash/crc32"
	"testing"

	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/cairn-kv/cairn/raft"
)

// FuzzDecodeSnap feeds a .snap file's body, with its CRC made right so
// the decoding gets past it (and, as a second input, the bytes as they
// are): an error, or metadata that encodes back to the same bytes.
func FuzzDecodeSnap(f *testing.F) {
	for _, s := range []raft.SnapshotMeta{{}, {Term: 3, Index: 10, Voters: []uint64{1, 2, 3}}, {Term: 1, Index: 1 << 40, Voters: []uint64{7}, Learners: []uint64{9}}} {
		b := encodeSnap(s)
		f.Add(b[:len(b)-4], false)
	}
	f.Fuzz(func(t *testing.T, body []byte, raw bool) {
		b := body
		if !raw {
			b = binary.LittleEndian.AppendUint32(append([]byte(nil), body...), crc32.Checksum(body, snapCRC))
		}
		s, err := decodeSnap(b)
		if err != nil {
			return
		}
		require.Equal(t, b, encodeSnap(s))
	})
}

// FuzzEntryID reads the request id from arbitrary bytes as apply does
// (without decoding the rest): no panic; and for every request that
// decodes, its own encoding (as propose makes it) yields its header's id.
func FuzzEntryID(f *testing.F) {
	for _, r := range []*pb.InternalRaftRequest{
		{Header: &pb.RequestHeader{ID: 42}, Put: &pb.PutRequest{Key: []byte("k"), Value: []byte("v")}},
		{Header: &pb.RequestHeader{ID: 1 << 60, Username: "u", AuthRevision: 3}, Txn: &pb.TxnRequest{}},
		{Put: &pb.PutRequest{Key: []byte("no header")}},
		{Header: &pb.RequestHeader{}, Compaction: &pb.CompactionRequest{Revision: 5}},
	} {
		b, err := proto.Marshal(r)
		require.NoError(f, err)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entryID(data)
		var req pb.InternalRaftRequest
		if proto.Unmarshal(data, &req) != nil {
			return
		}
		b, err := proto.Marshal(&req)
		require.NoError(t, err)
		id, found := entryID(b)
		if want := req.GetHeader().GetID(); want != 0 {
			require.True(t, found)
			require.Equal(t, want, id)
		} else {
			require.False(t, found && id != 0)
		}
	})
}
