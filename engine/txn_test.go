package engine

import (
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"

	"github.com/cairn-kv/cairn/internal/testseed"
)

// modelCompare evaluates a compare on the model at rev, as etcd does.
func modelCompare(m kvModel, c *Compare, rev int64) bool {
	var kvs []KeyValue
	if c.RangeEnd == nil {
		if kv, ok := m.at(string(c.Key), rev); ok {
			kvs = append(kvs, kv)
		}
	} else {
		kvs = m.rangeAt(string(c.Key), string(c.RangeEnd), rev)
	}
	if len(kvs) == 0 {
		return c.Target != CompareValue && compareKV(c, KeyValue{})
	}
	for _, kv := range kvs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

// modelPath chooses the branches as the store must.
func modelPath(m kvModel, req *TxnRequest, rev int64) []bool {
	ok := true
	for i := range req.Compare {
		if !modelCompare(m, &req.Compare[i], rev) {
			ok = false
			break
		}
	}
	path := []bool{ok}
	ops := req.Success
	if !ok {
		ops = req.Failure
	}
	for _, op := range ops {
		if op.Type == OpTxn {
			path = append(path, modelPath(m, op.Txn, rev)...)
		}
	}
	return path
}

// modelRun applies the path's operations to the model at rev (changing it)
// and returns the responses the store must give.
func modelRun(m kvModel, req *TxnRequest, path *[]bool, rev int64, wrote *bool) *TxnResponse {
	ok := (*path)[0]
	*path = (*path)[1:]
	ops := req.Success
	if !ok {
		ops = req.Failure
	}
	resp := &TxnResponse{Succeeded: ok}
	for _, op := range ops {
		var r OpResponse
		readAt := rev - 1
		if *wrote {
			readAt = rev
		}
		switch op.Type {
		case OpRange:
			end := ""
			if op.End != nil {
				end = string(op.End)
			}
			at := readAt
			if op.Range.Rev > 0 {
				at = op.Range.Rev
			}
			kvs := m.rangeAt(string(op.Key), end, at)
			r.Range = &RangeResult{KVs: sortAndFilter(kvs, op.Range), Count: len(kvs)}
			if l := op.Range.Limit; l > 0 && len(r.Range.KVs) > l {
				r.Range.KVs, r.Range.More = r.Range.KVs[:l], true
			}
		case OpPut:
			value, lease := string(op.Value), op.Lease
			if kv, ok := m.at(string(op.Key), readAt); ok {
				r.PrevKV = &kv
				if op.IgnoreValue {
					value = string(kv.Value)
				}
				if op.IgnoreLease {
					lease = kv.Lease
				}
			}
			m[string(op.Key)] = append(m[string(op.Key)], mevent{rev: rev, value: value, lease: lease})
			*wrote = true
		case OpDelete:
			end := ""
			if op.End != nil {
				end = string(op.End)
			}
			r.Deleted = m.rangeAt(string(op.Key), end, readAt)
			for _, kv := range r.Deleted {
				m[string(kv.Key)] = append(m[string(kv.Key)], mevent{rev: rev, deleted: true})
				*wrote = true
			}
		case OpTxn:
			r.Txn = modelRun(m, op.Txn, path, rev, wrote)
		}
		resp.Responses = append(resp.Responses, r)
	}
	return resp
}

// modelRefusal is what the store must refuse a transaction with before it
// writes, given its path, the revision before it and the compacted one.
func modelRefusal(m kvModel, req *TxnRequest, path []bool, rev, compacted int64) error {
	var ops []Op
	var walk func(req *TxnRequest)
	walk = func(req *TxnRequest) {
		branch := req.Success
		if !path[0] {
			branch = req.Failure
		}
		path = path[1:]
		for _, op := range branch {
			ops = append(ops, op)
			if op.Type == OpTxn {
				walk(op.Txn)
			}
		}
	}
	walk(req)
	// Writing a key twice first, then a put keeping what a missing key
	// does not have, then reads of revisions out of reach.
	written := map[string]bool{}
	var deleted []Op
	for _, op := range ops {
		switch op.Type {
		case OpPut:
			if written[string(op.Key)] {
				return ErrDuplicateKey
			}
			written[string(op.Key)] = true
		case OpDelete:
			deleted = append(deleted, op)
		}
	}
	for k := range written {
		for _, d := range deleted {
			end := ""
			if d.End != nil {
				end = string(d.End)
			}
			if k == string(d.Key) || (end == "\x00" && k >= string(d.Key)) || (end != "" && end != "\x00" && k >= string(d.Key) && k < end) {
				return ErrDuplicateKey
			}
		}
	}
	for _, op := range ops {
		if _, ok := m.at(string(op.Key), rev); op.Type == OpPut && (op.IgnoreValue || op.IgnoreLease) && !ok {
			return ErrKeyNotFound
		}
	}
	for _, op := range ops {
		if op.Type == OpRange && op.Range.Rev > rev {
			return ErrFutureRev
		}
		if op.Type == OpRange && op.Range.Rev > 0 && op.Range.Rev < compacted {
			return ErrCompacted
		}
	}
	return nil
}

func (m kvModel) clone() kvModel {
	out := kvModel{}
	for k, v := range m {
		out[k] = append([]mevent(nil), v...)
	}
	return out
}

func sameKVs(a, b []KeyValue) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if string(x.Key) != string(y.Key) || string(x.Value) != string(y.Value) || x.ModRevision != y.ModRevision ||
			x.CreateRevision != y.CreateRevision || x.Version != y.Version || x.Lease != y.Lease {
			return false
		}
	}
	return true
}

func sameResponse(a, b *TxnResponse) string {
	if a.Succeeded != b.Succeeded || len(a.Responses) != len(b.Responses) {
		return fmt.Sprintf("succeeded %v with %d responses, want %v with %d", a.Succeeded, len(a.Responses), b.Succeeded, len(b.Responses))
	}
	for i := range a.Responses {
		x, y := a.Responses[i], b.Responses[i]
		switch {
		case (x.Range == nil) != (y.Range == nil) || (x.Range != nil && (!sameKVs(x.Range.KVs, y.Range.KVs) || x.Range.Count != y.Range.Count || x.Range.More != y.Range.More)):
			return fmt.Sprintf("op %d range differs", i)
		case (x.PrevKV == nil) != (y.PrevKV == nil) || (x.PrevKV != nil && !sameKVs([]KeyValue{*x.PrevKV}, []KeyValue{*y.PrevKV})):
			return fmt.Sprintf("op %d previous value differs", i)
		case !sameKVs(x.Deleted, y.Deleted):
			return fmt.Sprintf("op %d deleted %d keys, want %d", i, len(x.Deleted), len(y.Deleted))
		case (x.Txn == nil) != (y.Txn == nil):
			return fmt.Sprintf("op %d nested txn differs", i)
		case x.Txn != nil:
			if d := sameResponse(x.Txn, y.Txn); d != "" {
				return fmt.Sprintf("op %d: %s", i, d)
			}
		}
	}
	return ""
}

// TestTxnAgainstModel runs random transactions (compares on every target
// and result, some over ranges and on missing keys; puts, deletes, reads
// and nested transactions in both branches) against the model: the branch
// taken, every response, the duplicate-key refusal and the state after.
func TestTxnAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	db, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer func() { _ = s.Close(); _ = db.Close() }()
	grantLeases(t, s, 1)
	m := kvModel{}
	key := func() []byte { return []byte(fmt.Sprintf("k%d", rng.Intn(8))) }
	rev := int64(1) // a fresh store is at revision 1
	var succeeded, failed int
	var compacted int64
	refused := map[error]int{}
	randomOps := func(depth int) []Op {
		var ops []Op
		for i := 0; i < rng.Intn(4); i++ {
			switch r := rng.Intn(10); {
			case r < 4:
				op := Op{Type: OpPut, Key: key(), Value: []byte(fmt.Sprint("v", rng.Intn(100))), Lease: int64(rng.Intn(2))}
				if rng.Intn(6) == 0 {
					op.IgnoreValue, op.Value = true, nil
				}
				if rng.Intn(6) == 0 {
					op.IgnoreLease, op.Lease = true, 0
				}
				ops = append(ops, op)
			case r < 6:
				op := Op{Type: OpDelete, Key: key()}
				if rng.Intn(3) == 0 {
					op.End = []byte("\x00")
				}
				ops = append(ops, op)
			case r < 8:
				op := Op{Type: OpRange, Key: []byte("k"), End: []byte("\x00")}
				if rng.Intn(4) == 0 {
					op.Range.Rev = 1 + rng.Int63n(rev+1) // history, compacted or current
					if rng.Intn(8) == 0 {
						op.Range.Rev = rev + 1 + rng.Int63n(2) // the future
					}
				}
				if rng.Intn(3) == 0 {
					op.Range.Limit = 1 + rng.Intn(3)
					op.Range.SortOrder, op.Range.SortTarget = SortOrder(rng.Intn(3)), SortTarget(rng.Intn(5))
				}
				ops = append(ops, op)
			default:
				if depth == 0 {
					nested := &TxnRequest{Compare: []Compare{{Key: key(), Target: CompareVersion, Result: CompareResult(rng.Intn(4)), Version: int64(rng.Intn(3))}}}
					nested.Success = []Op{{Type: OpPut, Key: key(), Value: []byte("nested")}}
					ops = append(ops, Op{Type: OpTxn, Txn: nested})
				}
			}
		}
		return ops
	}
	for step := 0; step < 3000; step++ {
		req := &TxnRequest{}
		for i := 0; i < rng.Intn(3); i++ {
			c := Compare{Key: key(), Target: CompareTarget(rng.Intn(5)), Result: CompareResult(rng.Intn(4))}
			switch c.Target {
			case CompareVersion:
				c.Version = int64(rng.Intn(4))
			case CompareCreate:
				c.CreateRevision = rng.Int63n(rev + 2)
			case CompareMod:
				c.ModRevision = rng.Int63n(rev + 2)
			case CompareValue:
				c.Value = []byte(fmt.Sprint("v", rng.Intn(100)))
			case CompareLease:
				c.Lease = int64(rng.Intn(2))
			}
			if rng.Intn(5) == 0 {
				c.RangeEnd = []byte("\x00")
			}
			req.Compare = append(req.Compare, c)
		}
		req.Success, req.Failure = randomOps(0), randomOps(0)

		path := modelPath(m, req, rev)
		want := m.clone()
		wrote := false
		p := append([]bool(nil), path...)
		wantResp := modelRun(want, req, &p, rev+1, &wrote)
		refusal := modelRefusal(m, req, path, rev, compacted)

		resp, err := s.Txn(req)
		if refusal != nil || err != nil {
			if !errors.Is(err, refusal) {
				t.Fatalf("step %d: the store answered %v, want %v", step, err, refusal)
			}
			refused[refusal]++
			continue
		}
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if d := sameResponse(resp, wantResp); d != "" {
			t.Fatalf("step %d: %s", step, d)
		}
		if resp.Succeeded {
			succeeded++
		} else {
			failed++
		}
		m = want
		if wrote {
			rev++
		}
		if s.Rev() != rev {
			t.Fatalf("step %d: revision %d, want %d", step, s.Rev(), rev)
		}
		all, err := s.Range([]byte("k"), []byte("\x00"), RangeOptions{})
		if err != nil || !sameKVs(all.KVs, m.rangeAt("k", "\x00", rev)) {
			t.Fatalf("step %d: state after the txn differs from the model (%v)", step, err)
		}
		if step%100 == 0 {
			if err := s.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if step%250 == 0 && rev > compacted {
			compacted += 1 + rng.Int63n(rev-compacted)
			if err := s.Compact(compacted); err != nil {
				t.Fatal(err)
			}
			finishCompaction(t, s)
		}
	}
	t.Logf("%d succeeded, %d failed; refused: %v; revision %d, compacted %d", succeeded, failed, refused, rev, compacted)
	if succeeded == 0 || failed == 0 || len(refused) != 4 {
		t.Fatal("the run did not exercise every outcome")
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}
