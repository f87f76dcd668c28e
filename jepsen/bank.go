package jepsen

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/anishathalye/porcupine"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// bank: accounts whose balances move by transfers, each a Txn that
// checks both balances are what the client last read and writes both.
// Every read of all accounts must see the total conserved, and the
// history of reads and transfers must be linearizable (porcupine over
// the whole bank): a lost acknowledged transfer, a half-applied one or a
// stale read makes it impossible.
type bank struct{}

const (
	bankAccounts = 5
	bankInitial  = 100
)

type bankState [bankAccounts]int64

type bankInput struct {
	Op     string `json:"op"` // read, transfer
	From   int    `json:"from"`
	To     int    `json:"to"`
	Amount int64  `json:"amount,omitempty"`
	// The balances the transfer expects (what the client last read).
	ExpectFrom int64 `json:"expect_from"`
	ExpectTo   int64 `json:"expect_to"`
}

type bankOutput struct {
	Balances bankState `json:"balances,omitempty"` // read
	OK       bool      `json:"ok,omitempty"`       // transfer: it applied
	Rev      int64     `json:"rev,omitempty"`
	unknown  bool
}

func (bank) Name() string { return "bank" }

func bankKey(i int) string { return fmt.Sprintf("b/%d", i) }

// Setup opens the accounts, once, in one transaction.
func (bank) Setup(ctx context.Context, r *Run) error {
	cl, err := r.Cluster.Client(0)
	if err != nil {
		return err
	}
	defer cl.Close()
	var puts []clientv3.Op
	for i := range bankAccounts {
		puts = append(puts, clientv3.OpPut(bankKey(i), strconv.Itoa(bankInitial)))
	}
	sctx, cancel := context.WithTimeout(ctx, 10*opTimeout)
	defer cancel()
	_, err = cl.Txn(sctx).If(clientv3.Compare(clientv3.CreateRevision(bankKey(0)), "=", 0)).Then(puts...).Commit()
	return err
}

func (bank) Run(ctx context.Context, r *Run) {
	var wg sync.WaitGroup
	for range r.Cluster.Members() {
		c := r.newClient(-1)
		wg.Add(1)
		go func() { defer wg.Done(); runBank(ctx, r, c) }()
	}
	wg.Wait()
}

func readBank(ctx context.Context, cl *clientv3.Client) (bankOutput, error) {
	g, err := cl.Get(ctx, "b/", clientv3.WithPrefix())
	if err != nil {
		return bankOutput{}, err
	}
	out := bankOutput{Rev: g.Header.Revision}
	if len(g.Kvs) != bankAccounts {
		return out, fmt.Errorf("jepsen: %d accounts read", len(g.Kvs))
	}
	for i, kv := range g.Kvs {
		out.Balances[i], _ = strconv.ParseInt(string(kv.Value), 10, 64)
	}
	return out, nil
}

func runBank(ctx context.Context, r *Run, c *client) {
	cl, err := r.Cluster.Client(c.member)
	if err != nil {
		return
	}
	defer cl.Close()
	var seen *bankState
	for ctx.Err() == nil {
		if seen == nil || c.rng.Intn(2) == 0 {
			op := r.History.Invoke(c.process, "bank", bankInput{Op: "read"}, c.member)
			octx, cancel := context.WithTimeout(ctx, opTimeout)
			out, err := readBank(octx, cl)
			cancel()
			if err != nil {
				op.Fail(err)
				backoff(ctx)
				continue
			}
			op.OK(out)
			b := out.Balances
			seen = &b
			continue
		}
		from := c.rng.Intn(bankAccounts)
		to := (from + 1 + c.rng.Intn(bankAccounts-1)) % bankAccounts
		if seen[from] <= 0 {
			seen = nil
			continue
		}
		in := bankInput{Op: "transfer", From: from, To: to, Amount: 1 + c.rng.Int63n(min(5, seen[from])),
			ExpectFrom: seen[from], ExpectTo: seen[to]}
		op := r.History.Invoke(c.process, "bank", in, c.member)
		octx, cancel := context.WithTimeout(ctx, opTimeout)
		t, err := cl.Txn(octx).If(
			clientv3.Compare(clientv3.Value(bankKey(from)), "=", strconv.FormatInt(in.ExpectFrom, 10)),
			clientv3.Compare(clientv3.Value(bankKey(to)), "=", strconv.FormatInt(in.ExpectTo, 10)),
		).Then(
			clientv3.OpPut(bankKey(from), strconv.FormatInt(in.ExpectFrom-in.Amount, 10)),
			clientv3.OpPut(bankKey(to), strconv.FormatInt(in.ExpectTo+in.Amount, 10)),
		).Commit()
		cancel()
		seen = nil // read again before the next transfer
		if err != nil {
			completeWrite(op, err)
			backoff(ctx)
			continue
		}
		op.OK(bankOutput{OK: t.Succeeded, Rev: t.Header.Revision})
	}
}

var bankModel = porcupine.Model{
	Init: func() any {
		var s bankState
		for i := range s {
			s[i] = bankInitial
		}
		return s
	},
	Step: func(state, input, output any) (bool, any) {
		st, in, out := state.(bankState), input.(bankInput), output.(bankOutput)
		if in.Op == "read" {
			return out.Balances == st, st
		}
		match := st[in.From] == in.ExpectFrom && st[in.To] == in.ExpectTo
		if !out.unknown && out.OK != match {
			return false, st
		}
		if match {
			st[in.From] -= in.Amount
			st[in.To] += in.Amount
		}
		return true, st
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(bankInput), output.(bankOutput)
		if in.Op == "read" {
			return fmt.Sprintf("read %v", out.Balances)
		}
		result := fmt.Sprint(out.OK)
		if out.unknown {
			result = "unknown"
		}
		return fmt.Sprintf("transfer %d from %d (%d) to %d (%d): %s", in.Amount, in.From, in.ExpectFrom, in.To, in.ExpectTo, result)
	},
	DescribeState: func(state any) string { return fmt.Sprint(state.(bankState)) },
}

func (bank) Check(ctx context.Context, r *Run) Result {
	res := Result{Workload: "bank", Valid: true, Stats: map[string]any{}}
	ops := r.History.Ops("bank")
	res.count(ops)
	transfers := 0
	for _, op := range ops {
		if op.Status != StatusOK {
			continue
		}
		out := op.Out.(bankOutput)
		if op.In.(bankInput).Op == "transfer" {
			if out.OK {
				transfers++
			}
			continue
		}
		var total int64
		for _, b := range out.Balances {
			total += b
			if b < 0 {
				res.anomaly("a negative balance read at revision %d: %v", out.Rev, out.Balances)
			}
		}
		if total != bankAccounts*bankInitial {
			res.anomaly("a read at revision %d totals %d, not %d: %v", out.Rev, total, bankAccounts*bankInitial, out.Balances)
		}
	}
	res.Stats["transfers"] = transfers
	if transfers == 0 {
		res.anomaly("no transfer succeeded")
	}
	hist := porcupineOps(ops, func(op Op) any { return bankOutput{unknown: true} })
	checkLinearizable(&res, r.Dir, "bank", bankModel, hist, r.cfg.CheckTimeout)
	return res
}
