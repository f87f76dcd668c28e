package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/server/member"
)

// startMember starts a member on 127.0.0.1 with a free port over dir, and
// a clientv3 client of it; both stop when the test ends (or on stop()).
// Once the test is over, the data directory is opened again and checked
// whole (page file and engine).
func startMember(t *testing.T, dir string) (*Server, *clientv3.Client, func()) {
	return startMemberWith(t, dir, nil)
}

// startMemberWith is startMember with the configuration changed by set.
func startMemberWith(t *testing.T, dir string, set func(*Config)) (*Server, *clientv3.Client, func()) {
	t.Helper()
	s, c, err := openMember(dir, set)
	if err != nil {
		t.Fatal(err)
	}
	return s, c, memberCleanup(t, dir, s, c)
}

// openMember starts a member as startMemberWith does, from any goroutine;
// memberCleanup then registers its stop.
func openMember(dir string, set func(*Config)) (*Server, *clientv3.Client, error) {
	cfg := DefaultConfig()
	cfg.DataDir = dir
	cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
	cfg.ListenPeerURLs = []string{"http://127.0.0.1:0"}
	cfg.HeartbeatInterval, cfg.ElectionTimeout = 10*time.Millisecond, 100*time.Millisecond
	if set != nil {
		set(&cfg)
	}
	s, err := Start(cfg)
	if err != nil {
		return nil, nil, err
	}
	var c *clientv3.Client
	if strings.HasPrefix(s.ClientURLs()[0], "http://") {
		// (A test serving https makes its own clients.)
		c, err = clientv3.New(clientv3.Config{Endpoints: s.ClientURLs(), DialTimeout: 5 * time.Second})
		if err != nil {
			s.Stop()
			return nil, nil, err
		}
	}
	return s, c, nil
}

// memberCleanup returns the stop of a member openMember started, and
// registers it (then a check of the data directory) for the test's end.
func memberCleanup(t *testing.T, dir string, s *Server, c *clientv3.Client) func() {
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			if c != nil {
				c.Close()
			}
			if err := s.m.Check(); err != nil {
				t.Error(err)
			}
			s.Stop()
		}
	}
	t.Cleanup(func() {
		stop()
		checkDataDir(t, dir)
	})
	return stop
}

// checkDataDir checks a stopped member's data directory whole.
func checkDataDir(t *testing.T, dir string) {
	t.Helper()
	if err := member.CheckDataDir(dir); err != nil {
		t.Fatal(err)
	}
}

// rawConn is a plain gRPC connection to a member, without clientv3's
// interceptors (which retry some refusals, refreshing tokens).
func rawConn(t *testing.T, url string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// recvSnapshot reads a Snapshot stream whole: the chunks, then the SHA-256
// of what came before, which it checks.
func recvSnapshot(t *testing.T, rc pb.Maintenance_SnapshotClient) []byte {
	t.Helper()
	var data, last []byte
	for {
		r, err := rc.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data = append(data, last...)
		last = r.Blob
	}
	if sum := sha256.Sum256(data); !bytes.Equal(sum[:], last) {
		t.Fatalf("snapshot trailer %x, data hashes to %x", last, sum)
	}
	return data
}

// writeTemp writes data to a file of its own and returns its path.
func writeTemp(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snap.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// eventually polls cond every millisecond and reports whether it held
// within 10 s (a bound on the loop, not a timing assertion).
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// checkPageFile opens a page file holding a store and checks both.
func checkPageFile(t *testing.T, path string) *engine.Store {
	t.Helper()
	db, err := pagefile.Open(path, nil)
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Check(); err != nil {
		t.Fatalf("page file check: %v", err)
	}
	eng, err := engine.Open(db)
	if err != nil {
		t.Fatalf("opening the engine: %v", err)
	}
	t.Cleanup(func() { eng.Close() })
	if err := eng.Check(); err != nil {
		t.Fatalf("engine check: %v", err)
	}
	return eng
}
