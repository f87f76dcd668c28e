package member

import (
	"context"
	"fmt"
	"strconv"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Auto-compaction, as etcd's --auto-compaction-mode and
// --auto-compaction-retention: the leader proposes each compaction
// through the log.
//
//   - periodic: keep the history of the last retention (a duration; a bare
//     number is hours). The revision is sampled every tenth of the
//     retention (at most an hour apart), and the store is compacted to the
//     revision sampled a retention ago.
//   - revision: keep the last retention revisions, checked every 5 minutes.

// AutoCompaction is a parsed auto-compaction setting.
type AutoCompaction struct {
	Mode      string        // "periodic" or "revision"; "" for none
	Period    time.Duration // periodic
	Revisions int64         // revision
}

// ParseAutoCompaction reads etcd's two flags. A retention of 0 turns
// auto-compaction off.
func ParseAutoCompaction(mode, retention string) (AutoCompaction, error) {
	if retention == "" || retention == "0" {
		return AutoCompaction{}, nil
	}
	switch mode {
	case "periodic", "":
		d, err := time.ParseDuration(retention)
		if err != nil {
			h, herr := strconv.ParseInt(retention, 10, 64)
			if herr != nil || h < 0 {
				return AutoCompaction{}, fmt.Errorf("--auto-compaction-retention %q: not a duration or a number of hours", retention)
			}
			d = time.Duration(h) * time.Hour
		}
		if d <= 0 {
			return AutoCompaction{}, nil
		}
		return AutoCompaction{Mode: "periodic", Period: d}, nil
	case "revision":
		n, err := strconv.ParseInt(retention, 10, 64)
		if err != nil || n < 0 {
			return AutoCompaction{}, fmt.Errorf("--auto-compaction-retention %q: not a number of revisions", retention)
		}
		if n == 0 {
			return AutoCompaction{}, nil
		}
		return AutoCompaction{Mode: "revision", Revisions: n}, nil
	}
	return AutoCompaction{}, fmt.Errorf("unknown auto-compaction mode %q", mode)
}

// revisionCheckInterval is how often revision mode looks, etcd's.
const revisionCheckInterval = 5 * time.Minute

// autoCompactLoop runs the configured auto-compaction while the member
// leads.
func (m *Member) autoCompactLoop(ac AutoCompaction) {
	defer m.done.Done()
	interval := revisionCheckInterval
	if ac.Mode == "periodic" {
		interval = max(min(ac.Period/10, time.Hour), time.Millisecond)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	// samples are the revisions seen at each tick, oldest first; a
	// periodic compaction takes the one a whole period old.
	var samples []int64
	keep := int(ac.Period / interval)
	for {
		select {
		case <-m.stopping:
			return
		case <-t.C:
		}
		rev := m.eng.Rev()
		var target int64
		switch ac.Mode {
		case "periodic":
			samples = append(samples, rev)
			if len(samples) <= keep {
				continue
			}
			target = samples[0]
			samples = samples[1:]
		case "revision":
			target = rev - ac.Revisions
		}
		if m.lead.Load() != m.id || target <= m.eng.CompactRev() || target <= 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		_, err := m.Propose(ctx, &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: target}})
		cancel()
		if err != nil {
			m.log.Warn("auto-compaction failed", "revision", target, "err", err)
		} else {
			m.log.Info("auto-compacted", "revision", target, "mode", ac.Mode)
		}
	}
}
