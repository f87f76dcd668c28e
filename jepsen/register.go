package jepsen

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// register: per-key registers read, written and compare-and-set by
// clients on every member; each key's history must be linearizable
// (porcupine, one partition per key). Values are unique, so a lost
// acknowledged write, a stale read or a CAS that saw the wrong value
// makes a key's history impossible.
type register struct{}

const (
	registerKeys          = 5
	registerClientsPerMem = 2
)

type regInput struct {
	Op    string `json:"op"` // read, write, cas
	Key   string `json:"key"`
	Value int64  `json:"value,omitempty"` // write, cas: the new value
	Old   int64  `json:"old,omitempty"`   // cas: the expected value
}

type regOutput struct {
	Exists  bool  `json:"exists,omitempty"` // read: the key has a value
	Value   int64 `json:"value,omitempty"`  // read
	OK      bool  `json:"ok,omitempty"`     // cas: it applied
	Rev     int64 `json:"rev,omitempty"`
	unknown bool
}

// regState is a key's value (comparable: porcupine's default equality).
type regState struct {
	Exists bool
	Value  int64
}

func (register) Name() string { return "register" }

func (register) Setup(context.Context, *Run) error { return nil }

func (register) Run(ctx context.Context, r *Run) {
	var wg sync.WaitGroup
	for range registerClientsPerMem * len(r.Cluster.Members()) {
		c := r.newClient(-1)
		wg.Add(1)
		go func() { defer wg.Done(); runRegister(ctx, r, c) }()
	}
	wg.Wait()
}

func registerKey(i int) string { return fmt.Sprintf("r/%d", i) }

func runRegister(ctx context.Context, r *Run, c *client) {
	cl, err := r.Cluster.Client(c.member)
	if err != nil {
		return
	}
	defer cl.Close()
	seq := int64(0)
	last := map[string]int64{} // the last value this client read, for CAS
	for ctx.Err() == nil {
		key := registerKey(c.rng.Intn(registerKeys))
		seq++
		value := int64(c.process)*1_000_000_000 + seq // unique
		var in regInput
		switch p := c.rng.Intn(4); {
		case p < 2:
			in = regInput{Op: "read", Key: key}
		case p == 2:
			in = regInput{Op: "write", Key: key, Value: value}
		default:
			in = regInput{Op: "cas", Key: key, Old: last[key], Value: value}
		}
		op := r.History.Invoke(c.process, "register", in, c.member)
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		var out regOutput
		switch in.Op {
		case "read":
			var g *clientv3.GetResponse
			if g, err = cl.Get(octx, key); err == nil {
				out.Rev = g.Header.Revision
				if len(g.Kvs) > 0 {
					out.Exists = true
					out.Value, _ = strconv.ParseInt(string(g.Kvs[0].Value), 10, 64)
					last[key] = out.Value
				}
			}
		case "write":
			var p *clientv3.PutResponse
			if p, err = cl.Put(octx, key, strconv.FormatInt(value, 10)); err == nil {
				out.Rev = p.Header.Revision
			}
		case "cas":
			var t *clientv3.TxnResponse
			t, err = cl.Txn(octx).If(clientv3.Compare(clientv3.Value(key), "=", strconv.FormatInt(in.Old, 10))).
				Then(clientv3.OpPut(key, strconv.FormatInt(value, 10))).Commit()
			if err == nil {
				out.OK, out.Rev = t.Succeeded, t.Header.Revision
			}
		}
		cancel()
		switch {
		case err == nil:
			op.OK(out)
		case in.Op == "read":
			op.Fail(err)
		default:
			completeWrite(op, err)
		}
		if err != nil {
			backoff(ctx)
		}
	}
}

// registerModel is one key's register; unknown writes and CASes may take
// effect or not, which an unbounded return time already allows (the op
// can be put last, after everything it could have changed).
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(regInput).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		var parts [][]porcupine.Operation
		for _, k := range keys {
			parts = append(parts, byKey[k])
		}
		return parts
	},
	Init: func() any { return regState{} },
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(regState), input.(regInput), output.(regOutput)
		switch in.Op {
		case "read":
			return out.Exists == st.Exists && (!st.Exists || out.Value == st.Value), st
		case "write":
			return true, regState{Exists: true, Value: in.Value}
		default: // cas
			match := st.Exists && st.Value == in.Old
			if out.unknown {
				if match {
					return true, regState{Exists: true, Value: in.Value}
				}
				return true, st
			}
			if out.OK != match {
				return false, st
			}
			if match {
				return true, regState{Exists: true, Value: in.Value}
			}
			return true, st
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(regInput), output.(regOutput)
		switch {
		case out.unknown:
			return fmt.Sprintf("%s %s %d? (unknown)", in.Op, in.Key, in.Value)
		case in.Op == "read" && !out.Exists:
			return fmt.Sprintf("read %s -> none", in.Key)
		case in.Op == "read":
			return fmt.Sprintf("read %s -> %d", in.Key, out.Value)
		case in.Op == "write":
			return fmt.Sprintf("write %s %d", in.Key, in.Value)
		}
		return fmt.Sprintf("cas %s %d->%d: %v", in.Key, in.Old, in.Value, out.OK)
	},
	DescribeState: func(state any) string {
		st := state.(regState)
		if !st.Exists {
			return "none"
		}
		return strconv.FormatInt(st.Value, 10)
	},
}

// porcupineOps turns a workload's ops into porcupine's: failed ones
// dropped (they did not happen), unknown ones open-ended with the output
// marked so.
func porcupineOps(ops []Op, unknownOut func(Op) any) []porcupine.Operation {
	var hist []porcupine.Operation
	for _, op := range ops {
		switch op.Status {
		case StatusFail:
			continue
		case StatusUnknown:
			hist = append(hist, porcupine.Operation{ClientId: op.Process, Input: op.In, Call: op.Call, Output: unknownOut(op), Return: math.MaxInt64})
		default:
			hist = append(hist, porcupine.Operation{ClientId: op.Process, Input: op.In, Call: op.Call, Output: op.Out, Return: op.Return})
		}
	}
	return hist
}

// checkLinearizable checks hist against model within timeout, writing
// porcupine's visualisation to dir/name.html if it is not linearizable.
func checkLinearizable(res *Result, dir, name string, model porcupine.Model, hist []porcupine.Operation, timeout time.Duration) {
	start := time.Now()
	result, info := porcupine.CheckOperationsVerbose(model, hist, timeout)
	res.Stats["check"] = time.Since(start).Round(time.Millisecond).String()
	res.Stats["linearizable"] = string(result)
	switch result {
	case porcupine.Ok:
	case porcupine.Illegal:
		path := filepath.Join(dir, name+".html")
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			res.anomaly("not linearizable (and the visualisation failed: %v)", err)
		} else {
			res.anomaly("not linearizable: see %s", path)
		}
	default:
		res.anomaly("linearizability not decided within %v: inconclusive", timeout)
	}
}

func (register) Check(ctx context.Context, r *Run) Result {
	res := Result{Workload: "register", Valid: true, Stats: map[string]any{}}
	ops := r.History.Ops("register")
	res.count(ops)
	if res.OK == 0 {
		res.anomaly("no operation succeeded")
	}
	hist := porcupineOps(ops, func(op Op) any { return regOutput{unknown: true} })
	checkLinearizable(&res, r.Dir, "register", registerModel, hist, r.cfg.CheckTimeout)
	return res
}
