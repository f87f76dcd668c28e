package engine

import (
	"bytes"
	"cmp"
	"errors"
)

// ErrDuplicateKey is etcd's refusal of a transaction that writes a key twice
// on the path it takes.
var ErrDuplicateKey = errors.New("etcdserver: duplicate key given in txn request")

// ErrKeyNotFound refuses a put that keeps the value or lease of a key that
// does not exist.
var ErrKeyNotFound = errors.New("etcdserver: key not found")

// CompareTarget is what a compare looks at.
type CompareTarget uint8

const (
	CompareVersion CompareTarget = iota
	CompareCreate
	CompareMod
	CompareValue
	CompareLease
)

// CompareResult is how it must relate to the given value.
type CompareResult uint8

const (
	CompareEqual CompareResult = iota
	CompareGreater
	CompareLess
	CompareNotEqual
)

// Compare is one condition of a transaction, on a key or on every key of
// [Key, RangeEnd).
type Compare struct {
	Key, RangeEnd []byte
	Target        CompareTarget
	Result        CompareResult
	// The value to compare with, per Target.
	Version, CreateRevision, ModRevision, Lease int64
	Value                                       []byte
}

// OpType is what an operation of a transaction does.
type OpType uint8

const (
	OpRange OpType = iota
	OpPut
	OpDelete
	OpTxn
)

// Op is one operation of a transaction.
type Op struct {
	Type     OpType
	Key, End []byte // End: etcd's range end (nil: Key alone; "\x00": every key from Key)
	Value    []byte
	Lease    int64
	// OpPut: keep the key's current value or lease (the key must exist).
	IgnoreValue, IgnoreLease bool
	// OpRange: Rev 0 reads the transaction's own state, writes so far
	// included; another revision reads history.
	Range RangeOptions
	Txn   *TxnRequest // OpTxn
}

// TxnRequest is a transaction: if every compare holds, Success runs,
// otherwise Failure.
type TxnRequest struct {
	Compare          []Compare
	Success, Failure []Op
}

// OpResponse is one operation's result.
type OpResponse struct {
	Range   *RangeResult
	PrevKV  *KeyValue  // OpPut: the key before
	Deleted []KeyValue // OpDelete
	Txn     *TxnResponse
}

// TxnResponse is a transaction's result.
type TxnResponse struct {
	Succeeded bool
	Responses []OpResponse
	Rev       int64 // the store's revision after the transaction
}

// Txn runs a transaction as one revision (only if it writes). Every
// compare on the path it takes, nested ones included, is evaluated against
// the state before it, as etcd does; the path is checked for a key written
// twice before anything is written.
func (s *Store) Txn(req *TxnRequest) (*TxnResponse, error) {
	w := s.Write()
	path := s.choosePath(req, w.rev-1)
	if err := checkPath(req, path); err != nil {
		return nil, err
	}
	if err := s.checkOps(req, path, w.rev-1); err != nil {
		return nil, err
	}
	resp, err := w.runTxn(req, &path)
	if err != nil {
		return nil, err
	}
	w.End()
	resp.Rev = s.Rev()
	return resp, nil
}

// choosePath evaluates the compares of req and of the transactions nested
// on the branch taken, in order, and returns each outcome.
func (s *Store) choosePath(req *TxnRequest, rev int64) []bool {
	ok := true
	for i := range req.Compare {
		if !s.compare(&req.Compare[i], rev) {
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
		if op.Type == OpTxn && op.Txn != nil {
			path = append(path, s.choosePath(op.Txn, rev)...)
		}
	}
	return path
}

// compare evaluates one compare at rev. On a key that does not exist, a
// value compare fails and the other targets compare against zero.
func (s *Store) compare(c *Compare, rev int64) bool {
	end := c.RangeEnd
	var kvs []KeyValue
	if res, err := s.rangeAt(c.Key, end, rev); err == nil {
		kvs = res
	}
	if len(kvs) == 0 {
		if c.Target == CompareValue {
			return false
		}
		return compareKV(c, KeyValue{})
	}
	for _, kv := range kvs {
		if !compareKV(c, kv) {
			return false
		}
	}
	return true
}

func compareKV(c *Compare, kv KeyValue) bool {
	var r int
	switch c.Target {
	case CompareValue:
		r = bytes.Compare(kv.Value, c.Value)
	case CompareVersion:
		r = cmp.Compare(kv.Version, c.Version)
	case CompareCreate:
		r = cmp.Compare(kv.CreateRevision, c.CreateRevision)
	case CompareMod:
		r = cmp.Compare(kv.ModRevision, c.ModRevision)
	case CompareLease:
		r = cmp.Compare(kv.Lease, c.Lease)
	}
	switch c.Result {
	case CompareEqual:
		return r == 0
	case CompareNotEqual:
		return r != 0
	case CompareGreater:
		return r > 0
	case CompareLess:
		return r < 0
	}
	return false
}

// rangeAt reads [key, end) at rev with no options, for compares.
func (s *Store) rangeAt(key, end []byte, rev int64) ([]KeyValue, error) {
	res, err := s.Range(key, end, RangeOptions{Rev: rev})
	if err != nil {
		return nil, err
	}
	return res.KVs, nil
}

// walkPath calls fn on every operation of the branches path takes, nested
// transactions' included, in order.
func walkPath(req *TxnRequest, path []bool, fn func(op *Op)) {
	var walk func(req *TxnRequest)
	walk = func(req *TxnRequest) {
		ok := path[0]
		path = path[1:]
		ops := req.Success
		if !ok {
			ops = req.Failure
		}
		for i := range ops {
			fn(&ops[i])
			if ops[i].Type == OpTxn && ops[i].Txn != nil {
				walk(ops[i].Txn)
			}
		}
	}
	walk(req)
}

// checkOps refuses, against the state before the transaction (rev), what
// etcd refuses before a transaction writes anything: a put keeping the
// value or lease of a missing key or naming a lease that does not exist,
// then a read of a future or compacted revision.
func (s *Store) checkOps(req *TxnRequest, path []bool, rev int64) error {
	var err error
	walkPath(req, path, func(op *Op) {
		if err != nil || op.Type != OpPut {
			return
		}
		if op.IgnoreValue || op.IgnoreLease {
			if _, _, _, e := s.index.Get(op.Key, rev); e != nil {
				err = ErrKeyNotFound
				return
			}
		}
		if op.Lease != 0 && !op.IgnoreLease && !s.les.exists(op.Lease) {
			err = ErrLeaseNotFound
		}
	})
	if err != nil {
		return err
	}
	compacted := s.CompactRev()
	walkPath(req, path, func(op *Op) {
		switch {
		case err != nil || op.Type != OpRange || op.Range.Rev <= 0:
		case op.Range.Rev > rev:
			err = ErrFutureRev
		case op.Range.Rev < compacted:
			err = ErrCompacted
		}
	})
	return err
}

// checkPath refuses a path with an operation on no key, then one that puts
// a key twice or puts a key inside a range it deletes.
func checkPath(req *TxnRequest, path []bool) error {
	empty, writes := false, 0
	walkPath(req, path, func(op *Op) {
		empty = empty || (op.Type != OpTxn && len(op.Key) == 0)
		if op.Type == OpPut || op.Type == OpDelete {
			writes++
		}
	})
	if empty {
		return ErrEmptyKey
	}
	if writes < 2 {
		return nil // nothing to conflict with
	}
	var puts [][]byte
	var dels [][2][]byte
	walkPath(req, path, func(op *Op) {
		switch op.Type {
		case OpPut:
			puts = append(puts, op.Key)
		case OpDelete:
			dels = append(dels, [2][]byte{op.Key, op.End})
		}
	})
	seen := map[string]bool{}
	for _, k := range puts {
		if seen[string(k)] {
			return ErrDuplicateKey
		}
		seen[string(k)] = true
		for _, d := range dels {
			if inRange(k, d[0], d[1]) {
				return ErrDuplicateKey
			}
		}
	}
	return nil
}

// inRange reports whether key lies in etcd's range [start, end).
func inRange(key, start, end []byte) bool {
	switch {
	case end == nil:
		return bytes.Equal(key, start)
	case len(end) == 1 && end[0] == 0:
		return bytes.Compare(key, start) >= 0
	}
	return bytes.Compare(key, start) >= 0 && bytes.Compare(key, end) < 0
}

// runTxn runs the branch path says, consuming its outcomes.
func (w *TxnWrite) runTxn(req *TxnRequest, path *[]bool) (*TxnResponse, error) {
	ok := (*path)[0]
	*path = (*path)[1:]
	ops := req.Success
	if !ok {
		ops = req.Failure
	}
	resp := &TxnResponse{Succeeded: ok, Responses: make([]OpResponse, 0, len(ops))}
	for _, op := range ops {
		var r OpResponse
		var err error
		switch op.Type {
		case OpRange:
			// Reads see the transaction's own writes so far.
			o := op.Range
			if o.Rev <= 0 {
				o.Rev = w.rev - 1
				if len(w.events) > 0 {
					o.Rev = w.rev
				}
			}
			w.counts.ranges++
			r.Range, err = w.s.rangeInTxn(op.Key, op.End, o)
		case OpPut:
			value, lease := op.Value, op.Lease
			if op.IgnoreValue || op.IgnoreLease {
				// checkOps saw the key; nothing on the path wrote it since.
				prev := w.get(op.Key)
				if prev == nil {
					return nil, ErrKeyNotFound
				}
				if op.IgnoreValue {
					value = prev.Value
				}
				if op.IgnoreLease {
					lease = prev.Lease
				}
			}
			r.PrevKV, err = w.Put(op.Key, value, lease)
		case OpDelete:
			r.Deleted, err = w.DeleteRange(op.Key, op.End)
		case OpTxn:
			r.Txn, err = w.runTxn(op.Txn, path)
		}
		if err != nil {
			return nil, err
		}
		resp.Responses = append(resp.Responses, r)
	}
	return resp, nil
}

// rangeInTxn reads inside a write transaction, whose writes are in the open
// batch: it reads through the batch itself.
func (s *Store) rangeInTxn(key, end []byte, o RangeOptions) (*RangeResult, error) {
	res := &RangeResult{Rev: o.Rev}
	if o.CountOnly {
		res.Count = s.index.CountRevisions(key, end, o.Rev)
		return res, nil
	}
	if err := s.collect(s.batch, s.currentBuffer(), key, end, o.Rev, o, res); err != nil {
		return nil, err
	}
	return res, nil
}
