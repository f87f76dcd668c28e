package member

import (
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/raft"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// registerEtcdFamilies registers etcd's families beyond the core ones of
// newMetrics, under etcd's names, types, labels and buckets; the values
// come from the engine's counters and the member's own.
func (mt *metrics) registerEtcdFamilies(m *Member, gauge, counter func(name, help string, f func() float64) prometheus.Collector, b2f func(bool) float64) {
	// (The engine is opened after the metrics are made: it is read at
	// each scrape.)
	i2f := func(pick func(*engine.Counters) *atomic.Int64) func() float64 {
		return func() float64 { return float64(pick(m.eng.Counters()).Load()) }
	}
	watch := func(pick func(streams, watchers, slow int) int) func() float64 {
		return func() float64 { return float64(pick(m.eng.WatchCounts())) }
	}
	hist := func(subsystem, name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "etcd", Subsystem: subsystem, Name: name, Help: help, Buckets: buckets})
	}
	simple := func(subsystem, name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd", Subsystem: subsystem, Name: name, Help: help})
	}
	mt.applyObs = map[string][2]prometheus.Observer{}
	mt.applyDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "etcd", Subsystem: "server", Name: "apply_duration_seconds",
		Help:    "The latency distributions of v2 apply called by backend.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 20)}, []string{"version", "op", "success"})
	mt.defragDuration = hist("disk", "backend_defrag_duration_seconds", "The latency distribution of backend defragmentation.", prometheus.ExponentialBuckets(.1, 2, 13))
	mt.snapshotDuration = hist("disk", "backend_snapshot_duration_seconds", "The latency distribution of backend snapshots.", prometheus.ExponentialBuckets(.01, 2, 17))
	mt.hashDuration = hist("mvcc", "hash_duration_seconds", "The latency distribution of storage hash operation.", prometheus.ExponentialBuckets(.01, 2, 15))
	mt.hashRevDuration = hist("mvcc", "hash_rev_duration_seconds", "The latency distribution of storage hash by revision operation.", prometheus.ExponentialBuckets(.01, 2, 15))
	mt.leaseTTL = hist("debugging", "lease_ttl_total", "Bucketed histogram of lease TTLs.", prometheus.ExponentialBuckets(1, 2, 24))
	mt.leasesExpired = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "etcd_debugging", Subsystem: "server", Name: "lease_expired_total", Help: "The total number of expired leases."})
	mt.healthSuccess = simple("server", "health_success", "The total number of successful health checks")
	mt.healthFail = simple("server", "health_failures", "The total number of failed health checks")
	mt.readIndexFailed = simple("server", "read_indexes_failed_total", "The total number of failed read indexes seen.")
	mt.slowReadIndex = simple("server", "slow_read_indexes_total", "The total number of pending read indexes not in sync with leader's or timed out read index requests.")
	mt.defragInflight = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "disk", Name: "defrag_inflight", Help: "Whether or not defrag is active on the member. 1 means active, 0 means not."})
	mt.snapshotApplying = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "server", Name: "snapshot_apply_in_progress_total", Help: "1 if the server is applying the incoming snapshot. 0 if none."})
	mt.serverID = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "server", Name: "id",
		Help: "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID."}, []string{"server_id"})
	goVersion := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "server", Name: "go_version",
		Help: "Which Go version server is running with. 1 for 'server_go_version' label with current version."}, []string{"server_go_version"})
	goVersion.WithLabelValues(runtime.Version()).Set(1)
	mt.walWriteBytes = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "disk", Name: "wal_write_bytes_total", Help: "Total number of bytes written in WAL."})
	mt.walWrite = hist("disk", "wal_write_duration_seconds", "The latency distributions of write called by WAL.", prometheus.ExponentialBuckets(0.001, 2, 14))
	mvccHist := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "etcd_debugging", Subsystem: "mvcc", Name: name, Help: help, Buckets: buckets})
	}
	mt.compactPause = mvccHist("db_compaction_pause_duration_milliseconds", "Bucketed histogram of db compaction pause duration.", prometheus.ExponentialBuckets(1, 2, 13))
	mt.compactTotal = mvccHist("db_compaction_total_duration_milliseconds", "Bucketed histogram of db compaction total duration.", prometheus.ExponentialBuckets(100, 2, 14))
	mt.indexCompactPause = mvccHist("index_compaction_pause_duration_milliseconds", "Bucketed histogram of index compaction pause duration.", prometheus.ExponentialBuckets(0.5, 2, 14))
	mt.compactLast = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "etcd_debugging", Subsystem: "mvcc", Name: "db_compaction_last", Help: "The unix time of the last db compaction. Resets to 0 on start."})
	mt.snapMarshal = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "etcd_debugging", Subsystem: "snap", Name: "save_marshalling_duration_seconds",
		Help: "The marshalling cost distributions of save called by snapshot.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	mt.snapSave = prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "etcd_debugging", Subsystem: "snap", Name: "save_total_duration_seconds",
		Help: "The total latency distributions of save called by snapshot.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	mt.snapFsync = hist("snap", "fsync_duration_seconds", "The latency distributions of fsync called by snap.", prometheus.ExponentialBuckets(0.001, 2, 14))
	mt.snapDBFsync = hist("snap_db", "fsync_duration_seconds", "The latency distributions of fsyncing .snap.db file", prometheus.ExponentialBuckets(0.001, 2, 14))
	mt.snapDBSave = hist("snap_db", "save_total_duration_seconds", "The total latency distributions of v3 snapshot save", prometheus.ExponentialBuckets(0.1, 2, 10))
	phase := func(name string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "etcd_debugging", Subsystem: "disk", Name: "backend_commit_" + name + "_duration_seconds",
			Help: "The latency distributions of commit." + name + " called by bboltdb backend.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	}
	mt.commitRebalance, mt.commitSpill, mt.commitWrite = phase("rebalance"), phase("spill"), phase("write")
	mt.reg.MustRegister(mt.commitRebalance, mt.commitSpill, mt.commitWrite)
	mt.peerRTT = newRTTMetric(mt.reg)
	mt.registerNeverUsed()
	mt.reg.MustRegister(mt.snapMarshal, mt.snapSave, mt.snapFsync, mt.snapDBFsync, mt.snapDBSave)
	mt.reg.MustRegister(mt.walWriteBytes, mt.walWrite, mt.compactPause, mt.compactTotal, mt.indexCompactPause, mt.compactLast)
	mt.reg.MustRegister(mt.applyDuration, mt.defragDuration, mt.snapshotDuration, mt.hashDuration, mt.hashRevDuration, mt.leaseTTL,
		mt.leasesExpired, mt.healthSuccess, mt.healthFail, mt.readIndexFailed, mt.slowReadIndex, mt.defragInflight, mt.snapshotApplying, mt.serverID, goVersion,
		counter("mvcc_put_total", "Total number of puts seen by this member.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.Puts })),
		counter("mvcc_delete_total", "Total number of deletes seen by this member.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.Deletes })),
		counter("mvcc_range_total", "Total number of ranges seen by this member.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.Ranges })),
		counter("mvcc_txn_total", "Total number of txns seen by this member.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.Txns })),
		counter("debugging_mvcc_range_total", "Total number of ranges seen by this member.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.Ranges })),
		gauge("debugging_mvcc_total_put_size_in_bytes", "The total size of put kv pairs seen by this member.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.PutBytes })),
		gauge("debugging_mvcc_keys_total", "Total number of keys.", func() float64 { return float64(m.eng.Keys()) }),
		gauge("debugging_mvcc_watch_stream_total", "Total number of watch streams.", watch(func(s, _, _ int) int { return s })),
		gauge("debugging_mvcc_watcher_total", "Total number of watchers.", watch(func(_, w, _ int) int { return w })),
		gauge("debugging_mvcc_slow_watcher_total", "Total number of unsynced slow watchers.", watch(func(_, _, s int) int { return s })),
		counter("debugging_mvcc_events_total", "Total number of events sent by this member.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.EventsSent })),
		gauge("debugging_mvcc_pending_events_total", "Total number of pending events to be sent.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.PendingEvents })),
		counter("debugging_mvcc_db_compaction_keys_total", "Total number of db keys compacted.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.CompactedKeys })),
		counter("debugging_lease_granted_total", "The total number of granted leases.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.LeasesGranted })),
		counter("debugging_lease_renewed_total", "The number of renewed leases seen by the leader.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.LeasesRenewed })),
		counter("debugging_lease_revoked_total", "The total number of revoked leases.", i2f(func(c *engine.Counters) *atomic.Int64 { return &c.LeasesRevoked })),
		gauge("debugging_auth_revision", "The current revision of auth store.", func() float64 { _, rev := m.eng.AuthStatus(); return float64(rev) }),
		gauge("mvcc_db_open_read_transactions", "The number of currently open read transactions", func() float64 { return float64(m.eng.Backend().Stats().OpenTxN) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "os_fd_used", Help: "The number of used file descriptors."}, fdUsed),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "os_fd_limit", Help: "The file descriptor limit."}, fdLimit),
	)
}

// fdUsed counts this process's open file descriptors.
func fdUsed() float64 {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return float64(len(fds))
}

// fdLimit is this process's file descriptor limit.
func fdLimit() float64 {
	var r unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &r) != nil {
		return 0
	}
	return float64(r.Cur)
}

// walWritten records a WAL append's write (under the WAL's lock).
func (mt *metrics) walWritten(n int, d time.Duration) {
	mt.walWriteBytes.Add(float64(n))
	mt.walWrite.Observe(d.Seconds())
}

// ms is a duration in milliseconds, as etcd's compaction histograms take it.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// peerMetrics are etcd's etcd_network_peer_* families, told by the
// transport (transport.Observer).
type peerMetrics struct {
	local                          func() uint64
	sentBytes, sentFailures        *prometheus.CounterVec // by To
	receivedBytes, receiveFailures *prometheus.CounterVec // by From
	active                         *prometheus.GaugeVec   // by Local, Remote
	disconnected                   *prometheus.CounterVec // by Local, Remote
}

func newPeerMetrics(reg prometheus.Registerer, local func() uint64) *peerMetrics {
	vec := func(name, help, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "network", Name: name, Help: help}, []string{label})
	}
	p := &peerMetrics{local: local,
		sentBytes:       vec("peer_sent_bytes_total", "The total number of bytes sent to peers.", "To"),
		sentFailures:    vec("peer_sent_failures_total", "The total number of send failures from peers.", "To"),
		receivedBytes:   vec("peer_received_bytes_total", "The total number of bytes received from peers.", "From"),
		receiveFailures: vec("peer_received_failures_total", "The total number of receive failures from peers.", "From"),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "etcd", Subsystem: "network", Name: "active_peers",
			Help: "The current number of active peer connections."}, []string{"Local", "Remote"}),
		disconnected: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "etcd", Subsystem: "network", Name: "disconnected_peers_total",
			Help: "The total number of disconnected peers."}, []string{"Local", "Remote"}),
	}
	reg.MustRegister(p.sentBytes, p.sentFailures, p.receivedBytes, p.receiveFailures, p.active, p.disconnected)
	return p
}

func hexID(id uint64) string { return strconv.FormatUint(id, 16) }

func (p *peerMetrics) Sent(to uint64, n int) { p.sentBytes.WithLabelValues(hexID(to)).Add(float64(n)) }
func (p *peerMetrics) SendFailed(to uint64)  { p.sentFailures.WithLabelValues(hexID(to)).Inc() }
func (p *peerMetrics) Received(from uint64, n int) {
	p.receivedBytes.WithLabelValues(hexID(from)).Add(float64(n))
}
func (p *peerMetrics) ReceiveFailed(from uint64) {
	p.receiveFailures.WithLabelValues(hexID(from)).Inc()
}
func (p *peerMetrics) Active(peer uint64, up bool) {
	local, remote := hexID(p.local()), hexID(peer)
	if up {
		p.active.WithLabelValues(local, remote).Inc()
		return
	}
	p.active.WithLabelValues(local, remote).Dec()
	p.disconnected.WithLabelValues(local, remote).Inc()
}

// saveSnap writes a .snap file, timed as etcd times it.
func (m *Member) saveSnap(s raft.SnapshotMeta) error {
	start := time.Now()
	t, err := writeSnapTimed(m.fs, m.snapDir, s)
	if err == nil {
		m.metrics.snapMarshal.Observe(t.marshal.Seconds())
		m.metrics.snapFsync.Observe(t.fsync.Seconds())
		m.metrics.snapSave.Observe(time.Since(start).Seconds())
	}
	return err
}

// committed records a page-file commit's phases under bbolt's names: the
// page file merges small nodes (rebalance), splits and serializes them
// (spill), and writes and syncs the pages (write).
func (mt *metrics) committed(st pagefile.TxStats) {
	mt.commitRebalance.Observe(st.Rebalance.Seconds())
	mt.commitSpill.Observe(st.Spill.Seconds())
	mt.commitWrite.Observe(st.WriteTime.Seconds())
}

// applyObserver is the apply-duration series of op and its outcome, looked
// up once (applier only: the apply role is held).
func (mt *metrics) applyObserver(op string, ok bool) prometheus.Observer {
	i := 0
	if ok {
		i = 1
	}
	obs := mt.applyObs[op]
	if obs[i] == nil {
		obs[i] = mt.applyDuration.WithLabelValues("v3", op, strconv.FormatBool(ok))
		mt.applyObs[op] = obs
	}
	return obs[i]
}

// registerNeverUsed registers, at zero, the families etcd serves for parts
// cairn does not have: etcd's v2 store (cairn keeps no v2 store, so its
// reads and writes stay 0) and etcd's grpc-proxy (0 on an etcd member
// too). Dashboards and alerts that name them find them.
func (mt *metrics) registerNeverUsed() {
	c := func(ns, name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help})
	}
	g := func(ns, name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help})
	}
	reads := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "etcd_debugging", Subsystem: "store", Name: "reads_total",
		Help: "Total number of reads action by (get/getRecursive), local to this member."}, []string{"action"})
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "etcd_debugging", Subsystem: "store", Name: "writes_total",
		Help: "Total number of writes (e.g. set/compareAndDelete) seen by this member."}, []string{"action"})
	for _, a := range []string{"get", "getRecursive"} {
		reads.WithLabelValues(a)
	}
	for _, a := range []string{"set", "create", "update", "delete", "compareAndSwap", "compareAndDelete"} {
		writes.WithLabelValues(a)
	}
	mt.reg.MustRegister(reads, writes,
		c("etcd_debugging", "store_expires_total", "Total number of expired keys."),
		c("etcd_debugging", "store_watch_requests_total", "Total number of incoming watch requests (new or reestablished)."),
		g("etcd_debugging", "store_watchers", "Count of currently active watchers."),
		g("etcd", "grpc_proxy_cache_hits_total", "Total number of cache hits"),
		g("etcd", "grpc_proxy_cache_keys_total", "Total number of keys/ranges cached"),
		g("etcd", "grpc_proxy_cache_misses_total", "Total number of cache misses"),
		c("etcd", "grpc_proxy_events_coalescing_total", "Total number of events coalescing"),
		g("etcd", "grpc_proxy_watchers_coalescing_total", "Total number of current watchers coalescing"),
	)
}
