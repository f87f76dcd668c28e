package member

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Linearizable reads that arrive while a ReadIndex is under way share the
// next one, as etcd's do: ten reads held behind the raft lock take at most
// two rounds (the first read's, if the driver took it alone, and the
// rest's), and each sees the latest write.
func TestReadsShareReadIndex(t *testing.T) {
	m, _ := openTest(t, t.TempDir(), nil)
	ctx := ctxT(t)
	_, err := put(ctx, m, "k", "v")
	require.NoError(t, err)
	joins0 := readJoins(m)
	m.raftMu.Lock()
	seq0 := m.readSeq
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() {
			v, err := get(ctx, m, "k")
			if err == nil && string(v) != "v" {
				err = fmt.Errorf("read %q", v)
			}
			errs <- err
		}()
	}
	waitReadsJoined(t, m, joins0+n)
	m.raftMu.Unlock()
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	m.raftMu.Lock()
	rounds := m.readSeq - seq0
	m.raftMu.Unlock()
	if rounds < 1 || rounds > 2 {
		t.Fatalf("%d reads took %d ReadIndex rounds, want 1 or 2", n, rounds)
	}
}

// TestReadsEndAtStop: linearizable reads waiting for their round when the
// member stops are answered (served, or "server stopped"), and a read
// after the stop is refused at once.
func TestReadsEndAtStop(t *testing.T) {
	m, _ := openTest(t, t.TempDir(), nil)
	ctx := ctxT(t)
	joins0 := readJoins(m)
	m.raftMu.Lock()
	const n = 10
	errs := make(chan error, n)
	for range n {
		go func() { errs <- m.LinearizableRead(ctx) }()
	}
	waitReadsJoined(t, m, joins0+n)
	stopped := make(chan struct{})
	go func() { m.Stop(); close(stopped) }()
	<-m.stopping
	m.raftMu.Unlock()
	for range n {
		if err := <-errs; err != nil && !errors.Is(err, rpctypes.ErrGRPCStopped) {
			t.Fatalf("read in flight at stop: %v, want success or %v", err, rpctypes.ErrGRPCStopped)
		}
	}
	<-stopped
	if err := m.LinearizableRead(ctx); !errors.Is(err, rpctypes.ErrGRPCStopped) {
		t.Fatalf("read after stop: %v, want %v", err, rpctypes.ErrGRPCStopped)
	}
}

func readJoins(m *Member) uint64 {
	m.readMu.Lock()
	defer m.readMu.Unlock()
	return m.readJoins
}

// waitReadsJoined waits, with raftMu held, until the member's reads have
// joined a round want times in all; it releases raftMu before failing.
func waitReadsJoined(t *testing.T, m *Member, want uint64) {
	t.Helper()
	if !eventually(func() bool { return readJoins(m) == want }) {
		m.raftMu.Unlock()
		t.Fatalf("reads joined a round %d times, want %d", readJoins(m), want)
	}
}

// TestReadsEndAtLeaderChange: a read waiting for its ReadIndex when the
// leader changes ends with etcd's "leader changed" (codes.Unavailable,
// which clients retry) rather than waiting out its timeout.
func TestReadsEndAtLeaderChange(t *testing.T) {
	m, _ := openTest(t, t.TempDir(), nil)
	m.raftMu.Lock()
	read := &readRound{done: make(chan struct{}), deadline: time.Now().Add(time.Hour)}
	m.reads[[8]byte{0xfe}] = read
	m.leaderChanged(0)
	m.leaderChanged(m.id) // back, for the rest of the test
	m.raftMu.Unlock()
	<-read.done
	require.Equal(t, rpctypes.ErrGRPCLeaderChanged, read.err)
	st, _ := status.FromError(rpctypes.ErrGRPCLeaderChanged)
	require.Equal(t, codes.Unavailable, st.Code())
	_, err := get(ctxT(t), m, "k")
	require.NoError(t, err)
}
