package jepsen

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/invariants"
	"github.com/cairn-kv/cairn/internal/testseed"
)

var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// cairnBinary builds cmd/cairn once per test run (with -tags invariants
// when the test is built with them).
func cairnBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "jepsen-bin")
		if built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "cairn")
		args := []string{"build", "-o", built.path}
		if invariants.Enabled {
			// The invariants pass runs the harness against a binary
			// with the expensive assertions on too.
			args = append(args, "-tags", "invariants")
		}
		out, err := exec.Command("go", append(args, "github.com/cairn-kv/cairn/cmd/cairn")...).CombinedOutput()
		if err != nil {
			built.err = err
			t.Logf("go build: %s", out)
		}
	})
	require.NoError(t, built.err)
	return built.path
}

// runDir is a run's folder: kept, and named, if the test fails.
func runDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "jepsen-"+strings.ReplaceAll(t.Name(), "/", "-"))
	require.NoError(t, err)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the run's folder is kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

func shortConfig(t *testing.T, workloads []string, nemeses []string, runTime time.Duration) Config {
	return Config{
		Cluster: ClusterConfig{
			Target:  Target{Name: "cairn", Binary: cairnBinary(t)},
			Members: 3,
			Dir:     runDir(t),
			Flags:   []string{"--snapshot-count=500"},
		},
		Workloads:    workloads,
		Schedule:     Schedule{Nemeses: nemeses, Interval: 2 * time.Second, Duration: 4 * time.Second},
		Time:         runTime,
		Seed:         testseed.Seed(t),
		CheckTimeout: time.Minute,
		Log:          t.Logf,
	}
}

// TestShortRun is the harness's run in CI: three members under kills,
// partitions and pauses, with the register, bank and watch workloads
// together, must show no anomaly, and write the run's folder.
func TestShortRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster for a minute")
	}
	cfg := shortConfig(t, []string{"register", "bank", "watch"},
		[]string{"kill", "partition-halves", "pause-leader", "partition-leader", "kill-leader", "pause"}, time.Minute)
	out, err := Execute(t.Context(), cfg)
	require.NoError(t, err)
	require.True(t, out.Valid, Verdict(out))
	require.NotEmpty(t, out.Faults)
	for _, f := range out.Faults {
		require.Empty(t, f.Err, "nemesis %s: %s", f.Nemesis, f.What)
	}
	for _, name := range []string{"history.jsonl", "timeline.json", "results.json", "report.html", "m1/log"} {
		st, err := os.Stat(filepath.Join(cfg.Cluster.Dir, name))
		require.NoError(t, err)
		require.NotZero(t, st.Size(), name)
	}
	for _, r := range out.Results {
		require.NotZero(t, r.OK, "%s: nothing succeeded", r.Workload)
	}
}

// TestCanaries: each bug switched on in cairn on purpose is caught by the
// checker that is there to catch it. A checker that let its canary
// through would be trusted for nothing.
func TestCanaries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts clusters")
	}
	for _, tc := range []struct {
		name      string
		failpoint string
		workload  string
		nemeses   []string
	}{
		// A put answered before it is durable anywhere: reads (and a
		// leader cut off) show it was not done.
		{"ack-before-sync", "member/canaryAckBeforeSync=error", "register", []string{"partition-leader", "kill-leader"}},
		// Reads from a member's own state: a follower behind, or a
		// leader cut off, answers stale.
		{"read-without-read-index", "member/canaryReadWithoutReadIndex=error", "register", []string{"partition-leader"}},
		// One watch event not sent, on each member, once.
		{"drop-watch-event", "v3rpc/canaryDropWatchEvent=20*off->error", "watch", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := shortConfig(t, []string{tc.workload}, tc.nemeses, 20*time.Second)
			cfg.Cluster.Env = []string{"CAIRN_FAILPOINTS=" + tc.failpoint}
			out, err := Execute(t.Context(), cfg)
			require.NoError(t, err)
			require.False(t, out.Valid, "the canary %s was not caught: %s", tc.failpoint, Verdict(out))
			for _, r := range out.Results {
				if r.Workload == tc.workload {
					require.False(t, r.Valid, "the %s checker did not catch %s", tc.workload, tc.failpoint)
					t.Logf("caught: %v", r.Anomalies)
				}
			}
		})
	}
}
