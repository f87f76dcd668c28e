package member

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/pagefile"
	"github.com/cairn-kv/cairn/raft"
	"github.com/cairn-kv/cairn/server/auth"
	"github.com/cairn-kv/cairn/server/transport"
	"github.com/cairn-kv/cairn/wal"
	"github.com/prometheus/client_golang/prometheus"
)

// Member is one member's state machine on raft. The raft core belongs to
// whoever holds raftMu, which persists each Ready to the WAL before acting
// on it: the driver goroutine for ticks, reads and snapshots, or a
// proposer that found no one taking proposals to raft (propose). Committed
// entries are applied to the engine in order by whoever holds the apply
// role: the proposer that persisted them, for one batch, or the apply
// goroutine, which also commits the engine's batches and runs the tasks
// that must not race an apply. A request alone on an idle member is thus
// proposed, made durable, applied and answered on its own goroutine; under
// load, proposals queued while one batch is made durable go to the WAL
// together with the next.
//
// Entries hold etcd's InternalRaftRequest, protobuf-encoded, whose header
// carries the id the proposer waits on; an empty entry is a leader's no-op.
type Member struct {
	cfg           Config
	electionTicks int // election timeout / heartbeat interval
	log           *slog.Logger
	fs            vfs.FS // the data directory's file system
	id            uint64
	clusterID     uint64

	w   *wal.WAL
	eng *engine.Store
	tr  *transport.Transport // to and from the other members

	// defragMu is held for a whole defragmentation, so that one runs at a
	// time; it is taken before any lock below and its holder waits on the
	// applier (OnApplier).
	defragMu sync.Mutex

	// Lock order: raftMu, then propMu, then applyMu, then appliedMu;
	// waitMu and readMu are taken last (waitMu under raftMu when a
	// proposal is refused; readMu under none). No lock is held across the
	// WAL's write and fsync: the persister releases raftMu for it (see
	// advance), and so does the driver for a raft snapshot's files.

	// The raft core and the driver's state, for whoever holds raftMu.
	raftMu sync.Mutex
	r      *raft.Raft
	// read rounds waiting for their ReadIndex, by request context.
	reads   map[[8]byte]*readRound
	readSeq uint64
	// raftDone is set once the member stops or its WAL failed: raft takes
	// nothing more.
	raftDone bool
	// leading is set once the member first knows a leader (readyc closed).
	leading bool
	// persisting is set while a Ready is being written to the WAL with
	// raftMu released: raft gives no other Ready until it is advanced.
	// persistIdle (on raftMu) is signalled when it is cleared.
	persisting  bool
	persistIdle sync.Cond

	// Proposals wait in props for the next proposer to take them to raft;
	// proposing says one has undertaken to (propose). propSpare is the
	// previous batch's slice, kept for reuse.
	propMu    sync.Mutex
	props     []proposal
	proposing bool
	propSpare []proposal

	// Committed entries wait in applyq, in log order, for the holder of the
	// apply role (applying). A proposer applies one batch, then kicks the
	// apply goroutine (applyKick) when more is left; applyDead is set once
	// applying failed or the apply goroutine ended.
	applyMu    sync.Mutex
	applyIdle  sync.Cond // signalled when the role is released
	applyq     []raft.Entry
	applySpare []raft.Entry
	applying   bool
	applyDead  bool
	applyKick  chan struct{}

	// Driver inputs. Linearizable reads join nextRead, the round the next
	// ReadIndex serves (as etcd's share one), and kick the driver with
	// readKick; the driver takes the round and starts its ReadIndex.
	readMu    sync.Mutex
	nextRead  *readRound
	readJoins uint64 // reads that joined a round, ever
	readsDone bool   // set by the driver as it stops: no round is taken after
	readKick  chan struct{}
	// taskc carries work that must run on the apply goroutine.
	taskc chan applierTask
	// snapc carries the index of a raft snapshot, durable in the page
	// file, from the applier to the driver; snapIndex is the last one
	// (applier only).
	snapc     chan uint64
	snapIndex uint64
	snapDir   string
	// appliedBytes is the entry data applied since the last raft snapshot
	// (applier only).
	appliedBytes int
	// nextCompactStep is when a compaction under way may take its next
	// step, compactStart when its first step was (applier only).
	nextCompactStep, compactStart time.Time
	// receiveMu lets one snapshot from the leader be received at a time
	// (taken under none).
	receiveMu sync.Mutex

	tokens auth.Provider

	// What the driver last saw of raft, for Status and the metrics.
	term   atomic.Uint64
	lead   atomic.Uint64
	commit atomic.Uint64

	leaderChanges atomic.Uint64
	// learner: this member is a learner (noteRole).
	learner atomic.Bool
	// confSem lets one membership change at a time be checked and
	// proposed here (changeMembership); taken under none.
	confSem chan struct{}

	// hs is raft's latest hard state, syncedHS the one last written
	// (driver only).
	hs, syncedHS raft.HardState
	// Scratch for advance, kept between Readys: the messages to step back
	// in (raftMu) and the records of a WAL write (the persister's).
	selfMsgs []raft.Message
	outMsgs  []raft.Message // the messages to peers of a Ready (raftMu)
	// lastHeartbeat is when the leader last sent each follower a
	// heartbeat (raftMu).
	lastHeartbeat map[uint64]time.Time
	walRecs       []wal.Record

	metrics *metrics
	// Ids for requests and leases, as etcd's generator makes them: the
	// member id's low 16 bits, then a counter started from the clock.
	idPrefix uint64
	idSuffix atomic.Uint64

	// Proposals waiting for their entries to apply, by request id. The
	// driver fails the ones past their deadline (expire) on its ticks, so
	// a proposal needs no timer of its own.
	waitMu     sync.Mutex
	waiters    map[uint64]waiter
	lastExpire time.Time // driver only
	// resultChans keeps the channels of answered proposals for reuse.
	resultChans sync.Pool

	appliedMu sync.Mutex
	applied   uint64
	appliedCh chan struct{} // closed (and replaced) when applied advances

	// physical compactions waiting for the backend's deletions.
	compactWaiters []chan applyResult

	readyc    chan struct{} // closed once the member first knows a leader
	published chan struct{} // closed once its attributes are in the log (publish)
	stopping  chan struct{} // closed when the member begins to stop
	stopOnce  sync.Once
	done      sync.WaitGroup
	failed    atomic.Pointer[error] // the first fatal error
	failedc   chan struct{}         // closed with the first fatal error
	removing  atomic.Bool           // it learnt it was removed and stops (stopRemoved)
}

// Open opens (or makes) the member's data directory, replays its WAL into
// raft and starts the member's goroutines. It is ready to serve once
// LeaderKnown is closed.
func Open(cfg Config) (*Member, error) {
	cfg = cfg.withDefaults()
	log := cfg.Logger
	memberDir := filepath.Join(cfg.DataDir, "member")
	walDir := cfg.WALDir
	if walDir == "" {
		walDir = filepath.Join(memberDir, "wal")
	}
	snapDir := filepath.Join(memberDir, "snap")
	fs := cfg.FS
	for _, d := range []string{walDir, snapDir} {
		if err := fs.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// A defragmentation's copy left by a crash before it took the file's
	// place holds nothing the file does not.
	if err := fs.Remove(filepath.Join(snapDir, "db"+engine.DefragSuffix)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := removeSnapshotCopies(fs, snapDir); err != nil {
		return nil, err
	}
	m := &Member{cfg: cfg, log: log, fs: fs,
		readKick: make(chan struct{}, 1), taskc: make(chan applierTask), applyKick: make(chan struct{}, 1), snapc: make(chan uint64, 1), snapDir: snapDir, confSem: make(chan struct{}, 1),
		reads:   map[[8]byte]*readRound{},
		waiters: map[uint64]waiter{}, appliedCh: make(chan struct{}), readyc: make(chan struct{}), published: make(chan struct{}), stopping: make(chan struct{}), failedc: make(chan struct{})}
	m.applyIdle.L = &m.applyMu
	m.persistIdle.L = &m.raftMu
	m.lastHeartbeat = map[uint64]time.Time{}
	m.metrics = newMetrics(m)
	var err error
	if m.tokens, err = auth.New(cfg.AuthToken, cfg.AuthTokenTTL, log); err != nil {
		return nil, err
	}
	var snap *raft.SnapshotMeta
	var w *wal.WAL
	var st *wal.State
	for {
		if snap, err = loadSnap(fs, snapDir, log); err != nil {
			return nil, fmt.Errorf("reading the snapshots in %s: %w", snapDir, err)
		}
		var from wal.Snapshot
		if snap != nil {
			from = wal.Snapshot{Term: snap.Term, Index: snap.Index}
		}
		w, st, err = wal.Open(walDir, from, &wal.Options{FS: fs, SegmentSize: cfg.WALSegmentSize, NoSync: cfg.UnsafeNoFsync,
			OnSync: m.walSynced, OnWrite: m.metrics.walWritten})
		if errors.Is(err, wal.ErrSnapshotNotFound) && snap != nil {
			// The install of a snapshot from the leader stopped between
			// its .snap file and its WAL marker: start from before it.
			dropped, derr := dropUnmarkedInstall(fs, snapDir, *snap)
			if derr != nil {
				return nil, derr
			}
			if dropped {
				log.Warn("dropped a snapshot whose install a crash cut short; the leader sends it again", "index", snap.Index, "term", snap.Term)
				continue
			}
		}
		if err != nil {
			return nil, fmt.Errorf("opening the WAL in %s: %w", walDir, err)
		}
		break
	}
	m.w = w
	// A new data directory takes its ids from the flags; an existing one
	// keeps its own, and refuses flags naming another cluster.
	var boot *bootstrap
	var voters []uint64
	var listed []engine.Member // joining: the members the cluster listed
	switch {
	case len(st.Metadata) > 0:
		if m.id, m.clusterID, voters, err = DecodeWALMetadata(st.Metadata); err != nil {
			w.Close()
			return nil, fmt.Errorf("%s: %w", walDir, err)
		}
		// (A member that joined has ids the flags do not derive.)
		if len(cfg.InitialCluster) > 0 && cfg.InitialClusterState != "existing" {
			b, err := newBootstrap(cfg)
			if err == nil {
				err = b.matches(cfg.DataDir, m.id, m.clusterID)
			}
			if err != nil {
				w.Close()
				return nil, err
			}
		}
	case cfg.InitialClusterState == "existing":
		if m.id, m.clusterID, listed, err = fetchCluster(cfg); err != nil {
			w.Close()
			return nil, err
		}
		log.Info("joining a running cluster", "member-id", fmt.Sprintf("%x", m.id), "cluster-id", fmt.Sprintf("%x", m.clusterID))
		// No voters: the configuration comes with the leader's snapshot.
		if err := w.Append(wal.MetadataRecord(encodeWALMetadata(m.id, m.clusterID, nil))); err != nil {
			w.Close()
			return nil, err
		}
	default:
		if cfg.Discover != nil {
			if cfg.InitialCluster, err = cfg.Discover(MemberID(cfg.InitialAdvertisePeerURLs, cfg.InitialClusterToken)); err != nil {
				w.Close()
				return nil, err
			}
			m.cfg.InitialCluster = cfg.InitialCluster
		}
		if boot, err = newBootstrap(cfg); err != nil {
			w.Close()
			return nil, err
		}
		m.id, m.clusterID, voters = boot.id, boot.cluster, boot.voters()
		if err := w.Append(wal.MetadataRecord(encodeWALMetadata(m.id, m.clusterID, voters))); err != nil {
			w.Close()
			return nil, err
		}
	}
	db, err := m.openPageFile(filepath.Join(snapDir, "db"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("opening the page file: %w", err)
	}
	m.eng, err = engine.Open(db)
	if err != nil {
		db.Close()
		w.Close()
		return nil, fmt.Errorf("opening the engine: %w", err)
	}
	m.eng.SetBatchPolicy(engine.BatchPolicy{Interval: cfg.BackendBatchInterval, Limit: cfg.BackendBatchLimit})
	m.eng.OnCommit(m.metrics.committed)
	ci, err := m.eng.ConsistentIndex()
	if err == nil && snap != nil && ci < snap.Index {
		// A snapshot from the leader was recorded (file and WAL marker)
		// and its page file not yet put in place: finish its install.
		received := filepath.Join(snapDir, receivedName(*snap))
		if _, serr := fs.Stat(received); serr == nil {
			log.Warn("finishing the install of a snapshot a crash cut short", "index", snap.Index, "term", snap.Term)
			if err = m.eng.Install(received, m.openPageFile); err == nil {
				ci, err = m.eng.ConsistentIndex()
			}
		}
	}
	if err == nil {
		err = removeReceived(fs, snapDir, "")
	}
	if err == nil {
		err = m.bootstrapDefrag()
	}
	if err != nil {
		m.closeStorage()
		return nil, err
	}
	if d := m.eng.Downgrade(); d.Enabled {
		// etcd 3.5 would start only a member of the target version.
		m.log.Warn("a downgrade is enabled; no cairn release speaks its target version, so this member serves on", "target-version", d.TargetVersion)
	}
	// A member that joined knows no configuration until the leader's
	// snapshot is installed (raft.Config.Join).
	joining := len(voters) == 0 && snap == nil
	if joining && listed == nil {
		// Restarted before the snapshot came: ask for the members again.
		var id uint64
		if id, _, listed, err = fetchCluster(cfg); err == nil && id != m.id {
			err = fmt.Errorf("the cluster lists this member's peer URLs as member %x, the data directory is member %x's", id, m.id)
		}
		if err != nil {
			m.closeStorage()
			return nil, err
		}
	}
	if len(m.eng.Members()) == 0 && !joining {
		// A new cluster: every member records the initial members.
		if boot == nil {
			if boot, err = newBootstrap(cfg); err == nil {
				err = boot.matches(cfg.DataDir, m.id, m.clusterID)
			}
		}
		for _, bm := range boot.members {
			if err == nil {
				err = m.eng.AddMember(engine.Member{ID: bm.id, Name: bm.Name, PeerURLs: bm.PeerURLs}, 1)
			}
		}
		if err == nil {
			err = m.eng.Commit()
		}
		if err != nil {
			m.closeStorage()
			return nil, err
		}
	}
	m.applied = ci
	if snap != nil {
		if ci < snap.Index {
			m.closeStorage()
			return nil, fmt.Errorf("the page file has applied index %d, before the snapshot at %d", ci, snap.Index)
		}
		m.snapIndex = snap.Index
	}
	// etcd's least lease TTL: one and a half election timeouts, in whole
	// seconds, so that a lease outlives a leader election.
	m.eng.SetMinLeaseTTL(int64(math.Ceil((3 * cfg.ElectionTimeout / 2).Seconds())))
	m.idPrefix = m.id << 48
	m.idSuffix.Store(uint64(time.Now().UnixMilli()) & (1<<40 - 1) << 8)

	ents := make([]raft.Entry, len(st.Entries))
	for i, e := range st.Entries {
		ents[i] = raft.Entry{Term: e.Term, Index: e.Index, Type: raft.EntryType(e.Type), Data: e.Data}
	}
	hs := raft.HardState{Term: st.HardState.Term, Vote: st.HardState.Vote, Commit: st.HardState.Commit}
	if ci > hs.Commit {
		// A commit index alone is written without a sync (as etcd's WAL
		// does), so the WAL may know less than was applied; what was applied
		// was committed, and its entries are durable.
		last := m.snapIndex
		if len(ents) > 0 {
			last = ents[len(ents)-1].Index
		}
		if last < ci {
			m.closeStorage()
			return nil, fmt.Errorf("the page file has applied index %d, past the WAL's last entry", ci)
		}
		hs.Commit = ci
	}
	if cfg.ForceNewCluster {
		if ents, hs, err = m.forceNewCluster(voters, snap, ents, hs, joining); err != nil {
			m.closeStorage()
			return nil, err
		}
	}
	m.hs, m.syncedHS = hs, hs
	electionTicks := max(int(cfg.ElectionTimeout/cfg.HeartbeatInterval), 2)
	m.electionTicks = electionTicks
	r, err := raft.New(raft.Config{
		ID: m.id, Peers: voters, Join: joining, ElectionTick: electionTicks, HeartbeatTick: 1,
		Rand: rand.New(rand.NewSource(time.Now().UnixNano())), PreVote: !cfg.NoPreVote, CheckQuorum: true,
		HardState: hs, Entries: ents, Applied: ci, Snapshot: snap,
	})
	if err != nil {
		m.closeStorage()
		return nil, err
	}
	m.r = r
	m.metrics.serverID.WithLabelValues(fmt.Sprintf("%x", m.id)).Set(1)
	m.tr = transport.New(transport.Config{ID: m.id, ClusterID: m.clusterID, Handler: peerHandler{m},
		TLS: cfg.PeerTLS, Logger: log, Faults: cfg.Faults, ReadTimeout: cfg.RaftReadTimeout, WriteTimeout: cfg.RaftWriteTimeout, Resolver: cfg.Resolver,
		Observer: newPeerMetrics(m.metrics.reg, func() uint64 { return m.id })})
	if m.eng.IsRemoved(m.id) {
		m.tr.Stop()
		m.closeStorage()
		return nil, ErrMemberRemoved
	}
	m.followMembers()
	for _, mem := range listed {
		if mem.ID != m.id {
			if err := m.tr.AddPeer(mem.ID, mem.PeerURLs); err != nil {
				m.tr.Stop()
				m.closeStorage()
				return nil, err
			}
		}
	}
	if cfg.InitialCorruptCheck && len(st.Metadata) > 0 {
		// Restarted over its data (a new member has nothing to compare).
		if err := m.initialCorruptCheck(); err != nil {
			m.tr.Stop()
			m.closeStorage()
			return nil, err
		}
	}
	m.done.Add(5)
	go m.drive()
	go m.publish()
	go m.applyLoop()
	go m.leaseLoop()
	go m.progressLoop(cfg.WatchProgressNotifyInterval)
	if cfg.AutoCompaction.Mode != "" {
		m.done.Add(1)
		go m.autoCompactLoop(cfg.AutoCompaction)
	}
	if cfg.LearnerAutoPromote {
		m.done.Add(1)
		go m.autoPromoteLoop()
	}
	if cfg.AutoRecoverNoSpace {
		m.done.Add(1)
		go m.autoRecoverLoop()
	}
	m.done.Add(1)
	go m.probeLoop()
	if cfg.CorruptCheckTime > 0 || cfg.CompactHashCheckTime > 0 {
		m.done.Add(1)
		go m.corruptCheckLoop(cfg.CorruptCheckTime, cfg.CompactHashCheckTime)
	}
	return m, nil
}

// warnSyncDuration is etcd's: a WAL sync slower than this is logged.
const warnSyncDuration = time.Second

// walSynced records a WAL sync's duration, and says it, as etcd does,
// when it was slow (under the WAL's lock).
func (m *Member) walSynced(d time.Duration) {
	m.metrics.walFsync.Observe(d.Seconds())
	if d > warnSyncDuration {
		m.log.Warn("slow fdatasync", "took", d.String(), "expected-duration", warnSyncDuration.String())
	}
}

// openPageFile opens a page file of the member's data directory.
func (m *Member) openPageFile(path string) (*pagefile.DB, error) {
	return pagefile.Open(path, &pagefile.Options{FS: m.fs, NoSync: m.cfg.UnsafeNoFsync, Mlock: m.cfg.MemoryMlock})
}

func (m *Member) closeStorage() {
	db := m.eng.Backend() // replaced by each defragmentation
	_ = m.eng.Close()
	_ = db.Close()
	_ = m.w.Close()
}

// Stop ends the driver and the applier (the applier first finishes what
// it was handed) and closes the storage.
func (m *Member) Stop() {
	m.stopOnce.Do(m.stop)
}

func (m *Member) stop() {
	close(m.stopping)
	m.tr.Stop() // nothing more is stepped from peers
	m.raftMu.Lock()
	for m.persisting { // the Ready being written is advanced first
		m.persistIdle.Wait()
	}
	m.raftDone = true
	m.raftMu.Unlock()
	m.done.Wait()
	m.closeStorage()
}

// Fail records a fatal error of the member's storage (a WAL or page-file
// write, a defragmentation that lost the file): the member takes no more
// writes, and Failed is closed so that whoever runs it stops it. Only the
// first error is kept.
func (m *Member) Fail(err error) {
	if m.failed.CompareAndSwap(nil, &err) {
		m.log.Error("member failed; it stops", "err", err)
		close(m.failedc)
	}
}

// Failed is closed once the member has failed (Fail); Err then says why.
func (m *Member) Failed() <-chan struct{} { return m.failedc }

// Err is the error the member failed with, or nil.
func (m *Member) Err() error {
	if err := m.failed.Load(); err != nil {
		return *err
	}
	return nil
}

func (m *Member) Header(rev int64) *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: m.clusterID, MemberId: m.id, Revision: rev, RaftTerm: m.term.Load()}
}

// Engine is the member's MVCC store: reads go to it directly, writes
// through Propose.
func (m *Member) Engine() *engine.Store { return m.eng }

// Config is the member's configuration, with its defaults filled in: to
// read, not to change (a pointer, so that a request reading one limit
// does not copy the whole of it).
func (m *Member) Config() *Config { return &m.cfg }

// Logger is the member's logger.
func (m *Member) Logger() *slog.Logger { return m.log }

// ID and ClusterID are the member's and its cluster's ids.
func (m *Member) ID() uint64        { return m.id }
func (m *Member) ClusterID() uint64 { return m.clusterID }

// Lead is the leader the member last saw (0: none), Term its raft term,
// Committed its commit index.
func (m *Member) Lead() uint64      { return m.lead.Load() }
func (m *Member) Term() uint64      { return m.term.Load() }
func (m *Member) Committed() uint64 { return m.commit.Load() }

// Tokens is the member's auth token provider.
func (m *Member) Tokens() auth.Provider { return m.tokens }

// Stopping is closed when the member begins to stop.
func (m *Member) Stopping() <-chan struct{} { return m.stopping }

// LeaderKnown is closed once the member first knows a leader.
func (m *Member) LeaderKnown() <-chan struct{} { return m.readyc }

// Registry is the member's Prometheus registry: its own metrics, and
// whatever the layers above register.
func (m *Member) Registry() *prometheus.Registry { return m.metrics.reg }

// ServePeers serves the other members' streams to this member on ln (one
// of --listen-peer-urls) until the member stops.
func (m *Member) ServePeers(ln net.Listener) {
	m.done.Add(1)
	go func() {
		defer m.done.Done()
		if err := m.tr.Serve(ln); err != nil {
			m.log.Error("serving peers", "addr", ln.Addr().String(), "err", err)
		}
	}()
}
