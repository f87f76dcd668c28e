package jepsen

import (
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func regOp(client int, in regInput, out regOutput, call, ret int64) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
}

// TestRegisterModel: the register checker passes a linearizable history,
// including a write whose outcome is unknown and that a later read
// shows happened, and catches a stale read, a lost acknowledged write
// and a CAS that saw the wrong value.
func TestRegisterModel(t *testing.T) {
	k := "r/0"
	w1 := regOp(0, regInput{Op: "write", Key: k, Value: 1}, regOutput{}, 0, 10)
	valid := []porcupine.Operation{
		w1,
		regOp(1, regInput{Op: "read", Key: k}, regOutput{Exists: true, Value: 1}, 11, 20),
		regOp(0, regInput{Op: "write", Key: k, Value: 2}, regOutput{unknown: true}, 21, math.MaxInt64),
		regOp(1, regInput{Op: "cas", Key: k, Old: 2, Value: 3}, regOutput{OK: true}, 30, 40),
		regOp(2, regInput{Op: "read", Key: k}, regOutput{Exists: true, Value: 3}, 41, 50),
	}
	require.Equal(t, porcupine.Ok, porcupine.CheckOperationsTimeout(registerModel, valid, 10*time.Second))

	stale := []porcupine.Operation{
		w1,
		regOp(0, regInput{Op: "write", Key: k, Value: 2}, regOutput{}, 11, 20),
		regOp(1, regInput{Op: "read", Key: k}, regOutput{Exists: true, Value: 1}, 21, 30),
	}
	require.Equal(t, porcupine.Illegal, porcupine.CheckOperationsTimeout(registerModel, stale, 10*time.Second))

	lost := []porcupine.Operation{
		w1,
		regOp(1, regInput{Op: "read", Key: k}, regOutput{}, 11, 20),
	}
	require.Equal(t, porcupine.Illegal, porcupine.CheckOperationsTimeout(registerModel, lost, 10*time.Second))

	badCAS := []porcupine.Operation{
		w1,
		regOp(1, regInput{Op: "cas", Key: k, Old: 7, Value: 8}, regOutput{OK: true}, 11, 20),
	}
	require.Equal(t, porcupine.Illegal, porcupine.CheckOperationsTimeout(registerModel, badCAS, 10*time.Second))

	// Keys are independent: a history valid per key passes whatever the
	// interleaving across keys.
	other := regOp(3, regInput{Op: "read", Key: "r/1"}, regOutput{}, 5, 15)
	require.Equal(t, porcupine.Ok, porcupine.CheckOperationsTimeout(registerModel, append(valid, other), 10*time.Second))
}

// TestBankModel: the bank checker passes transfers and reads that agree,
// catches a transfer acknowledged and then missing, and one that applied
// though it said it did not; the read check catches a total not
// conserved.
func TestBankModel(t *testing.T) {
	init := bankModel.Init().(bankState)
	moved := init
	moved[0], moved[1] = 97, 103
	transfer := porcupine.Operation{ClientId: 0, Input: bankInput{Op: "transfer", From: 0, To: 1, Amount: 3, ExpectFrom: 100, ExpectTo: 100},
		Output: bankOutput{OK: true}, Call: 0, Return: 10}
	read := func(s bankState, call int64) porcupine.Operation {
		return porcupine.Operation{ClientId: 1, Input: bankInput{Op: "read"}, Output: bankOutput{Balances: s}, Call: call, Return: call + 5}
	}
	require.Equal(t, porcupine.Ok, porcupine.CheckOperationsTimeout(bankModel, []porcupine.Operation{transfer, read(moved, 20)}, 10*time.Second))
	require.Equal(t, porcupine.Illegal, porcupine.CheckOperationsTimeout(bankModel, []porcupine.Operation{transfer, read(init, 20)}, 10*time.Second))
	refused := transfer
	refused.Output = bankOutput{OK: false}
	require.Equal(t, porcupine.Illegal, porcupine.CheckOperationsTimeout(bankModel, []porcupine.Operation{refused, read(moved, 20)}, 10*time.Second))
	unknown := transfer
	unknown.Output, unknown.Return = bankOutput{unknown: true}, math.MaxInt64
	require.Equal(t, porcupine.Ok, porcupine.CheckOperationsTimeout(bankModel, []porcupine.Operation{unknown, read(init, 20), read(moved, 40)}, 10*time.Second))

	h := NewHistory(nil)
	h.Invoke(0, "bank", bankInput{Op: "transfer", From: 0, To: 1, Amount: 3, ExpectFrom: 100, ExpectTo: 100}, 0).OK(bankOutput{OK: true})
	leak := moved
	leak[2] = 99
	h.Invoke(1, "bank", bankInput{Op: "read"}, 0).OK(bankOutput{Balances: leak})
	res := (bank{}).Check(t.Context(), &Run{History: h, Dir: t.TempDir(), cfg: Config{CheckTimeout: 10 * time.Second}})
	require.False(t, res.Valid)
	require.Contains(t, res.Anomalies[0], "totals 499")
}

func ev(rev int64, key, value string, prev *string, resp int) watchEvent {
	return watchEvent{Rev: rev, Key: key, Value: value, Prev: prev, Mod: rev, Create: rev, Version: 1, Resp: resp}
}

// TestWatchChecker: a watcher that saw what the reference saw passes; one
// that missed an event, saw one twice, out of order, split a revision
// across responses, or stopped short of the final revision is caught.
func TestWatchChecker(t *testing.T) {
	ref := []watchEvent{ev(2, "a", "1", nil, 1), ev(3, "b", "2", nil, 1), ev(3, "c", "2", nil, 1), ev(4, "d", "3", nil, 2)}
	check := func(evs []watchEvent) Result {
		res := Result{Valid: true}
		checkWatcher(&res, "m1", evs, ref, 4)
		return res
	}
	require.True(t, check(ref).Valid)
	require.True(t, check([]watchEvent{ref[0], ref[1], ref[2], ref[3]}).Valid, "responses may differ from the reference's")

	for name, evs := range map[string][]watchEvent{
		"missed":    {ref[0], ref[1], ref[3]},
		"twice":     {ref[0], ref[1], ref[2], ref[2], ref[3]},
		"reordered": {ref[0], ref[3], ref[1], ref[2]},
		"split":     {ref[0], ev(3, "b", "2", nil, 1), ev(3, "c", "2", nil, 2), ev(4, "d", "3", nil, 3)},
		"short":     {ref[0], ref[1], ref[2]},
		"value":     {ref[0], ref[1], ev(3, "c", "x", nil, 1), ref[3]},
	} {
		require.False(t, check(evs).Valid, name)
	}
}

// TestWatchReference: the reference watch's own checks catch a revision
// missing from it, a prev_kv that is not the key's value before, and an
// acknowledged write it does not hold.
func TestWatchReference(t *testing.T) {
	one := "1"
	ref := []watchEvent{ev(2, "w/a", "1", nil, 1), ev(3, "w/a", "2", &one, 1)}
	ref[1].Create, ref[1].Version = 2, 2
	h := NewHistory(nil)
	h.Invoke(0, "watch-write", watchWrite{Op: "put", Keys: []string{"w/a"}, Value: "2"}, 0).OK(int64(3))
	final := finalState(ref)
	res := Result{Valid: true, Stats: map[string]any{}}
	checkReference(&res, ref, final, 3, h)
	require.True(t, res.Valid, res.Anomalies)

	gap := []watchEvent{ref[0], ev(4, "w/a", "2", &one, 1)}
	res = Result{Valid: true, Stats: map[string]any{}}
	checkReference(&res, gap, finalState(gap), 4, h)
	require.False(t, res.Valid)

	wrongPrev := []watchEvent{ref[0], ref[1]}
	other := "9"
	wrongPrev[1].Prev = &other
	res = Result{Valid: true, Stats: map[string]any{}}
	checkReference(&res, wrongPrev, final, 3, h)
	require.False(t, res.Valid)

	h.Invoke(1, "watch-write", watchWrite{Op: "put", Keys: []string{"w/b"}, Value: "7"}, 0).OK(int64(3))
	res = Result{Valid: true, Stats: map[string]any{}}
	checkReference(&res, ref, final, 3, h)
	require.False(t, res.Valid)
	require.Contains(t, res.Anomalies[0], "lost")
}

// finalState is the store's state the events leave.
func finalState(evs []watchEvent) *clientv3.GetResponse {
	state := map[string]watchEvent{}
	for _, e := range evs {
		if e.Delete {
			delete(state, e.Key)
		} else {
			state[e.Key] = e
		}
	}
	resp := &clientv3.GetResponse{}
	for k, e := range state {
		resp.Kvs = append(resp.Kvs, &mvccpb.KeyValue{Key: []byte(k), Value: []byte(e.Value), ModRevision: e.Mod, CreateRevision: e.Create, Version: e.Version})
	}
	return resp
}

// at records op f at times [call, ret] (ms) into h with out, as a
// process would.
func at(h *History, process int, f string, in, out any, call, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	op := &Op{Process: process, F: f, In: in, Out: out, Call: call * 1e6, Return: ret * 1e6, Status: StatusOK}
	h.ops = append(h.ops, op)
}

// TestLeaseChecker: a lease whose key is read gone before its TTL has run
// from its last keep-alive is caught, as is a key that comes back; a
// key gone after its TTL passes; an abandoned key still there long after
// its TTL, with no fault on, is caught.
func TestLeaseChecker(t *testing.T) {
	check := func(reads ...[3]int64) Result {
		h := NewHistory(nil)
		at(h, 0, "lease", leaseInput{Op: "grant"}, leaseOutput{Lease: 1, TTL: 3}, 0, 10)
		at(h, 0, "lease", leaseInput{Op: "put", Lease: 1, Key: "l/1"}, leaseOutput{}, 20, 30)
		at(h, 0, "lease", leaseInput{Op: "keepalive", Lease: 1}, leaseOutput{TTL: 3}, 1000, 1010)
		for _, rd := range reads { // call, return, present (1) or abandoned and gone/present (2, 3)
			in := leaseInput{Op: "read", Lease: 1, Key: "l/1", Abandoned: rd[2] >= 2}
			at(h, 0, "lease", in, leaseOutput{Present: rd[2] == 1 || rd[2] == 3}, rd[0], rd[1])
		}
		return (lease{}).Check(t.Context(), &Run{History: h, Timeline: &Timeline{}})
	}
	require.True(t, check([3]int64{2000, 2010, 1}, [3]int64{4100, 4110, 2}).Valid, "gone after the TTL from its last keep-alive")
	early := check([3]int64{2000, 2010, 2})
	require.False(t, early.Valid)
	require.Contains(t, early.Anomalies[0], "before its TTL ran out")
	back := check([3]int64{4100, 4110, 2}, [3]int64{4200, 4210, 3})
	require.False(t, back.Valid)
	require.Contains(t, back.Anomalies[0], "came back")
	late := check([3]int64{9000, 9010, 3}, [3]int64{9100, 9110, 2})
	require.False(t, late.Valid)
	require.Contains(t, late.Anomalies[0], "still there")
}

// TestLockChecker: guarded writes whose tokens never go down in commit
// order pass; a write with an older token committed after a newer one
// (a stale holder whose guard did not hold) is caught.
func TestLockChecker(t *testing.T) {
	check := func(writes ...[3]int64) Result { // process, token, revision
		h := NewHistory(nil)
		for i, w := range writes {
			at(h, int(w[0]), "lock", lockInput{Op: "acquire"}, lockOutput{Token: w[1]}, int64(10*i), int64(10*i+1))
			at(h, int(w[0]), "lock", lockInput{Op: "write", Token: w[1]}, lockOutput{OK: true, Rev: w[2]}, int64(10*i+2), int64(10*i+3))
		}
		return (lock{}).Check(t.Context(), &Run{History: h})
	}
	require.True(t, check([3]int64{0, 5, 6}, [3]int64{1, 7, 8}, [3]int64{0, 9, 10}).Valid)
	stale := check([3]int64{0, 5, 9}, [3]int64{1, 7, 8})
	require.False(t, stale.Valid)
	require.Contains(t, stale.Anomalies[0], "token 5")
}
