package transport

import (
	"bufio"
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"log/slog"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/internal/testleak"

	"github.com/cairn-kv/cairn/raft"
	"github.com/stretchr/testify/require"
)

// FuzzSnapshotData feeds arbitrary bytes to the receiver's side of a
// snapshot stream (chunks, zstd, trailer), seeded with streams the sender
// wrote. Reading must end, with an error or with the data whole: its size
// and CRC what the trailer says.
func FuzzSnapshotData(f *testing.F) {
	for _, data := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("page"), 5000), make([]byte, 3<<20)} {
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		require.NoError(f, writeSnapshotData(bw, nil, 0, func(w io.Writer) error {
			_, err := w.Write(data)
			return err
		}))
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		data, done, err := readSnapshotData(bufio.NewReader(bytes.NewReader(in)), nil, 0)
		if err != nil {
			return
		}
		defer done()
		crc := crc32.New(snapshotCRC)
		// (A small stream may stand for far more data: a run of one
		// byte compresses to nothing. The fuzzing reads 64 MiB of it.)
		n, err := io.Copy(crc, io.LimitReader(data, 64<<20))
		if err != nil || n == 64<<20 {
			return
		}
		require.True(t, data.done, "read to its end without its trailer checked")
		require.Equal(t, uint64(n), data.n)
		require.Equal(t, data.crc.Sum32(), crc.Sum32())
	})
}

// fuzzHandler takes everything a peer connection may bring, and answers
// requests by echoing them.
type fuzzHandler struct{ recorder }

func (h *fuzzHandler) HandleRequest(from uint64, req []byte) ([]byte, error) {
	if len(req) > 0 && req[0] == 'e' {
		return nil, errors.New("refused")
	}
	return req, nil
}

func (h *fuzzHandler) ReceiveSnapshot(msg raft.Message, data io.Reader) error {
	_, err := io.Copy(io.Discard, io.LimitReader(data, 64<<20))
	return err
}

// FuzzPeerConn feeds a peer connection arbitrary bytes after a hello of
// each kind from a known peer (messages, appends, requests, a snapshot,
// a member list), seeded with what each stream carries: the transport
// must not panic, and must be done with the connection once its bytes
// end, every goroutine it started for it gone.
func FuzzPeerConn(f *testing.F) {
	msg := func(typ raft.MessageType) raft.Message {
		return raft.Message{Type: typ, From: 2, To: 1, Term: 3, Index: 4, Entries: []raft.Entry{{Term: 3, Index: 5, Data: []byte("e")}}}
	}
	batch := func(msgs ...raft.Message) []byte {
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		require.NoError(f, writeFrame(bw, encodeBatch([]byte{0, 0, 0, 0}, msgs)))
		return buf.Bytes()
	}
	snap := msg(raft.MsgSnap)
	snap.Entries, snap.Snapshot = nil, &raft.SnapshotMeta{Term: 3, Index: 9, Voters: []uint64{1, 2}}
	var snapStream bytes.Buffer
	snapStream.Write(batch(snap))
	sw := bufio.NewWriter(&snapStream)
	require.NoError(f, writeSnapshotData(sw, nil, 0, func(w io.Writer) error { _, err := w.Write([]byte("state")); return err }))
	request := func(body string) []byte {
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		require.NoError(f, writeFrame(bw, append([]byte{0, 0, 0, 0}, body...)))
		return buf.Bytes()
	}
	for _, seed := range []struct {
		kind streamKind
		rest []byte
	}{
		{streamMessages, batch(msg(raft.MsgHeartbeat), msg(raft.MsgVote))},
		{streamAppends, append(batch(msg(raft.MsgApp)), batch(msg(raft.MsgApp))...)},
		{streamRequests, append(request("ask"), request("else")...)},
		{streamSnapshot, snapStream.Bytes()},
		{streamMembers, nil},
	} {
		f.Add(uint8(seed.kind), seed.rest)
	}
	f.Fuzz(func(t *testing.T, kind uint8, rest []byte) {
		before := runtime.NumGoroutine()
		h := &fuzzHandler{}
		h.list = []byte(`[{"id":1}]`)
		tr := New(Config{ID: 1, ClusterID: 9, Handler: h, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		// Known, at an address nothing listens on.
		require.NoError(t, tr.AddPeer(2, []string{"http://127.0.0.1:1"}))
		ours, theirs := net.Pipe()
		in := append(hello{kind: streamKind(kind), cluster: 9, from: 2, to: 1}.encode(), rest...)
		go func() {
			_, _ = theirs.Write(in)
			theirs.Close()
		}()
		go func() { _, _ = io.Copy(io.Discard, theirs) }()
		done := make(chan struct{})
		go func() {
			tr.receive(ours)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("the transport was not done with the connection 20 s after its bytes ended")
		}
		tr.Stop()
		testleak.Goroutines(t, before)
	})
}
