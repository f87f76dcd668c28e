package member

import (
	"context"
	"slices"

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
