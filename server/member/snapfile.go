package member

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cairn-kv/cairn/internal/vfs"
	"github.com/cairn-kv/cairn/raft"
)

// Raft snapshots. Every SnapshotCount applied entries the applier makes
// the page file durable at its applied index, and the driver records a
// snapshot there: a marker in the WAL, then a file <term>-<index>.snap in
// the snap directory naming the entry and the membership after it. A
// restart begins at the newest such file: the WAL replays the entries
// after its marker onto the page file, whose consistent index is at or
// past it. Then raft keeps only the last SnapshotCatchUpEntries of its log
// in memory, WAL segments wholly before the snapshot are removed beyond
// --max-wals, and snap files beyond --max-snapshots, oldest first.
//
// A .snap file, little-endian:
//
//	0   magic "CSNP"        4 bytes
//	4   format version (1)  uint32
//	8   term                uint64
//	16  index               uint64
//	24  membership          (below)
//	end CRC-32C of all the bytes before it, uint32
//
// The membership, also the WAL marker's payload: the voter count (uint32)
// and ids (uint64 each), then the learner count and ids.

const (
	snapMagic   = "CSNP"
	snapVersion = 1
	snapSuffix  = ".snap"
	// DefaultSnapshotCatchUpEntries is how many entries before a snapshot
	// raft keeps for a slow follower (etcd's 5,000), so that it catches up
	// from the log rather than by a whole snapshot.
	DefaultSnapshotCatchUpEntries = 5000
	// defaultSnapshotBytes: a raft snapshot is also taken once the entries
	// applied since the last hold this much data (Config.SnapshotBytes),
	// and snapshotCatchUpBytes bounds the data of the entries kept for a
	// slow follower. raft's log is held in memory until a snapshot lets it
	// go, and with etcd's counts alone it grows with the entries' size:
	// 100,000 entries of 1.5 MB would be 150 GB (etcd holds them too).
	defaultSnapshotBytes = 256 << 20
	snapshotCatchUpBytes = 64 << 20
)

var snapCRC = crc32.MakeTable(crc32.Castagnoli)

// errBadSnap marks a .snap file that is damaged or not ours.
var errBadSnap = errors.New("bad snapshot file")

func encodeMembership(voters, learners []uint64) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(voters)))
	for _, id := range voters {
		b = binary.LittleEndian.AppendUint64(b, id)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(learners)))
	for _, id := range learners {
		b = binary.LittleEndian.AppendUint64(b, id)
	}
	return b
}

func decodeMembership(b []byte) (voters, learners []uint64, err error) {
	ids := func() ([]uint64, error) {
		if len(b) < 4 {
			return nil, errBadSnap
		}
		n := binary.LittleEndian.Uint32(b)
		b = b[4:]
		if uint64(len(b)) < uint64(n)*8 {
			return nil, errBadSnap
		}
		var out []uint64
		if n > 0 {
			out = make([]uint64, n)
		}
		for i := range out {
			out[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
		b = b[8*n:]
		return out, nil
	}
	if voters, err = ids(); err != nil {
		return nil, nil, err
	}
	if learners, err = ids(); err != nil {
		return nil, nil, err
	}
	if len(b) != 0 {
		return nil, nil, errBadSnap
	}
	return voters, learners, nil
}

func snapName(term, index uint64) string {
	return fmt.Sprintf("%016x-%016x%s", term, index, snapSuffix)
}

func encodeSnap(s raft.SnapshotMeta) []byte {
	b := append([]byte(snapMagic), 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[4:], snapVersion)
	b = binary.LittleEndian.AppendUint64(b, s.Term)
	b = binary.LittleEndian.AppendUint64(b, s.Index)
	b = append(b, encodeMembership(s.Voters, s.Learners)...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, snapCRC))
}

func decodeSnap(b []byte) (raft.SnapshotMeta, error) {
	if len(b) < 28 || string(b[:4]) != snapMagic {
		return raft.SnapshotMeta{}, errBadSnap
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, snapCRC) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return raft.SnapshotMeta{}, fmt.Errorf("%w: checksum mismatch", errBadSnap)
	}
	if v := binary.LittleEndian.Uint32(b[4:]); v != snapVersion {
		return raft.SnapshotMeta{}, fmt.Errorf("%w: format version %d", errBadSnap, v)
	}
	s := raft.SnapshotMeta{Term: binary.LittleEndian.Uint64(b[8:]), Index: binary.LittleEndian.Uint64(b[16:])}
	var err error
	s.Voters, s.Learners, err = decodeMembership(body[24:])
	return s, err
}

// writeSnap makes the file for s durable in dir: written under a temporary
// name, synced, renamed, and the directory synced.
func writeSnap(fs vfs.FS, dir string, s raft.SnapshotMeta) error {
	_, err := writeSnapTimed(fs, dir, s)
	return err
}

// snapTimes are how long a .snap file took to encode and to sync.
type snapTimes struct{ marshal, fsync time.Duration }

// writeSnapTimed is writeSnap, timed (etcd's snap save metrics).
func writeSnapTimed(fs vfs.FS, dir string, s raft.SnapshotMeta) (snapTimes, error) {
	var t snapTimes
	path := filepath.Join(dir, snapName(s.Term, s.Index))
	tmp := path + ".tmp"
	f, err := fs.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return t, err
	}
	start := time.Now()
	data := encodeSnap(s)
	t.marshal = time.Since(start)
	if _, err = f.WriteAt(data, 0); err == nil {
		start = time.Now()
		err = f.Sync()
		t.fsync = time.Since(start)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err != nil {
		_ = fs.Remove(tmp)
		return t, err
	}
	return t, fs.SyncDir(dir)
}

// snapFiles returns the names of the .snap files in dir, newest (highest
// index) first.
func snapFiles(fs vfs.FS, dir string) ([]string, error) {
	names, err := fs.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var snaps []string
	for _, n := range names {
		var term, index uint64
		if strings.HasSuffix(n, snapSuffix) {
			if _, err := fmt.Sscanf(n, "%016x-%016x.snap", &term, &index); err == nil && n == snapName(term, index) {
				snaps = append(snaps, n)
			}
		}
	}
	// Fixed-width hex names: the byte order of the index part is its
	// numeric order.
	slices.SortFunc(snaps, func(a, b string) int { return strings.Compare(b[17:], a[17:]) })
	return snaps, nil
}

// loadSnap returns the newest readable snapshot in dir, or nil if there is
// none. A damaged file is reported and passed over for an older one (a
// file is only ever damaged by the disk: each is written whole, then
// renamed into place).
func loadSnap(fs vfs.FS, dir string, log *slog.Logger) (*raft.SnapshotMeta, error) {
	names, err := snapFiles(fs, dir)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		data, err := vfs.ReadFile(fs, filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		s, err := decodeSnap(data)
		if err == nil && n != snapName(s.Term, s.Index) {
			err = fmt.Errorf("%w: it records term %d index %d", errBadSnap, s.Term, s.Index)
		}
		if err != nil {
			log.Warn("passing over a damaged snapshot file", "file", n, "error", err)
			continue
		}
		return &s, nil
	}
	return nil, nil
}

// purgeSnaps removes all but the newest keep .snap files in dir (keep 0:
// none removed).
func purgeSnaps(fs vfs.FS, dir string, keep int) error {
	if keep <= 0 {
		return nil
	}
	names, err := snapFiles(fs, dir)
	if err != nil || len(names) <= keep {
		return err
	}
	for _, n := range names[keep:] {
		if err := fs.Remove(filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return fs.SyncDir(dir)
}
