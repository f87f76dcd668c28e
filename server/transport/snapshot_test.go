package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/cairn-kv/cairn/internal/testlog"
	"github.com/cairn-kv/cairn/raft"
)

// snapTaker is a recorder that also takes snapshots: it reads the data
// whole, then records the message, as a member steps it once the data is
// safe; or it refuses with refuse.
type snapTaker struct {
	*recorder
	mu     sync.Mutex
	data   [][]byte
	errs   []error // what reading the data ended with, per snapshot
	refuse error
}

func (s *snapTaker) ReceiveSnapshot(msg raft.Message, data io.Reader) error {
	b, err := io.ReadAll(data)
	s.mu.Lock()
	s.errs = append(s.errs, err)
	if err == nil {
		s.data = append(s.data, b)
	}
	refuse := s.refuse
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if refuse != nil {
		return refuse
	}
	s.Process([]raft.Message{msg})
	return nil
}

func (s *snapTaker) results() ([][]byte, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.data...), append([]error(nil), s.errs...)
}

func startSnapNode(t *testing.T, id, cluster uint64, faults *Faults) (*node, *snapTaker) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	taker := &snapTaker{recorder: &recorder{}}
	n := &node{id: id, url: "http://" + ln.Addr().String(), h: taker.recorder, log: &testlog.Buffer{}}
	n.t = New(Config{ID: id, ClusterID: cluster, Handler: taker, Faults: faults,
		Logger: slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	go n.t.Serve(ln)
	t.Cleanup(n.t.Stop)
	return n, taker
}

// snapshotData is size bytes, half random (incompressible), half runs.
func snapshotData(seed int64, size int) []byte {
	rng := rand.New(rand.NewSource(seed))
	b := make([]byte, size)
	for i := 0; i < size; i += 4096 {
		page := b[i:min(i+4096, size)]
		if rng.Intn(2) == 0 {
			rng.Read(page)
		} else {
			for j := range page {
				page[j] = byte(i / 4096)
			}
		}
	}
	return b
}

func snapMsg(from, to uint64) raft.Message {
	return raft.Message{Type: raft.MsgSnap, From: from, To: to, Term: 3,
		Snapshot: &raft.SnapshotMeta{Index: 1234, Term: 3, Voters: []uint64{1, 2, 3}}}
}

// TestSnapshotSend: a snapshot's data arrives whole and in order beside
// its message, which the receiver steps once it has the data; a refusal
// comes back to the sender with the receiver's reason; a send that fails
// part way is an error on both sides, and the message is not stepped.
func TestSnapshotSend(t *testing.T) {
	a := startNode(t, 1, 7, nil)
	b, taker := startSnapNode(t, 2, 7, nil)
	connect(t, a, b)
	data := snapshotData(1, 5<<20+123)
	msg := snapMsg(1, 2)
	require.NoError(t, a.t.SendSnapshot(context.Background(), msg, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	}))
	got, _ := taker.results()
	require.Len(t, got, 1)
	require.True(t, bytes.Equal(data, got[0]), "the data arrived changed")
	stepped := b.h.received()
	require.Len(t, stepped, 1)
	require.Equal(t, msg.Snapshot, stepped[0].Snapshot)

	taker.mu.Lock()
	taker.refuse = errors.New("no room for it")
	taker.mu.Unlock()
	err := a.t.SendSnapshot(context.Background(), msg, func(w io.Writer) error {
		_, err := w.Write(data[:1000])
		return err
	})
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "no room for it", re.Msg)

	// The sender's read fails part way: the receiver sees the data end
	// early and steps nothing.
	taker.mu.Lock()
	taker.refuse = nil
	taker.mu.Unlock()
	readErr := errors.New("page file read failed")
	err = a.t.SendSnapshot(context.Background(), msg, func(w io.Writer) error {
		if _, err := w.Write(data[:3<<20]); err != nil {
			return err
		}
		return readErr
	})
	require.ErrorIs(t, err, readErr)
	require.True(t, eventually(func() bool { _, errs := taker.results(); return len(errs) == 3 }))
	_, errs := taker.results()
	require.Error(t, errs[2])
	require.Len(t, b.h.received(), 1, "a snapshot that did not arrive whole was stepped")
}

// TestSnapshotRefusedWhenCut: a cut link fails a send at once.
func TestSnapshotRefusedWhenCut(t *testing.T) {
	f := &Faults{}
	a := startNode(t, 1, 7, f)
	b, taker := startSnapNode(t, 2, 7, nil)
	connect(t, a, b)
	f.Cut(1, 2)
	require.Error(t, a.t.SendSnapshot(context.Background(), snapMsg(1, 2), func(w io.Writer) error { return nil }))
	got, errs := taker.results()
	require.Empty(t, got)
	require.Empty(t, errs)
}

// TestSnapshotTrailerCatchesDamage: data whose checksum or length does not
// match the trailer is an error at its end, not a clean end of data.
func TestSnapshotTrailerCatchesDamage(t *testing.T) {
	data := snapshotData(2, 300<<10)
	stream := func(crc uint32, size uint64) *bufio.Reader {
		var out bytes.Buffer
		bw := bufio.NewWriter(&out)
		cw := &chunkWriter{w: bw}
		enc, err := zstd.NewWriter(cw)
		require.NoError(t, err)
		_, err = enc.Write(data)
		require.NoError(t, err)
		require.NoError(t, enc.Close())
		require.NoError(t, cw.end(crc, size))
		return bufio.NewReader(&out)
	}
	read := func(r *bufio.Reader) ([]byte, error) {
		cr := &chunkReader{r: r}
		dec, err := zstd.NewReader(cr)
		require.NoError(t, err)
		defer dec.Close()
		return io.ReadAll(&checkedReader{r: dec, chunks: cr, crc: crc32.New(snapshotCRC)})
	}
	good := crc32.Checksum(data, snapshotCRC)
	got, err := read(stream(good, uint64(len(data))))
	require.NoError(t, err)
	require.True(t, bytes.Equal(data, got))
	_, err = read(stream(good^1, uint64(len(data))))
	require.ErrorContains(t, err, "damaged")
	_, err = read(stream(good, uint64(len(data))-1))
	require.ErrorContains(t, err, "damaged")
}
