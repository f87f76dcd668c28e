package server

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cairn-kv/cairn/pagefile"
)

// corruptValue changes, in a stopped member's page file, the last byte of
// every stored value of key: the same revisions, other data, as a disk
// that flipped a bit under a valid checksum would leave.
func corruptValue(t *testing.T, dataDir, key string) {
	t.Helper()
	db, err := pagefile.Open(filepath.Join(dataDir, "member", "snap", "db"), nil)
	require.NoError(t, err)
	defer db.Close()
	changed := 0
	require.NoError(t, db.Update(func(tx *pagefile.Tx) error {
		b := tx.Bucket([]byte("key"))
		var revs, values [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			// A stored key-value: u32 key length, key, four int64s, value.
			if len(v) > 4+len(key)+32 && string(v[4:4+len(key)]) == key && v[0] == byte(len(key)) {
				nv := bytes.Clone(v)
				nv[len(nv)-1] ^= 0xff
				revs, values = append(revs, bytes.Clone(k)), append(values, nv)
			}
		}
		for i := range revs {
			if err := b.Put(revs[i], values[i]); err != nil {
				return err
			}
			changed++
		}
		return nil
	}))
	require.Positive(t, changed, "no value of %q found", key)
}

// settle makes every running member apply what the leader committed.
func (c *testCluster) settle() {
	c.t.Helper()
	for i, cl := range c.clients {
		if !c.down[i] {
			_, err := cl.Get(ctxT(c.t), "settle")
			require.NoError(c.t, err)
		}
	}
}

// follower returns a member that is not the leader.
func (c *testCluster) follower() int { return (c.leader() + 1) % len(c.servers) }

// TestInitialCorruptCheck: with --experimental-initial-corrupt-check a
// member restarting over its data compares hashes with its peers first:
// an intact one starts, one whose page file was corrupted is refused
// ("found data inconsistency with peers").
func TestInitialCorruptCheck(t *testing.T) {
	c := startClusterWith(t, 3, "http", func(cfg *Config) { cfg.InitialCorruptCheck = true })
	c.leader()
	for i := range 5 {
		_, err := c.clients[0].Put(ctxT(t), fmt.Sprint("k", i), "value")
		require.NoError(t, err)
	}
	c.settle()
	f := c.follower()
	c.stop(f)
	c.restart(f) // intact: the check passes
	c.settle()
	c.stop(f)
	corruptValue(t, c.dirs[f], "k3")
	_, _, err := openMember(c.dirs[f], c.sets[f])
	require.ErrorContains(t, err, "found data inconsistency with peers")
}

// TestCorruptCheckRaisesAlarm: with --experimental-corrupt-check-time,
// or --experimental-compact-hash-check-enabled once a compaction is
// made, the leader finds a follower whose page file was corrupted and
// raises the CORRUPT alarm for it; writes are then refused ("corrupt
// cluster"), reads go on.
func TestCorruptCheckRaisesAlarm(t *testing.T) {
	for _, how := range []string{"periodic", "at compaction"} {
		t.Run(how, func(t *testing.T) {
			c := startClusterWith(t, 3, "http", func(cfg *Config) {
				if how == "periodic" {
					cfg.CorruptCheckTime = 50 * time.Millisecond
				} else {
					cfg.CompactHashCheckTime = 50 * time.Millisecond
				}
			})
			c.leader()
			var rev int64
			for i := range 5 {
				resp, err := c.clients[0].Put(ctxT(t), fmt.Sprint("k", i), "value")
				require.NoError(t, err)
				rev = resp.Header.Revision
			}
			c.settle()
			f := c.follower()
			c.stop(f)
			corruptValue(t, c.dirs[f], "k3")
			c.restart(f)
			c.diverged = true // on purpose
			lead := c.leader()
			if how == "at compaction" {
				_, err := c.clients[lead].Compact(ctxT(t), rev)
				require.NoError(t, err)
			}
			id := c.servers[f].m.ID()
			require.True(t, eventually(func() bool {
				resp, err := c.clients[lead].AlarmList(ctxT(t))
				return err == nil && len(resp.Alarms) == 1 && resp.Alarms[0].MemberID == id && resp.Alarms[0].Alarm.String() == "CORRUPT"
			}), "no CORRUPT alarm for the corrupted member")
			_, err := c.clients[lead].Put(ctxT(t), "after", "v")
			require.ErrorContains(t, err, "etcdserver: corrupt cluster")
			_, err = c.clients[lead].Get(ctxT(t), "k0", clientv3.WithSerializable())
			require.NoError(t, err)
		})
	}
}
