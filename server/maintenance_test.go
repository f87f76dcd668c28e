package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/engine"
	"github.com/cairn-kv/cairn/server/member"
)

// TestMaintenanceThroughClient: status, member list, hashes that agree
// before and after a defragmentation that keeps every key, a snapshot
// that is a page file holding the data, alarms, and leader moves.
func TestMaintenanceThroughClient(t *testing.T) {
	s, c, _ := startMember(t, filepath.Join(t.TempDir(), "data"))
	ctx := ctxT(t)
	ep := s.ClientURLs()[0]
	for i := 0; i < 200; i++ {
		if _, err := c.Put(ctx, fmt.Sprintf("m%03d", i), strings.Repeat("x", 500)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Delete(ctx, "m1", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != member.Version || st.Leader != st.Header.MemberId || st.RaftTerm == 0 || st.RaftIndex < 201 ||
		st.RaftAppliedIndex > st.RaftIndex || st.DbSize <= 0 || st.DbSizeInUse > st.DbSize || len(st.Errors) != 0 {
		t.Fatalf("status: %+v", st)
	}
	ml, err := c.MemberList(ctx)
	if err != nil || len(ml.Members) != 1 || ml.Members[0].ID != st.Leader || ml.Members[0].Name != "default" {
		t.Fatalf("member list: %+v %v", ml, err)
	}
	h1, err := c.HashKV(ctx, ep, 0)
	if err != nil {
		t.Fatal(err)
	}
	b1, err := pb.NewMaintenanceClient(c.ActiveConnection()).Hash(ctx, &pb.HashRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Defragment(ctx, ep); err != nil {
		t.Fatal(err)
	}
	h2, err := c.HashKV(ctx, ep, 0)
	if err != nil || h2.Hash != h1.Hash || h2.HashRevision != h1.HashRevision {
		t.Fatalf("hashkv after defrag: %+v, before %+v (%v)", h2, h1, err)
	}
	b2, err := pb.NewMaintenanceClient(c.ActiveConnection()).Hash(ctx, &pb.HashRequest{})
	if err != nil || b2.Hash != b1.Hash {
		t.Fatalf("backend hash after defrag: %d, before %d (%v)", b2.Hash, b1.Hash, err)
	}
	st2, err := c.Status(ctx, ep)
	if err != nil || st2.DbSize != st2.DbSizeInUse {
		t.Fatalf("status after defrag: %+v %v", st2, err)
	}
	get, err := c.Get(ctx, "m", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || get.Count != 100 {
		t.Fatalf("after defrag: %+v %v", get, err)
	}
	if _, err := c.Put(ctx, "after-defrag", "v"); err != nil {
		t.Fatal(err)
	}

	// Snapshot: chunks, then the SHA-256 of what came before.
	rc, err := pb.NewMaintenanceClient(c.ActiveConnection()).Snapshot(ctx, &pb.SnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	eng := checkPageFile(t, writeTemp(t, recvSnapshot(t, rc)))
	res, err := eng.Range([]byte("m"), []byte("n"), engine.RangeOptions{CountOnly: true})
	if err != nil || res.Count != 100 {
		t.Fatalf("snapshot holds %+v %v, want 100 keys", res, err)
	}
	if res, err := eng.Range([]byte("after-defrag"), nil, engine.RangeOptions{}); err != nil || len(res.KVs) != 1 {
		t.Fatalf("snapshot lacks the last put: %+v %v", res, err)
	}

	// Alarms: raised, listed, in Status, disarmed.
	if _, err := c.AlarmList(ctx); err != nil {
		t.Fatal(err)
	}
	raw := pb.NewMaintenanceClient(c.ActiveConnection())
	if _, err := raw.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: st.Leader, Alarm: pb.AlarmType_CORRUPT}); err != nil {
		t.Fatal(err)
	}
	al, err := c.AlarmList(ctx)
	if err != nil || len(al.Alarms) != 1 || al.Alarms[0].Alarm != pb.AlarmType_CORRUPT {
		t.Fatalf("alarm list: %+v %v", al, err)
	}
	st3, err := c.Status(ctx, ep)
	if want := fmt.Sprintf("memberID:%d alarm:CORRUPT ", st.Leader); err != nil || len(st3.Errors) != 1 || st3.Errors[0] != want {
		t.Fatalf("status errors %q, want [%q] (%v)", st3.Errors, want, err)
	}
	if _, err := c.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: st.Leader, Alarm: pb.AlarmType_CORRUPT}); err != nil {
		t.Fatal(err)
	}
	if al, err := c.AlarmList(ctx); err != nil || len(al.Alarms) != 0 {
		t.Fatalf("alarm list after disarm: %+v %v", al, err)
	}

	if _, err := c.MoveLeader(ctx, st.Leader); err != nil {
		t.Fatalf("move leader to itself: %v", err)
	}
	if _, err := c.MoveLeader(ctx, st.Leader+1); !errors.Is(err, rpctypes.ErrBadLeaderTransferee) {
		t.Fatalf("move leader to a stranger: %v", err)
	}
}

// TestQuota: past the quota writes fail with NOSPACE and the alarm is
// raised; reads and deletes go on; compaction, defragmentation and
// disarming the alarm let writes in again.
func TestQuota(t *testing.T) {
	s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "data"), func(cfg *Config) { cfg.QuotaBackendBytes = 1 << 20 })
	ctx := ctxT(t)
	ep := s.ClientURLs()[0]
	value := strings.Repeat("v", 8<<10)
	var err error
	n := 0
	for ; n < 1000; n++ {
		if _, err = c.Put(ctx, fmt.Sprint("q", n), value); err != nil {
			break
		}
	}
	if !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("after %d puts of 8 KiB into a 1 MiB quota: %v", n, err)
	}
	al, err := c.AlarmList(ctx)
	if err != nil || len(al.Alarms) != 1 || al.Alarms[0].Alarm != pb.AlarmType_NOSPACE {
		t.Fatalf("alarms: %+v %v", al, err)
	}
	if _, err := c.Put(ctx, "small", "x"); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("a small put under the alarm: %v", err)
	}
	if _, err := c.Grant(ctx, 10); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("a lease grant under the alarm: %v", err)
	}
	if get, err := c.Get(ctx, "q", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || get.Count != int64(n) {
		t.Fatalf("reads under the alarm: %+v %v", get, err)
	}
	del, err := c.Delete(ctx, "q", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("delete under the alarm: %v", err)
	}
	if _, err := c.Compact(ctx, del.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Defragment(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "small", "x"); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("a put before the disarm: %v", err)
	}
	if _, err := c.AlarmDisarm(ctx, &clientv3.AlarmMember{MemberID: al.Alarms[0].MemberID, Alarm: pb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "small", "x"); err != nil {
		t.Fatalf("a put after recovery: %v", err)
	}
}

// TestAutoRecoverNoSpace: with --auto-recover-nospace, a member past its
// quota from overwriting one key (history) compacts, defragments and
// disarms its alarm by itself, and writes go in again; one whose live keys
// fill the quota keeps the alarm until deletes make room. Without the flag
// the alarm stays (TestQuota).
func TestAutoRecoverNoSpace(t *testing.T) {
	s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "data"), func(cfg *Config) {
		cfg.QuotaBackendBytes = 1 << 20
		cfg.AutoRecoverNoSpace = true
		cfg.AutoRecoverNoSpaceInterval = 50 * time.Millisecond
	})
	ctx := ctxT(t)
	value := strings.Repeat("v", 8<<10)
	fill := func(key func(int) string) int {
		t.Helper()
		for n := 0; n < 1000; n++ {
			if _, err := c.Put(ctx, key(n), value); err != nil {
				require.ErrorIs(t, err, rpctypes.ErrNoSpace)
				return n
			}
		}
		t.Fatal("1000 puts of 8 KiB fit a 1 MiB quota")
		return 0
	}
	// recovered tries a put every 20 ms for a while (the member looks
	// every 50 ms).
	recovered := func(within time.Duration) bool {
		for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if _, err := c.Put(ctxT(t), "probe", "x"); err == nil {
				return true
			}
		}
		return false
	}

	// History alone: one key overwritten.
	n := fill(func(int) string { return "same" })
	require.True(t, recovered(10*time.Second), "the alarm was not disarmed after %d overwrites", n)
	al, err := c.AlarmList(ctx)
	require.NoError(t, err)
	require.Empty(t, al.Alarms)
	get, err := c.Get(ctx, "same")
	require.NoError(t, err)
	require.Equal(t, value, string(get.Kvs[0].Value), "the latest value is kept")
	_, err = c.Get(ctx, "same", clientv3.WithRev(2))
	require.ErrorIs(t, err, rpctypes.ErrCompacted, "the history was compacted")
	st, err := c.Status(ctx, s.ClientURLs()[0])
	require.NoError(t, err)
	require.Less(t, st.DbSize, int64(900<<10))

	// Live keys: the alarm stays until some are deleted.
	n = fill(func(i int) string { return fmt.Sprint("live", i) })
	require.False(t, recovered(time.Second), "disarmed with %d live keys of 8 KiB in a 1 MiB quota", n)
	_, err = c.Delete(ctxT(t), "live0", clientv3.WithRange("live5")) // about half
	require.NoError(t, err)
	require.True(t, recovered(10*time.Second), "the alarm was not disarmed after deletes")
}

// TestSmallQuota: a fresh member started with a 64 KiB quota, as tests of
// quota handling do, takes its first writes (a new page file holds only
// what it needs: empty buckets keep no page).
func TestSmallQuota(t *testing.T) {
	s, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "data"), func(cfg *Config) { cfg.QuotaBackendBytes = 64 << 10 })
	ctx := ctxT(t)
	st, err := c.Status(ctx, s.ClientURLs()[0])
	require.NoError(t, err)
	t.Logf("a fresh member's page file: %d bytes", st.DbSize)
	for i := range 3 {
		_, err := c.Put(ctx, fmt.Sprint("k", i), "v")
		require.NoError(t, err)
	}
}

// TestAutoCompaction: in periodic mode the leader compacts, through the
// log, to the revision of a retention ago.
func TestAutoCompaction(t *testing.T) {
	_, c, _ := startMemberWith(t, filepath.Join(t.TempDir(), "data"), func(cfg *Config) {
		cfg.AutoCompaction = member.AutoCompaction{Mode: "periodic", Period: 200 * time.Millisecond}
	})
	ctx := ctxT(t)
	first, err := c.Put(ctx, "a", "1")
	if err != nil {
		t.Fatal(err)
	}
	// Writes go on; within 10 s (bounded) the first revision is compacted.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if _, err := c.Put(ctx, "a", fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
		_, err := c.Get(ctx, "a", clientv3.WithRev(first.Header.Revision))
		if errors.Is(err, rpctypes.ErrCompacted) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("revision of the first put still readable after 10 s of periodic auto-compaction (200 ms)")
}

// TestSnapshotRestore: a snapshot saved as etcdctl saves it (the stream,
// trailer included) restores into a new data dir that serves its keys as
// a new cluster of one; a damaged file is refused.
func TestSnapshotRestore(t *testing.T) {
	dir := t.TempDir()
	_, c, stop := startMember(t, filepath.Join(dir, "data"))
	ctx := ctxT(t)
	for i := 0; i < 100; i++ {
		if _, err := c.Put(ctx, fmt.Sprintf("s%03d", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	rc, err := c.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	stop()
	snap := filepath.Join(dir, "snap.db")
	if err := os.WriteFile(snap, data, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.db")
	damaged := bytes.Clone(data)
	damaged[100] ^= 1
	if err := os.WriteFile(bad, damaged, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Name = "restored"
	cfg.InitialAdvertisePeerURLs = []string{"http://127.0.0.1:12380"}
	cfg.DataDir = filepath.Join(dir, "bad-restore")
	if err := RestoreSnapshot(bad, cfg, RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "integrity") {
		t.Fatalf("restore of a damaged snapshot: %v", err)
	}
	cfg.DataDir = filepath.Join(dir, "restored")
	if err := RestoreSnapshot(snap, cfg, RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := RestoreSnapshot(snap, cfg, RestoreOptions{}); err == nil {
		t.Fatal("restore over an existing data dir")
	}
	_, c2, _ := startMemberWith(t, cfg.DataDir, func(c *Config) {
		c.Name, c.InitialAdvertisePeerURLs = cfg.Name, cfg.InitialAdvertisePeerURLs
	})
	get, err := c2.Get(ctx, "s", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || get.Count != 100 {
		t.Fatalf("restored: %+v %v", get, err)
	}
	ml, err := c2.MemberList(ctx)
	if err != nil || len(ml.Members) != 1 || ml.Members[0].Name != "restored" || ml.Members[0].PeerURLs[0] != "http://127.0.0.1:12380" {
		t.Fatalf("restored members: %+v %v", ml, err)
	}
	if _, err := c2.Put(ctx, "after", "x"); err != nil {
		t.Fatal(err)
	}
}

// TestDowngrade: a downgrade is validated, enabled and cancelled as etcd
// 3.5 does it, with etcd's errors for a malformed or wrong target, a job
// already enabled and none to cancel; an enabled job survives a restart.
func TestDowngrade(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	_, c, stop := startMember(t, dir)
	ctx := ctxT(t)
	want := func(what string, err, wantErr error) {
		t.Helper()
		if err == nil && wantErr == nil {
			return
		}
		if err == nil || wantErr == nil || err.Error() != wantErr.Error() {
			t.Fatalf("%s: %v, want %v", what, err, wantErr)
		}
	}
	for v, wantErr := range map[string]error{
		"3.4": nil, "3.4.0": nil, "3.4.9-rc.1+build.5": nil,
		"v3.4": rpctypes.ErrWrongDowngradeVersionFormat, "3": rpctypes.ErrWrongDowngradeVersionFormat,
		"3.x": rpctypes.ErrWrongDowngradeVersionFormat, "3.4.0+b@d": rpctypes.ErrWrongDowngradeVersionFormat, "3.4.0-": nil,
		"":    rpctypes.ErrWrongDowngradeVersionFormat,
		"3.3": rpctypes.ErrInvalidDowngradeTargetVersion, "3.5": rpctypes.ErrInvalidDowngradeTargetVersion,
		"3.6.0": rpctypes.ErrInvalidDowngradeTargetVersion, "2.4": rpctypes.ErrInvalidDowngradeTargetVersion,
	} {
		resp, err := c.Downgrade(ctx, clientv3.DowngradeValidate, v)
		want("validate "+v, err, wantErr)
		if err == nil && (resp.Version != member.ClusterVersion || resp.Header.MemberId == 0) {
			t.Fatalf("validate %s: %+v", v, resp)
		}
	}
	_, err := c.Downgrade(ctx, clientv3.DowngradeCancel, "")
	want("cancel with none", err, rpctypes.ErrNoInflightDowngrade)
	_, err = c.Downgrade(ctx, clientv3.DowngradeEnable, "3.5")
	want("enable 3.5", err, rpctypes.ErrInvalidDowngradeTargetVersion)
	resp, err := c.Downgrade(ctx, clientv3.DowngradeEnable, "3.4")
	if err != nil || resp.Version != member.ClusterVersion || resp.Header.Revision == 0 {
		t.Fatalf("enable: %+v %v", resp, err)
	}
	_, err = c.Downgrade(ctx, clientv3.DowngradeValidate, "3.4")
	want("validate while enabled", err, rpctypes.ErrDowngradeInProcess)
	_, err = c.Downgrade(ctx, clientv3.DowngradeEnable, "3.4")
	want("enable while enabled", err, rpctypes.ErrDowngradeInProcess)

	stop()
	_, c, _ = startMember(t, dir)
	_, err = c.Downgrade(ctx, clientv3.DowngradeValidate, "3.4")
	want("validate after a restart", err, rpctypes.ErrDowngradeInProcess)
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put with a downgrade enabled: %v", err)
	}
	if _, err := c.Downgrade(ctx, clientv3.DowngradeCancel, ""); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	_, err = c.Downgrade(ctx, clientv3.DowngradeCancel, "")
	want("cancel again", err, rpctypes.ErrNoInflightDowngrade)
	_, err = c.Downgrade(ctx, clientv3.DowngradeValidate, "3.4")
	want("validate after cancel", err, nil)
}

// TestClusterRestoredFromSnapshot: one member's snapshot, compressed with
// zstd, restores into the data directories of a new three-member cluster
// (etcd's --initial-cluster restore) with the revision bumped and
// compacted: every member serves the keys and the lease, reads below the
// bump are refused as compacted, writes go on above it, and the members'
// hashes agree. Options etcd refuses are refused.
func TestClusterRestoredFromSnapshot(t *testing.T) {
	dir := t.TempDir()
	_, c, stop := startMember(t, filepath.Join(dir, "data"))
	ctx := ctxT(t)
	lease, err := c.Grant(ctx, 600)
	require.NoError(t, err)
	var last *clientv3.PutResponse
	for i := range 50 {
		opts := []clientv3.OpOption{}
		if i%10 == 0 {
			opts = append(opts, clientv3.WithLease(lease.ID))
		}
		last, err = c.Put(ctx, fmt.Sprintf("r%02d", i), fmt.Sprint(i), opts...)
		require.NoError(t, err)
	}
	rc, err := c.Snapshot(ctx)
	require.NoError(t, err)
	data, err := io.ReadAll(rc)
	rc.Close()
	require.NoError(t, err)
	stop()
	snap := filepath.Join(dir, "snap.db.zst")
	f, err := os.Create(snap)
	require.NoError(t, err)
	zw, err := zstd.NewWriter(f)
	require.NoError(t, err)
	_, err = zw.Write(data)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	require.NoError(t, f.Close())

	const bump = 1000
	cfg := DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "refused")
	require.ErrorContains(t, RestoreSnapshot(snap, cfg, RestoreOptions{BumpRevision: bump}), "--mark-compacted")
	require.ErrorContains(t, RestoreSnapshot(snap, cfg, RestoreOptions{MarkCompacted: true}), "--mark-compacted")
	cfg.InitialCluster = []member.InitialMember{{Name: "other", PeerURLs: []string{"http://127.0.0.1:12380"}}}
	require.ErrorContains(t, RestoreSnapshot(snap, cfg, RestoreOptions{}), "couldn't find local name")
	_, err = os.Stat(cfg.DataDir)
	require.True(t, os.IsNotExist(err), "nothing left of a refused restore")

	cl := startClusterTogether(t, 3, func(cfg *Config) {
		if _, err := os.Stat(cfg.DataDir); os.IsNotExist(err) {
			require.NoError(t, RestoreSnapshot(snap, *cfg, RestoreOptions{BumpRevision: bump, MarkCompacted: true}))
		}
	})
	rev := last.Header.Revision + bump
	for i, cli := range cl.clients {
		resp, err := cli.Get(ctx, "r", clientv3.WithPrefix(), clientv3.WithCountOnly())
		require.NoError(t, err, "member %d", i+1)
		require.Equal(t, int64(50), resp.Count)
		require.GreaterOrEqual(t, resp.Header.Revision, rev)
		_, err = cli.Get(ctx, "r00", clientv3.WithRev(last.Header.Revision))
		require.ErrorIs(t, err, rpctypes.ErrCompacted)
		ttl, err := cli.TimeToLive(ctx, lease.ID, clientv3.WithAttachedKeys())
		require.NoError(t, err)
		require.Len(t, ttl.Keys, 5)
	}
	put, err := cl.clients[1].Put(ctx, "after", "restore")
	require.NoError(t, err)
	require.Greater(t, put.Header.Revision, rev)
	members, err := cl.clients[2].MemberList(ctx)
	require.NoError(t, err)
	require.Len(t, members.Members, 3)
}
