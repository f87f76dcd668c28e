package kvbench

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/testmember"
	"github.com/cairn-kv/cairn/internal/testseed"
)

// member starts a cairn member on 127.0.0.1 for the test, and a client of
// it; both stop at the test's end.
func member(t *testing.T) (string, *clientv3.Client) {
	t.Helper()
	ep := testmember.Start(t, nil).ClientURLs()[0]
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return ep, c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// revision returns the member's revision.
func revision(t *testing.T, c *clientv3.Client) int64 {
	resp, err := c.Get(ctxT(t), "\x00", clientv3.WithCountOnly())
	require.NoError(t, err)
	return resp.Header.Revision
}

// keysIn returns how many keys of the space the member holds.
func keysIn(t *testing.T, c *clientv3.Client, k *Keys) int64 {
	resp, err := c.Get(ctxT(t), k.Key(0), clientv3.WithRange(k.End()), clientv3.WithCountOnly())
	require.NoError(t, err)
	return resp.Count
}

// bench runs workload name against ep: total requests from 4 clients over
// 2 connections, on 50 keys taken in sequence, 16-byte values, 2 watchers.
func bench(t *testing.T, ep, name string, total uint64, change func(*Options)) (*Report, *Result) {
	t.Helper()
	w, err := Lookup(name)
	require.NoError(t, err)
	seed := uint64(testseed.Seed(t))
	o := Options{
		Workload: w, Endpoints: []string{ep}, Conns: 2, Clients: 4, DialTimeout: 5 * time.Second,
		Run: RunConfig{Total: total},
		Env: Env{Keys: &Keys{Prefix: "kv/", Size: 12, Space: 50, Dist: "sequential"}, ValSize: 16, Seed: seed,
			Limit: 10, ReadRatio: 0.5, Watchers: 2, LeaseTTL: 30, PageSize: 7},
	}
	if change != nil {
		change(&o)
	}
	rep, res, err := Bench(ctxT(t), o)
	require.NoError(t, err)
	require.Equal(t, total, res.Requests, "every request counted")
	require.Equal(t, total, rep.Requests)
	var requests uint64
	for _, k := range res.Kinds {
		if !k.Event {
			requests += k.Count() + k.Failed()
			require.Equal(t, k.Count(), k.Hist.Count(), "%s: every request timed", k.Kind)
		}
	}
	require.Equal(t, total, requests, "the kinds add up to the requests")
	require.Positive(t, rep.ClientCPU, "the client's CPU a request")
	// The member runs in this process; its /metrics counts CPU in clock
	// ticks, so a short run may read none: it must be read, not be positive.
	require.NotNil(t, rep.ServerCPU, "the server's CPU a request, from its /metrics")
	require.GreaterOrEqual(t, *rep.ServerCPU, 0.0)
	return rep, res
}

// count returns the successful requests (or events) of kind.
func count(res *Result, kind string) uint64 {
	for _, k := range res.Kinds {
		if k.Kind == kind {
			return k.Count()
		}
	}
	return 0
}

func kindNames(res *Result) []string {
	var out []string
	for _, k := range res.Kinds {
		out = append(out, k.Kind)
	}
	return out
}

// TestWorkloads runs each workload for a bounded count against a member
// and checks what it did there.
func TestWorkloads(t *testing.T) {
	for _, tr := range Transports {
		t.Run(tr, func(t *testing.T) { testWorkloads(t, tr) })
	}
}

func testWorkloads(t *testing.T, transport string) {
	ep, c := member(t)
	keys := &Keys{Prefix: "kv/", Size: 12, Space: 50, Dist: "sequential"}
	bench := func(t *testing.T, ep, name string, total uint64, change func(*Options)) (*Report, *Result) {
		return bench(t, ep, name, total, func(o *Options) {
			o.Transport = transport
			if change != nil {
				change(o)
			}
		})
	}

	t.Run("put", func(t *testing.T) {
		rev := revision(t, c)
		_, res := bench(t, ep, "put", 200, nil)
		require.Equal(t, []string{"put"}, kindNames(res))
		require.Equal(t, uint64(200), count(res, "put"))
		require.Equal(t, rev+200, revision(t, c))
		require.Equal(t, int64(50), keysIn(t, c, keys), "sequential keys: the whole space")
	})
	t.Run("get", func(t *testing.T) {
		rev := revision(t, c)
		_, res := bench(t, ep, "get", 200, func(o *Options) { o.Env.Serializable = true })
		require.Equal(t, []string{"get"}, kindNames(res))
		require.Equal(t, rev+50, revision(t, c), "the preload's puts only")
	})
	t.Run("range", func(t *testing.T) {
		_, res := bench(t, ep, "range", 100, nil)
		require.Equal(t, []string{"range"}, kindNames(res))
	})
	t.Run("delete", func(t *testing.T) {
		rev := revision(t, c)
		_, res := bench(t, ep, "delete", 120, nil)
		require.Equal(t, []string{"delete"}, kindNames(res))
		require.Zero(t, keysIn(t, c, keys), "every key deleted")
		require.Equal(t, rev+50+50, revision(t, c), "the preload's 50 puts, then 50 deletes of a key (the rest found none)")
	})
	t.Run("txn", func(t *testing.T) {
		rev := revision(t, c)
		_, res := bench(t, ep, "txn", 200, nil)
		ok, conflicts := count(res, "txn"), count(res, "txn-conflict")
		require.Equal(t, uint64(200), ok+conflicts)
		require.Positive(t, conflicts, "a client's first try of a key conflicts (it has not seen it)")
		require.Equal(t, rev+50+int64(ok), revision(t, c), "a put for each success")
	})
	t.Run("mixed", func(t *testing.T) {
		rev := revision(t, c)
		_, res := bench(t, ep, "mixed", 200, nil)
		gets, puts := count(res, "get"), count(res, "put")
		require.Equal(t, uint64(200), gets+puts)
		require.Positive(t, gets)
		require.Positive(t, puts)
		require.Equal(t, rev+50+int64(puts), revision(t, c))
	})
	t.Run("watch", func(t *testing.T) {
		rep, res := bench(t, ep, "watch", 200, nil)
		require.Equal(t, uint64(200), count(res, "put"))
		require.Equal(t, uint64(2*200), count(res, "watch-event"), "each watcher gets every put")
		for _, k := range rep.Kinds {
			if k.Kind == "watch-event" {
				require.True(t, k.Event)
				require.Positive(t, k.Lat["p50"], "delivery latency from the puts' stamps")
			}
		}
	})
	t.Run("lease", func(t *testing.T) {
		_, res := bench(t, ep, "lease", 200, nil)
		g, k, r := count(res, "lease-grant"), count(res, "lease-keepalive"), count(res, "lease-revoke")
		require.Equal(t, uint64(200), g+k+r)
		require.GreaterOrEqual(t, g, k)
		require.GreaterOrEqual(t, k, r)
		require.LessOrEqual(t, g-r, uint64(4), "at most a lease a client left")
		leases, err := c.Leases(ctxT(t))
		require.NoError(t, err)
		require.Len(t, leases.Leases, int(g-r), "granted and not revoked")
	})
	t.Run("k8s", func(t *testing.T) {
		rev := revision(t, c)
		_, res := bench(t, ep, "k8s", 300, nil)
		updates := count(res, "update")
		require.Equal(t, uint64(300), updates+count(res, "update-conflict")+count(res, "get")+count(res, "list-page"))
		require.Positive(t, count(res, "list-page"))
		require.Equal(t, rev+50+int64(updates), revision(t, c))
		require.Equal(t, 2*updates, count(res, "watch-event"), "each watcher gets every update from the run's first revision")
	})
	t.Run("errors", func(t *testing.T) {
		w, err := Lookup("put")
		require.NoError(t, err)
		o := Options{Workload: w, Endpoints: []string{ep}, Conns: 1, Clients: 1, DialTimeout: 5 * time.Second,
			Run: RunConfig{Total: 3}, Env: Env{Keys: keys, ValSize: 1600 << 10, Seed: 1}, Transport: transport}
		rep, res, err := Bench(ctxT(t), o)
		require.NoError(t, err)
		require.Equal(t, map[string]uint64{"InvalidArgument: etcdserver: request is too large": 3}, res.Errors())
		require.Equal(t, uint64(3), rep.Errors)
		require.Zero(t, count(res, "put"))
	})
}
