package member

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cairn-kv/cairn/engine"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// checkQuota refuses a write of cost bytes that would take the page file
// past its quota, raising the NOSPACE alarm through the log first, as etcd
// does; writes that add nothing always pass.
func (m *Member) CheckQuota(ctx context.Context, cost int64) error {
	if cost == 0 {
		return nil
	}
	size := m.eng.BackendSize()
	if size+cost <= m.cfg.QuotaBackendBytes {
		return nil
	}
	if slices.Contains(m.eng.Alarms(), engine.Alarm{MemberID: m.id, Type: engine.AlarmNoSpace}) {
		return rpctypes.ErrGRPCNoSpace // raised already: no entry (and fsync) per refusal
	}
	_, _ = m.Propose(ctx, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{
		Action: pb.AlarmRequest_ACTIVATE, MemberID: m.id, Alarm: pb.AlarmType_NOSPACE}})
	return rpctypes.ErrGRPCNoSpace
}

// noSpaceRecovered is the share of the quota the page file must be under,
// after compaction and defragmentation, for --auto-recover-nospace to
// disarm the alarm: a file just under the quota would raise it again at
// the next put.
const noSpaceRecovered = 0.9

// autoRecoverLoop recovers from this member's NOSPACE alarm as an operator
// would by etcd's procedure (--auto-recover-nospace): compact the history
// at the current revision through the log and wait for its deletions,
// defragment, and disarm the alarm once the page file is under 90% of the
// quota. When the live keys alone fill more than that, the alarm stays
// (reads and deletes go on, as in etcd) and the member tries again at the
// next look, after deletes have made room.
func (m *Member) autoRecoverLoop() {
	defer m.done.Done()
	interval := m.cfg.AutoRecoverNoSpaceInterval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	lastRev := int64(-1) // the revision a recovery last fell short at
	for {
		select {
		case <-m.stopping:
			return
		case <-t.C:
		}
		if !slices.Contains(m.eng.Alarms(), engine.Alarm{MemberID: m.id, Type: engine.AlarmNoSpace}) {
			lastRev = -1
			continue
		}
		rev := m.eng.Rev()
		if rev == lastRev {
			continue // nothing deleted since it fell short
		}
		size, recovered, err := m.recoverNoSpace(rev)
		switch {
		case err != nil:
			m.log.Warn("recovering from NOSPACE failed", "err", err)
		case recovered:
			lastRev = -1
		default:
			lastRev = rev
			m.log.Warn("cannot recover from NOSPACE: the live keys fill the quota", "size", size,
				"quota-size", m.cfg.QuotaBackendBytes, "needed", int64(float64(m.cfg.QuotaBackendBytes)*noSpaceRecovered))
		}
	}
}

// recoverNoSpace compacts at rev, defragments, and disarms this member's
// NOSPACE alarm if that made room; it returns the page file's size it came
// to and whether it disarmed.
func (m *Member) recoverNoSpace(rev int64) (size int64, recovered bool, err error) {
	m.log.Warn("recovering from NOSPACE", "compact-revision", rev, "size", m.eng.BackendSize(), "quota-size", m.cfg.QuotaBackendBytes)
	if rev > m.eng.CompactRev() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		_, err := m.Propose(ctx, &pb.InternalRaftRequest{Compaction: &pb.CompactionRequest{Revision: rev, Physical: true}})
		cancel()
		if err != nil && !errors.Is(err, engine.ErrCompacted) {
			return 0, false, fmt.Errorf("compacting at %d: %w", rev, err)
		}
	}
	if err := m.Defragment(); err != nil {
		return 0, false, fmt.Errorf("defragmenting: %w", err)
	}
	size = m.eng.BackendSize()
	if float64(size) > float64(m.cfg.QuotaBackendBytes)*noSpaceRecovered {
		return size, false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if _, err := m.Propose(ctx, &pb.InternalRaftRequest{Alarm: &pb.AlarmRequest{
		Action: pb.AlarmRequest_DEACTIVATE, MemberID: m.id, Alarm: pb.AlarmType_NOSPACE}}); err != nil {
		return size, false, fmt.Errorf("disarming the alarm: %w", err)
	}
	m.log.Warn("recovered from NOSPACE: alarm disarmed", "size", size, "quota-size", m.cfg.QuotaBackendBytes)
	return size, true, nil
}
