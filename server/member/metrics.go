package member

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are a member's Prometheus metrics, under etcd's names (the ones
// dashboards and alerts use). Each member has its own registry.
type metrics struct {
	reg *prometheus.Registry

	walFsync        prometheus.Histogram
	backendCommit   prometheus.Histogram
	proposalsFailed prometheus.Counter
	slowApplies     prometheus.Counter
	// The rest of etcd's families (metrics_etcd.go).
	applyDuration                             *prometheus.HistogramVec
	applyObs                                  map[string][2]prometheus.Observer // by op: failed, succeeded (applier only)
	defragDuration, snapshotDuration          prometheus.Histogram
	hashDuration, hashRevDuration             prometheus.Histogram
	leaseTTL                                  prometheus.Histogram
	leasesExpired, healthSuccess, healthFail  prometheus.Counter
	readIndexFailed, slowReadIndex            prometheus.Counter
	defragInflight, snapshotApplying          prometheus.Gauge
	serverID                                  *prometheus.GaugeVec // set once the member's id is known
	walWriteBytes, compactLast                prometheus.Gauge
	walWrite                                  prometheus.Histogram
	compactPause, compactTotal                prometheus.Histogram
	indexCompactPause                         prometheus.Histogram
	snapMarshal, snapSave, snapFsync          prometheus.Histogram
	snapDBFsync, snapDBSave                   prometheus.Histogram
	commitRebalance, commitSpill, commitWrite prometheus.Histogram
	peerRTT                                   *prometheus.HistogramVec // by To
	// heartbeatSendFailures counts heartbeats a leader sent late.
	heartbeatSendFailures prometheus.Counter
	// Snapshots sent to followers and received from the leader, by peer
	// id (hex), as etcd counts them.
	snapSent, snapSendFailed        *prometheus.CounterVec
	snapReceived, snapReceiveFailed *prometheus.CounterVec
	// Learner promotions that succeeded, and those refused by reason.
	promoted      prometheus.Counter
	promoteFailed *prometheus.CounterVec
}

// promote counts a promotion's outcome.
func (mt *metrics) promote(err error) {
	if err == nil {
		mt.promoted.Inc()
		return
	}
	mt.promoteFailed.WithLabelValues(err.Error()).Inc()
}

// etcd's buckets for disk latencies: 1 ms to about 8 s.
var diskBuckets = prometheus.ExponentialBuckets(0.001, 2, 14)

func newMetrics(m *Member) *metrics {
	mt := &metrics{
		reg: prometheus.NewRegistry(),
		walFsync: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "etcd", Subsystem: "disk",
			Name: "wal_fsync_duration_seconds", Help: "The latency distributions of fsync called by WAL.", Buckets: diskBuckets}),
		backendCommit: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "etcd", Subsystem: "disk",
			Name: "backend_commit_duration_seconds", Help: "The latency distributions of commit called by backend.", Buckets: diskBuckets}),
		proposalsFailed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "server",
			Name: "proposals_failed_total", Help: "The total number of failed proposals seen."}),
		slowApplies: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "server",
			Name: "slow_apply_total", Help: "The total number of slow apply requests (likely overloaded from slow disk)."}),
		heartbeatSendFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "server",
			Name: "heartbeat_send_failures_total", Help: "The total number of leader heartbeat send failures (likely overloaded from slow disk)."}),
	}
	snapCounter := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "network", Name: name, Help: help}, []string{label})
	}
	mt.snapSent = snapCounter("snapshot_send_success", "Total number of successful snapshot sends", "To")
	mt.snapSendFailed = snapCounter("snapshot_send_failures", "Total number of snapshot send failures", "To")
	mt.snapReceived = snapCounter("snapshot_receive_success", "Total number of successful snapshot receives", "From")
	mt.snapReceiveFailed = snapCounter("snapshot_receive_failures", "Total number of snapshot receive failures", "From")
	mt.promoted = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "server",
		Name: "learner_promote_successes", Help: "The total number of successful learner promotions while this member is leader."})
	mt.promoteFailed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "server",
		Name: "learner_promote_failures", Help: "The total number of failed learner promotions (likely learner not ready) while this member is leader."}, []string{"Reason"})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "etcd", Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "etcd", Name: name, Help: help}, f)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	mt.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		mt.walFsync, mt.backendCommit, mt.proposalsFailed, mt.slowApplies, mt.heartbeatSendFailures,
		mt.snapSent, mt.snapSendFailed, mt.snapReceived, mt.snapReceiveFailed, mt.promoted, mt.promoteFailed,
		gauge("server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.",
			func() float64 { return b2f(m.learner.Load()) }),
		gauge("server_has_leader", "Whether or not a leader exists. 1 is existence, 0 is not.",
			func() float64 { return b2f(m.lead.Load() != 0) }),
		gauge("server_is_leader", "Whether or not this member is a leader. 1 if is, 0 otherwise.",
			func() float64 { return b2f(m.lead.Load() == m.id) }),
		counter("server_leader_changes_seen_total", "The number of leader changes seen.",
			func() float64 { return float64(m.leaderChanges.Load()) }),
		gauge("server_proposals_committed_total", "The total number of consensus proposals committed.",
			func() float64 { return float64(m.commit.Load()) }),
		gauge("server_proposals_applied_total", "The total number of consensus proposals applied.",
			func() float64 { return float64(m.AppliedIndex()) }),
		gauge("server_proposals_pending", "The current number of pending proposals to commit.",
			func() float64 { return float64(m.pending()) }),
		gauge("mvcc_db_total_size_in_bytes", "Total size of the underlying database physically allocated in bytes.",
			func() float64 { size := m.eng.BackendSize(); return float64(size) }),
		gauge("mvcc_db_total_size_in_use_in_bytes", "Total size of the underlying database logically in use in bytes.",
			func() float64 { return float64(m.eng.BackendInUse()) }),
		gauge("server_quota_backend_bytes", "Current backend storage quota size in bytes.",
			func() float64 { return float64(m.cfg.QuotaBackendBytes) }),
		gauge("debugging_mvcc_current_revision", "The current revision of store.",
			func() float64 { return float64(m.eng.Rev()) }),
		gauge("debugging_mvcc_compact_revision", "The revision of the last compaction in store.",
			func() float64 { return float64(m.eng.CompactRev()) }),
	)
	mt.registerEtcdFamilies(m, gauge, counter, b2f)
	version := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "server", Name: "version",
		Help: "Which version is running. 1 for 'server_version' label with current version."}, []string{"server_version"})
	version.WithLabelValues(Version).Set(1)
	cluster := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "etcd", Name: "cluster_version",
		Help: "Which version is running. 1 for 'cluster_version' label with current cluster version"}, []string{"cluster_version"})
	cluster.WithLabelValues("3.5").Set(1)
	mt.reg.MustRegister(version, cluster)
	return mt
}
