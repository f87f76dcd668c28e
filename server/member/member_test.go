package member

import (
	"context"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/engine"
)

// testConfig is a member named "m" over dir with quick raft timings.
func testConfig(dir string) Config {
	return Config{
		Name: "m", DataDir: dir,
		InitialAdvertisePeerURLs: []string{"http://127.0.0.1:2380"}, InitialClusterToken: "test",
		HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		MaxRequestBytes: 1536 * 1024, MaxTxnOps: 128, SnapshotCount: 100000, MaxWALs: 5, MaxSnapshots: 5,
	}
}

// openTest opens a member over dir (changed by set) and waits until it
// leads and has published its attributes (so no proposal of its own is
// pending). It stops with the test, or earlier on stop(), and is checked
// then: the hand-offs between proposers, raft and apply (Check) while it
// runs, and the data directory whole (CheckDataDir) once it has stopped.
func openTest(t *testing.T, dir string, set func(*Config)) (*Member, func()) {
	t.Helper()
	cfg := testConfig(dir)
	if set != nil {
		set(&cfg)
	}
	m, err := Open(cfg)
	require.NoError(t, err)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		if err := m.Check(); err != nil {
			t.Error(err)
		}
		m.Stop()
		if err := CheckDataDir(dir); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(stop)
	select {
	case <-m.published: // a leader, and publish's proposal is answered
	case <-time.After(10 * time.Second):
		t.Fatal("no leader, or attributes not published, after 10 s")
	}
	return m, stop
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// put proposes a put of k and returns its answer.
func put(ctx context.Context, m *Member, k, v string) (*pb.PutResponse, error) {
	resp, err := m.Propose(ctx, &pb.InternalRaftRequest{Put: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}})
	if err != nil {
		return nil, err
	}
	return resp.(*pb.PutResponse), nil
}

// get reads k linearizably; the value is nil if k is absent.
func get(ctx context.Context, m *Member, k string) ([]byte, error) {
	if err := m.LinearizableRead(ctx); err != nil {
		return nil, err
	}
	res, err := m.Engine().Range([]byte(k), nil, engine.RangeOptions{})
	if err != nil || len(res.KVs) == 0 {
		return nil, err
	}
	return res.KVs[0].Value, nil
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
