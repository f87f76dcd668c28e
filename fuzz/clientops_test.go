// Package fuzz holds the cross-package fuzz harnesses; fuzz/run.sh runs
// them with every package's own targets.
package fuzz

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/server"
)

// member is one in-process member a fuzz worker runs all its inputs
// against, and a client of it.
var member struct {
	once sync.Once
	dir  string
	s    *server.Server
	c    *clientv3.Client
	err  error
	runs int
}

func TestMain(m *testing.M) {
	code := m.Run()
	if member.c != nil {
		member.c.Close()
	}
	if member.s != nil {
		member.s.Stop()
	}
	if member.dir != "" {
		os.RemoveAll(member.dir)
	}
	os.Exit(code)
}

func sharedMember(t testing.TB) (*server.Server, *clientv3.Client) {
	member.once.Do(func() {
		if member.dir, member.err = os.MkdirTemp("", "cairn-fuzz-ops-"); member.err != nil {
			return
		}
		cfg := server.DefaultConfig()
		cfg.DataDir = member.dir
		cfg.ListenClientURLs = []string{"http://127.0.0.1:0"}
		cfg.ListenPeerURLs = []string{"http://127.0.0.1:0"}
		cfg.HeartbeatInterval, cfg.ElectionTimeout = 10*time.Millisecond, 100*time.Millisecond
		cfg.UnsafeNoFsync = true
		if member.s, member.err = server.Start(cfg); member.err != nil {
			return
		}
		member.c, member.err = clientv3.New(clientv3.Config{Endpoints: member.s.ClientURLs(), DialTimeout: 5 * time.Second})
	})
	require.NoError(t, member.err)
	return member.s, member.c
}

// modelKV is a key as the model has it.
type modelKV struct {
	value                string
	create, mod, version int64
}

// opsModel is what the store must hold of the keys under one prefix:
// each key now, and the keys as of every revision this run made.
type opsModel struct {
	rev     int64
	keys    map[string]modelKV
	history map[int64]map[string]modelKV
}

func (m *opsModel) commit() {
	m.rev++
	snap := make(map[string]modelKV, len(m.keys))
	for k, v := range m.keys {
		snap[k] = v
	}
	m.history[m.rev] = snap
}

func (m *opsModel) put(k, v string) {
	old, ok := m.keys[k]
	kv := modelKV{value: v, create: m.rev + 1, mod: m.rev + 1, version: 1}
	if ok {
		kv.create, kv.version = old.create, old.version+1
	}
	m.keys[k] = kv
	m.commit()
}

func (m *opsModel) sorted(at map[string]modelKV) []string {
	keys := make([]string, 0, len(at))
	for k := range at {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// FuzzClientOps runs a fuzzed sequence of client operations (puts, gets
// now and at past revisions, deletes of a key and of the whole prefix,
// prefix ranges with limits, compare-and-put transactions) against a
// running member, each input under a prefix of its own, and checks every
// answer against a model of the keys: values, create and mod revisions,
// versions, previous values, counts, the revision each write makes.
func FuzzClientOps(f *testing.F) {
	f.Add([]byte{0, 1, 3, 0, 2, 4, 1, 1, 0, 2, 1, 0, 1, 2, 0})
	f.Add([]byte{0, 0, 1, 0, 1, 1, 0, 2, 2, 4, 0, 2, 5, 0, 1, 3, 0, 0, 6, 1, 1, 1, 0, 0})
	f.Add([]byte{5, 0, 0, 0, 0, 5, 5, 0, 0, 6, 2, 0, 3, 0, 0, 4, 0, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		_, c := sharedMember(t)
		runClientOps(t, c, ops)
	})
}

// tb is what runClientOps needs of a test: require's, and Helper.
type tb interface {
	require.TestingT
	Helper()
}

// runClientOps runs the operations ops encodes (three bytes each) against
// c and checks each answer against the model.
func runClientOps(t tb, c *clientv3.Client, ops []byte) {
	member.runs++
	prefix := fmt.Sprintf("fz/%d/", member.runs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	get, err := c.Get(ctx, prefix)
	require.NoError(t, err)
	m := &opsModel{rev: get.Header.Revision, keys: map[string]modelKV{}, history: map[int64]map[string]modelKV{}}
	start := m.rev
	m.history[m.rev] = map[string]modelKV{}
	check := func(kvs []*mvccpb.KeyValue, want []string, at map[string]modelKV) {
		t.Helper()
		require.Len(t, kvs, len(want))
		for i, kv := range kvs {
			w := at[want[i]]
			require.Equal(t, want[i], string(kv.Key))
			require.Equal(t, w.value, string(kv.Value), "value of %s", kv.Key)
			require.Equal(t, w.create, kv.CreateRevision, "create revision of %s", kv.Key)
			require.Equal(t, w.mod, kv.ModRevision, "mod revision of %s", kv.Key)
			require.Equal(t, w.version, kv.Version, "version of %s", kv.Key)
		}
	}
	for len(ops) >= 3 && len(m.history) < 200 {
		op, a, b := ops[0]%7, ops[1], ops[2]
		ops = ops[3:]
		key := fmt.Sprintf("%sk%d", prefix, a%8)
		value := fmt.Sprintf("v%d", b)
		switch op {
		case 0: // put, with the previous key-value
			resp, err := c.Put(ctx, key, value, clientv3.WithPrevKV())
			require.NoError(t, err)
			if old, ok := m.keys[key]; ok {
				require.NotNil(t, resp.PrevKv)
				check([]*mvccpb.KeyValue{resp.PrevKv}, []string{key}, map[string]modelKV{key: old})
			} else {
				require.Nil(t, resp.PrevKv)
			}
			m.put(key, value)
			require.Equal(t, m.rev, resp.Header.Revision)
		case 1: // get now
			resp, err := c.Get(ctx, key)
			require.NoError(t, err)
			var want []string
			if _, ok := m.keys[key]; ok {
				want = []string{key}
			}
			check(resp.Kvs, want, m.keys)
			require.Equal(t, m.rev, resp.Header.Revision)
		case 2: // get at a past revision of this run
			at := start + int64(b)%(m.rev-start+1)
			resp, err := c.Get(ctx, key, clientv3.WithRev(at))
			require.NoError(t, err)
			var want []string
			if _, ok := m.history[at][key]; ok {
				want = []string{key}
			}
			check(resp.Kvs, want, m.history[at])
		case 3: // delete a key
			resp, err := c.Delete(ctx, key, clientv3.WithPrevKV())
			require.NoError(t, err)
			if old, ok := m.keys[key]; ok {
				require.EqualValues(t, 1, resp.Deleted)
				check(resp.PrevKvs, []string{key}, map[string]modelKV{key: old})
				delete(m.keys, key)
				m.commit()
			} else {
				require.Zero(t, resp.Deleted)
			}
			require.Equal(t, m.rev, resp.Header.Revision)
		case 4: // delete the prefix
			resp, err := c.Delete(ctx, prefix, clientv3.WithPrefix())
			require.NoError(t, err)
			require.EqualValues(t, len(m.keys), resp.Deleted)
			if len(m.keys) > 0 {
				clear(m.keys)
				m.commit()
			}
			require.Equal(t, m.rev, resp.Header.Revision)
		case 5: // range the prefix, with a limit
			limit := int64(b % 5)
			resp, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithLimit(limit))
			require.NoError(t, err)
			want := m.sorted(m.keys)
			require.EqualValues(t, len(want), resp.Count)
			require.Equal(t, limit > 0 && int64(len(want)) > limit, resp.More)
			if limit > 0 && int64(len(want)) > limit {
				want = want[:limit]
			}
			check(resp.Kvs, want, m.keys)
		case 6: // compare the value, then put another key or get this one
			other := fmt.Sprintf("%sk%d", prefix, b%8)
			resp, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", value)).
				Then(clientv3.OpPut(other, value)).Else(clientv3.OpGet(key)).Commit()
			require.NoError(t, err)
			cur, ok := m.keys[key]
			succeeded := ok && cur.value == value
			require.Equal(t, succeeded, resp.Succeeded)
			if succeeded {
				m.put(other, value)
			} else {
				var want []string
				if ok {
					want = []string{key}
				}
				check(resp.Responses[0].GetResponseRange().Kvs, want, m.keys)
			}
			require.Equal(t, m.rev, resp.Header.Revision)
		}
	}
	// The whole prefix at every revision this run made.
	for at, keys := range m.history {
		resp, err := c.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(at))
		require.NoError(t, err)
		check(resp.Kvs, m.sorted(keys), keys)
	}
}

// recordingT is a tb that records a failure and ends the run with
// errFailNow (recovered by its caller).
type recordingT struct{ failed []string }

var errFailNow = errors.New("failed")

func (r *recordingT) Errorf(format string, args ...any) {
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}
func (r *recordingT) FailNow() { panic(errFailNow) }
func (r *recordingT) Helper()  {}

// run runs ops and returns what failed.
func (r *recordingT) run(c *clientv3.Client, ops []byte) (failed []string) {
	defer func() {
		if p := recover(); p != nil && p != errFailNow {
			panic(p)
		}
		failed = r.failed
	}()
	runClientOps(r, c, ops)
	return
}

// TestClientOpsCatchesCanary: the harness's checks catch a member that
// answers a key's version wrong, once (the v3rpc/canaryWrongVersion
// failpoint), and pass the same operations without it.
func TestClientOpsCatchesCanary(t *testing.T) {
	_, c := sharedMember(t)
	ops := []byte{0, 1, 3, 0, 1, 4, 1, 1, 0} // put k1, put k1 again, get k1
	require.Empty(t, (&recordingT{}).run(c, ops), "without the canary")
	failpoint.Enable("v3rpc/canaryWrongVersion", func() error { return errors.New("canary") })
	defer failpoint.Disable("v3rpc/canaryWrongVersion")
	failed := (&recordingT{}).run(c, ops)
	require.NotEmpty(t, failed, "the canary went unseen")
	require.Contains(t, failed[0], "version of ")
	t.Logf("caught:%s", failed[0])
}
