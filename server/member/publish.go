package member

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/membershippb"
)

// publishRetry is how long publish waits between tries.
const publishRetry = 500 * time.Millisecond

// publish records this member's name and client URLs in the cluster
// through the log, as etcd's members do once they know a leader, so that
// every member's MemberList shows them. It tries until it succeeds or the
// member stops.
func (m *Member) publish() {
	defer m.done.Done()
	select {
	case <-m.readyc:
	case <-m.stopping:
		return
	}
	req := &pb.InternalRaftRequest{ClusterMemberAttrSet: &membershippb.ClusterMemberAttrSetRequest{Member_ID: m.id,
		MemberAttributes: &membershippb.Attributes{Name: m.cfg.Name, ClientUrls: m.cfg.AdvertiseClientURLs}}}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		go func() {
			select {
			case <-m.stopping:
				cancel()
			case <-ctx.Done():
			}
		}()
		_, err := m.Propose(ctx, req)
		cancel()
		if err == nil {
			m.log.Info("published local member to cluster through raft", "name", m.cfg.Name, "client-urls", m.cfg.AdvertiseClientURLs)
			close(m.published)
			return
		}
		select {
		case <-time.After(publishRetry):
		case <-m.stopping:
			return
		}
	}
}
