package engine

import (
	"sync/atomic"

	"github.com/cairn-kv/cairn/pagefile"
)

// Counters are the store's activity, counted as etcd's mvcc counts it for
// its metrics (the member exports them under etcd's names): a write
// transaction's puts, deletes and ranges, the put key-value bytes, and the
// transactions of more than one operation.
type Counters struct {
	Puts, Deletes, Ranges, Txns, PutBytes atomic.Int64
	// Leases granted and revoked (applied), renewed (on the primary),
	// and the revocations that came from expiry.
	LeasesGranted, LeasesRevoked, LeasesRenewed atomic.Int64
	// EventsSent counts the watch events delivered to watch streams,
	// PendingEvents those delivered and not yet taken by their readers.
	EventsSent, PendingEvents atomic.Int64
	// CompactedKeys counts the backend revisions compactions deleted.
	CompactedKeys atomic.Int64
}

// Counters returns the store's counters (safe to read at any time).
func (s *Store) Counters() *Counters { return &s.counters }

// txnCounts are one transaction's operations, added to the store's
// counters as it ends.
type txnCounts struct {
	puts, deletes, ranges, putBytes int64
}

func (c *Counters) add(t txnCounts) {
	if t.puts+t.deletes+t.ranges > 1 {
		c.Txns.Add(1)
	}
	if t.puts > 0 {
		c.Puts.Add(t.puts)
		c.PutBytes.Add(t.putBytes)
	}
	if t.deletes > 0 {
		c.Deletes.Add(t.deletes)
	}
	if t.ranges > 0 {
		c.Ranges.Add(t.ranges)
	}
}

// OnCommit sets what is told each commit's phases (the page file's
// rebalance, spill and write times), for etcd's commit metrics. Writer
// only.
func (s *Store) OnCommit(f func(pagefile.TxStats)) { s.onCommit = f }
