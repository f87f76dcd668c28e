package member

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Proposals and ReadIndex reads still waiting at their deadline are answered
// with etcd's "request timed out" (codes.Unavailable, which clientv3 does not
// resend for a put), counted as failed proposals; a timed-out proposal's
// entry may still apply.
func TestRequestTimeout(t *testing.T) {
	m, _ := openTest(t, t.TempDir(), nil)
	ctx := ctxT(t)
	_, err := put(ctx, m, "warm", "v")
	require.NoError(t, err)
	failed := counterValue(m.metrics.proposalsFailed)

	// With the raft lock held, the first put waits for it and the second
	// waits for the first.
	m.raftMu.Lock()
	errs := make(chan error, 2)
	for i, k := range []string{"a", "b"} {
		go func() {
			_, err := put(ctx, m, k, "v")
			errs <- err
		}()
		if !eventually(func() bool { return m.pending() == i+1 }) {
			m.raftMu.Unlock()
			t.Fatalf("%d proposals waiting, want %d", m.pending(), i+1)
		}
	}
	m.expireProposals(time.Now()) // before the deadline: nothing happens
	if n := m.pending(); n != 2 {
		m.raftMu.Unlock()
		t.Fatalf("%d proposals waiting after an early expiry, want 2", n)
	}
	m.expireProposals(time.Now().Add(requestTimeout + time.Second))

	// A read waiting for its ReadIndex past its deadline.
	read := &readRound{done: make(chan struct{}), deadline: time.Now().Add(-time.Second)}
	m.reads[[8]byte{0xff}] = read
	m.expireReads(time.Now())
	m.raftMu.Unlock()
	if <-read.done; read.err != rpctypes.ErrGRPCTimeout {
		t.Fatalf("expired read: %v", read.err)
	}

	for range 2 {
		if err := <-errs; err != rpctypes.ErrGRPCTimeout {
			t.Fatalf("expired put: %v, want %v", err, rpctypes.ErrGRPCTimeout)
		}
	}
	if st, _ := status.FromError(rpctypes.ErrGRPCTimeout); st.Code() != codes.Unavailable {
		t.Fatalf("timeout is %v", st.Code())
	}
	if got := counterValue(m.metrics.proposalsFailed) - failed; got != 2 {
		t.Fatalf("%v proposals counted failed, want 2", got)
	}
	// The entries were proposed all the same, and applied.
	for _, k := range []string{"a", "b"} {
		if v, err := get(ctx, m, k); err != nil || string(v) != "v" {
			t.Fatalf("get %s after its put timed out: %q %v", k, v, err)
		}
	}
	if _, err := put(ctx, m, "after", "v"); err != nil {
		t.Fatalf("put after the timeouts: %v", err)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}
