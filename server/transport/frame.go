package transport

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A peer connection, little-endian. The dialer opens it with a hello and
// the listener answers; then the dialer sends frames, each one batch of
// raft messages, until either side closes.
//
//	hello  := magic:"CRNP" version:u16 kind:u8 0:u8 cluster:u64 from:u64 to:u64
//	answer := status:u8 cluster:u64 id:u64
//	frame  := len:u32 batch[len]
//
// The answer carries the listener's own cluster and member id, so that a
// refused dialer can say what it met.

const (
	helloMagic   = "CRNP"
	helloVersion = 1
	helloSize    = 4 + 2 + 1 + 1 + 8 + 8 + 8
	answerSize   = 1 + 8 + 8

	// maxFrame bounds a frame: a batch is cut well below it (maxBatch),
	// and a larger length is a corrupt or hostile peer.
	maxFrame = 64 << 20
)

// streamKind is what a connection carries.
type streamKind uint8

const (
	// streamMessages carries everything but appends: heartbeats, votes,
	// their answers, read indexes, transfers. It is never held up behind
	// a large append.
	streamMessages streamKind = 1
	// streamAppends carries MsgApp, which may be large.
	streamAppends streamKind = 2
)

func (k streamKind) String() string {
	switch k {
	case streamMessages:
		return "message"
	case streamAppends:
		return "append"
	case streamRequests:
		return "request"
	case streamSnapshot:
		return "snapshot"
	case streamMembers:
		return "members"
	}
	return fmt.Sprintf("stream(%d)", uint8(k))
}

// answer statuses.
const (
	statusOK           = 0
	statusOtherCluster = 1 // the dialer is of another cluster
	statusNotMe        = 2 // the dialer meant another member
	statusUnknown      = 3 // the dialer is not a member this one knows
	statusBadHello     = 4 // not a hello this version reads
	statusRemoved      = 5 // the dialer was removed from the cluster
)

// hello is the dialer's first message.
type hello struct {
	kind              streamKind
	cluster, from, to uint64
}

func (h hello) encode() []byte {
	b := append(make([]byte, 0, helloSize), helloMagic...)
	b = binary.LittleEndian.AppendUint16(b, helloVersion)
	b = append(b, byte(h.kind), 0)
	b = binary.LittleEndian.AppendUint64(b, h.cluster)
	b = binary.LittleEndian.AppendUint64(b, h.from)
	return binary.LittleEndian.AppendUint64(b, h.to)
}

var errBadHello = errors.New("transport: not a peer hello this version reads")

func readHello(r io.Reader) (hello, error) {
	var b [helloSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return hello{}, err
	}
	if string(b[:4]) != helloMagic || binary.LittleEndian.Uint16(b[4:]) != helloVersion {
		return hello{}, errBadHello
	}
	h := hello{kind: streamKind(b[6]), cluster: binary.LittleEndian.Uint64(b[8:]),
		from: binary.LittleEndian.Uint64(b[16:]), to: binary.LittleEndian.Uint64(b[24:])}
	if h.kind != streamMessages && h.kind != streamAppends && h.kind != streamRequests && h.kind != streamSnapshot && h.kind != streamMembers {
		return hello{}, errBadHello
	}
	return h, nil
}

// answer is the listener's reply to a hello.
type answer struct {
	status      byte
	cluster, id uint64
}

func (a answer) encode() []byte {
	b := append(make([]byte, 0, answerSize), a.status)
	b = binary.LittleEndian.AppendUint64(b, a.cluster)
	return binary.LittleEndian.AppendUint64(b, a.id)
}

func readAnswer(r io.Reader) (answer, error) {
	var b [answerSize]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return answer{}, err
	}
	return answer{status: b[0], cluster: binary.LittleEndian.Uint64(b[1:]), id: binary.LittleEndian.Uint64(b[9:])}, nil
}

// writeFrame writes one frame holding batch (its first 4 bytes reserved
// for the length, filled in here) and flushes it.
func writeFrame(w *bufio.Writer, frame []byte) error {
	binary.LittleEndian.PutUint32(frame, uint32(len(frame)-4))
	if _, err := w.Write(frame); err != nil {
		return err
	}
	return w.Flush()
}

// readFrame reads one frame's batch into buf (grown as needed).
func readFrame(r *bufio.Reader, buf []byte) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return buf, err
	}
	size := binary.LittleEndian.Uint32(n[:])
	if size > maxFrame {
		return buf, fmt.Errorf("transport: a frame of %d bytes, past the %d allowed", size, maxFrame)
	}
	if cap(buf) < int(size) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	_, err := io.ReadFull(r, buf)
	return buf, err
}
