package raft

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// A small KV on top of the simulated cluster: every proposal is a write of
// a unique value to one of a few keys, every ReadIndex read returns a key's
// value, and the history of both is checked for linearizability.

const kvKeys = 3

type kvInput struct {
	read  bool
	key   string
	value string // writes
}

// kvOp is one client operation in the history.
type kvOp struct {
	in    kvInput
	out   string // reads: the value read
	call  int64
	ret   int64 // -1 while pending
	node  uint64
	index uint64 // reads: the index the node released the read at
}

// Times: calls at the start of a step, returns at its end.
func callTime(step int) int64 { return int64(step) * 3 }
func retTime(step int) int64  { return int64(step)*3 + 2 }

// parseKV reads an entry written by the simulation ("k<n>=<value>").
func parseKV(data []byte) (key, value string, ok bool) {
	k, v, found := strings.Cut(string(data), "=")
	if !found || !strings.HasPrefix(k, "k") {
		return "", "", false
	}
	return k, v, true
}

// kvState replays the globally agreed entries up to index (a snapshot's
// state, or a node's state after a restart).
func (s *sim) kvState(index uint64) map[string]string {
	kv := map[string]string{}
	for i := uint64(1); i <= index; i++ {
		if k, v, ok := parseKV(s.applied[i].Data); ok && s.firstIndex[string(s.applied[i].Data)] == i {
			kv[k] = v
		}
	}
	return kv
}

var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(kvInput).key
			byKey[k] = append(byKey[k], op)
		}
		keys := make([]string, 0, len(byKey))
		for k := range byKey {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return "" },
	Step: func(state, input, output interface{}) (bool, interface{}) {
		in := input.(kvInput)
		if in.read {
			return output.(string) == state.(string), state
		}
		return true, in.value
	},
	Equal: func(a, b interface{}) bool { return a.(string) == b.(string) },
	DescribeOperation: func(input, output interface{}) string {
		in := input.(kvInput)
		if in.read {
			return fmt.Sprintf("get(%s) -> %q", in.key, output)
		}
		return fmt.Sprintf("put(%s, %q)", in.key, in.value)
	},
}

// checkLinearizable checks the recorded history. A write whose client
// never heard back (its node crashed, or the proposal was lost) is patched
// from what the cluster shows, as reliability.md describes: values are
// unique, so one that no node ever applied never took effect and is left
// out, and one that was applied took effect no later than its first
// application anywhere. Reads that never came back are left out.
func (s *sim) checkLinearizable() {
	var history []porcupine.Operation
	for _, op := range s.kvOps {
		switch {
		case op.ret >= 0:
			history = append(history, porcupine.Operation{Input: op.in, Output: op.out, Call: op.call, Return: op.ret})
		case !op.in.read:
			step, applied := s.firstApplied[op.in.key+"="+op.in.value]
			if !applied {
				continue
			}
			history = append(history, porcupine.Operation{Input: op.in, Output: "", Call: op.call, Return: max(retTime(step), op.call+1)})
		}
	}
	switch res := porcupine.CheckOperationsTimeout(kvModel, history, 10*time.Second); res {
	case porcupine.Illegal:
		// Name the key whose history fails, with its operations in order.
		for _, part := range kvModel.Partition(history) {
			if porcupine.CheckOperations(kvModel, part) {
				continue
			}
			sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
			// The shortest failing prefix, and the operations around its end.
			n := len(part)
			for n > 1 && !porcupine.CheckOperations(kvModel, part[:n-1]) {
				n--
			}
			s.logf("  the first %d operations of this key already fail:", n)
			for _, op := range part[max(0, n-12):n] {
				ret := fmt.Sprint(op.Return / 3)
				where := ""
				for _, k := range s.kvOps {
					if k.in == op.Input && k.call == op.Call {
						where = fmt.Sprintf(" node %d index %d", k.node, k.index)
					}
				}
				s.logf("  [%d, %s] %s%s", op.Call/3, ret, kvModel.DescribeOperation(op.Input, op.Output), where)
			}
			break
		}
		s.fail("the KV history of %d operations is not linearizable", len(history))
	case porcupine.Unknown:
		s.t.Logf("seed %d: linearizability check timed out on %d operations", s.seed, len(history))
	}
	s.kvChecked += len(history)
}
