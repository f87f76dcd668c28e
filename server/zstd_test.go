package server

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// countingConn counts the bytes read from the member.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// snapshotOver streams a snapshot over a fresh connection (with the
// given call options) and returns it, checked against its SHA-256
// trailer, and the bytes the connection read.
func snapshotOver(t *testing.T, url string, opts ...grpc.CallOption) ([]byte, int64) {
	t.Helper()
	var n atomic.Int64
	conn, err := grpc.NewClient(strings.TrimPrefix(url, "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(opts...),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			return countingConn{c, &n}, err
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := ctxT(t)
	// A compressed request too: the member reads it.
	if _, err := pb.NewKVClient(conn).Put(ctx, &pb.PutRequest{Key: []byte("over"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	rc, err := pb.NewMaintenanceClient(conn).Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return recvSnapshot(t, rc), n.Load()
}

// TestSnapshotZstd: a client that asks for zstd gets the Snapshot stream
// compressed on the wire (and the same file); one that does not, as is.
func TestSnapshotZstd(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	val := strings.Repeat("compressible ", 300)
	for i := range 200 {
		if _, err := c.Put(ctxT(t), fmt.Sprintf("k%03d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	plain, plainRead := snapshotOver(t, s.ClientURLs()[0])
	zst, zstRead := snapshotOver(t, s.ClientURLs()[0], grpc.UseCompressor("zstd"))
	t.Logf("snapshot %d bytes: read %d bytes plain, %d with zstd", len(plain), plainRead, zstRead)
	if plainRead < int64(len(plain)) {
		t.Fatalf("plain: read %d bytes for a %d-byte snapshot", plainRead, len(plain))
	}
	if zstRead*4 > int64(len(zst)) {
		t.Fatalf("zstd: read %d bytes for a %d-byte snapshot, want under a quarter", zstRead, len(zst))
	}
	checkPageFile(t, writeTemp(t, zst))
}
