package member

import (
	"crypto/tls"
	"log/slog"
	"net"
	"time"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/server/transport"
)

// Config is what a member needs to know of its configuration; the names
// follow etcd's flags. Listeners, TLS and the HTTP side are the server's.
type Config struct {
	Name    string
	DataDir string // default <Name>.cairn
	WALDir  string // default <DataDir>/member/wal

	InitialAdvertisePeerURLs []string
	InitialClusterToken      string
	// InitialCluster is --initial-cluster: the members a new cluster
	// starts with (empty: this member alone, at its advertised peer URLs).
	// A data directory made before keeps its own members and ids, and
	// refuses an InitialCluster that names another cluster.
	InitialCluster []InitialMember
	// Discover, if set, gives a new member's initial cluster at its first
	// start, from its id (--discovery: a v2 discovery service); a restart
	// over existing data does not call it.
	Discover func(id uint64) ([]InitialMember, error)
	// Resolver resolves the host names of peer URLs where they are
	// compared (nil: net.DefaultResolver).
	Resolver *net.Resolver
	// InitialClusterState is --initial-cluster-state: "new" (or empty)
	// bootstraps the members of InitialCluster together; "existing" joins
	// a running cluster that added this member (MemberAdd): its id and the
	// cluster's come from the members InitialCluster names, its state from
	// the leader's snapshot.
	InitialClusterState string
	// ForceNewCluster is --force-new-cluster: an existing data directory
	// starts as a cluster of this member alone, keeping its data (disaster
	// recovery from one surviving member; forceNewCluster).
	ForceNewCluster bool
	// AdvertiseClientURLs are published to the cluster through the log
	// (MemberList shows them).
	AdvertiseClientURLs []string

	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	MaxRequestBytes   int
	MaxTxnOps         int
	// QuotaBackendBytes: past it the NOSPACE alarm is raised (0: etcd's
	// default, 2 GiB).
	QuotaBackendBytes int64

	// Auth: how long a simple token lives unused, bcrypt's cost for the
	// passwords hashed here, and whether a client certificate's common
	// name stands for the user.
	AuthToken      string // --auth-token: "simple" or "jwt,..."
	AuthTokenTTL   time.Duration
	BcryptCost     int
	ClientCertAuth bool

	// AutoCompaction: --auto-compaction-mode and -retention, parsed.
	AutoCompaction AutoCompaction

	// WatchProgressNotifyInterval is how often idle watchers that asked
	// are told the current revision.
	WatchProgressNotifyInterval time.Duration

	// SnapshotCount is how many applied entries trigger a raft snapshot
	// (the log before it leaves memory and the WAL); MaxWALs and
	// MaxSnapshots how many WAL segments and .snap files to keep at least
	// and at most (0: all).
	SnapshotCount uint64
	MaxWALs       int
	MaxSnapshots  int
	// SnapshotCatchUpEntries is how many entries before a raft snapshot
	// stay in the log for slow followers, which catch up from them rather
	// than by a whole snapshot (--experimental-snapshot-catchup-entries;
	// 0: etcd's 5,000).
	SnapshotCatchUpEntries uint64
	// SnapshotBytes: a raft snapshot is also taken once the entries
	// applied since the last hold this much data (0: 256 MiB; not a flag).
	SnapshotBytes int

	// NoStrictReconfigCheck is --strict-reconfig-check=false: membership
	// changes are not refused for leaving too few started or connected
	// members. MaxLearners is --max-learners (0: etcd's 1).
	NoStrictReconfigCheck bool
	MaxLearners           int
	// LearnerAutoPromote: the leader promotes a learner once it has caught
	// up (--learner-auto-promote, cairn's own; off by default, as etcd
	// promotes only when asked).
	LearnerAutoPromote bool
	// AutoRecoverNoSpace: a member whose NOSPACE alarm is raised compacts
	// at the current revision, defragments and disarms its alarm once the
	// page file is back under the quota with room (--auto-recover-nospace,
	// cairn's own; off by default, as etcd waits for an operator).
	// AutoRecoverNoSpaceInterval is how often it looks (0: every 5 s).
	AutoRecoverNoSpace         bool
	AutoRecoverNoSpaceInterval time.Duration

	// NoPreVote is --pre-vote=false: an election raises the term at once,
	// without asking first whether it could be won (etcd's default, and
	// cairn's, is to ask).
	NoPreVote bool
	// NoInitialElectionTickAdvance is --initial-election-tick-advance=false.
	// By default a member of several starting up advances its election
	// clock to two ticks short of a timeout once it is connected to two
	// peers or more (within 5 s), as etcd does, so that a new cluster
	// elects a leader in a few ticks, not a whole election timeout.
	NoInitialElectionTickAdvance bool

	// BackendBatchInterval and BackendBatchLimit are when the page file
	// commits the applied writes: once the oldest is this old, or this
	// many are waiting (--backend-batch-interval, --backend-batch-limit;
	// 0: etcd's 100 ms and 10,000).
	BackendBatchInterval time.Duration
	BackendBatchLimit    int
	// CompactionBatchLimit is how many revisions a compaction looks at
	// in one step, and CompactionSleepInterval the pause between its steps
	// (--experimental-compaction-batch-limit and -sleep-interval; 0:
	// etcd's 1,000 and 10 ms).
	CompactionBatchLimit    int
	CompactionSleepInterval time.Duration
	// WarningApplyDuration: an entry whose apply takes longer is logged
	// ("apply request took too long") and counted
	// (--experimental-warning-apply-duration; 0: etcd's 100 ms).
	WarningApplyDuration time.Duration
	// UnsafeNoFsync skips every fdatasync of the WAL and the page file
	// (--unsafe-no-fsync): a crash may lose acknowledged writes.
	UnsafeNoFsync bool
	// MemoryMlock locks the page file's pages in memory
	// (--experimental-memory-mlock).
	MemoryMlock bool
	// BootstrapDefragThresholdMegabytes: at start, the page file is
	// defragmented if that frees at least this many MiB
	// (--experimental-bootstrap-defrag-threshold-megabytes; 0: never).
	BootstrapDefragThresholdMegabytes uint
	// InitialCorruptCheck: a member restarting over its data compares its
	// HashKV with its peers' before it serves, and refuses to start on a
	// mismatch (--experimental-initial-corrupt-check). CorruptCheckTime
	// and CompactHashCheckTime are how often the leader compares its
	// followers' hashes at its revision and at the latest compaction,
	// raising the CORRUPT alarm for one that differs
	// (--experimental-corrupt-check-time,
	// --experimental-compact-hash-check-enabled and -time; 0: never).
	InitialCorruptCheck                    bool
	CorruptCheckTime, CompactHashCheckTime time.Duration
	// ExtensiveMetrics (--metrics=extensive) adds the gRPC calls'
	// durations (grpc_server_handling_seconds) to the metrics.
	ExtensiveMetrics bool
	// StopGRPCServiceOnDefrag: while a defragmentation runs, the gRPC
	// health service says NOT_SERVING, so that clients that check it go
	// to other members (--experimental-stop-grpc-service-on-defrag).
	StopGRPCServiceOnDefrag bool

	// WALSegmentSize replaces the WAL's segment size (0: the WAL's
	// default); tests make it small.
	WALSegmentSize int64

	// PeerTLS is the client side of peer TLS, for https:// peer URLs.
	PeerTLS *tls.Config
	// RaftReadTimeout and RaftWriteTimeout bound the peer transport's
	// waits for an answer and its writes of a frame (--raft-read-timeout,
	// --raft-write-timeout; at least 5 s, as in etcd).
	RaftReadTimeout, RaftWriteTimeout time.Duration
	// Faults, if set, cuts or delays messages between members (tests).
	Faults *transport.Faults

	// FS is the file system of the data directory (default vfs.Default):
	// the WAL, the page file, the .snap files, snapshots and
	// defragmentation all go through it, so tests can record a member's
	// writes or fail them.
	FS vfs.FS

	Logger *slog.Logger
}

// DefaultQuotaBytes is etcd's default backend quota, 2 GiB; MaxQuotaBytes
// the most it lets one ask for, 8 GiB.
const (
	DefaultQuotaBytes = 2 << 30
	MaxQuotaBytes     = 8 << 30
)

func (cfg *Config) maxLearners() int {
	if cfg.MaxLearners <= 0 {
		return 1
	}
	return cfg.MaxLearners
}

// withDefaults fills in what was left zero.
func (cfg Config) withDefaults() Config {
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.Name + ".cairn"
	}
	if cfg.QuotaBackendBytes <= 0 {
		cfg.QuotaBackendBytes = DefaultQuotaBytes
	}
	if cfg.AuthTokenTTL <= 0 {
		cfg.AuthTokenTTL = 300 * time.Second
	}
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = 10
	}
	if cfg.WatchProgressNotifyInterval <= 0 {
		cfg.WatchProgressNotifyInterval = 10 * time.Minute
	}
	if cfg.SnapshotCatchUpEntries == 0 {
		cfg.SnapshotCatchUpEntries = DefaultSnapshotCatchUpEntries
	}
	if cfg.SnapshotBytes <= 0 {
		cfg.SnapshotBytes = defaultSnapshotBytes
	}
	if cfg.BackendBatchInterval <= 0 {
		cfg.BackendBatchInterval = engine.DefaultBatchPolicy.Interval
	}
	if cfg.BackendBatchLimit <= 0 {
		cfg.BackendBatchLimit = engine.DefaultBatchPolicy.Limit
	}
	if cfg.CompactionBatchLimit <= 0 {
		cfg.CompactionBatchLimit = 1000
	}
	if cfg.CompactionSleepInterval <= 0 {
		cfg.CompactionSleepInterval = 10 * time.Millisecond
	}
	if cfg.WarningApplyDuration <= 0 {
		cfg.WarningApplyDuration = 100 * time.Millisecond
	}
	if cfg.FS == nil {
		cfg.FS = vfs.Default
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}
