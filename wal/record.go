package wal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

var (
	le         = binary.LittleEndian
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// On-disk constants: wire format, never renumber.
const (
	formatVersion = 1
	segmentMagic  = 0x4c415743 // "CWAL"
	batchMagic    = 0x48435442 // "BTCH"

	segmentHeaderSize = 32
	batchHeaderSize   = 24
	recordHeaderSize  = 12

	// maxRecordSize bounds a record's payload, so a corrupt length field
	// can never make the reader allocate absurd amounts.
	maxRecordSize = 64 << 20
)

// RecordType says what a record holds.
type RecordType uint8

const (
	TypeEntry     RecordType = 1
	TypeHardState RecordType = 2
	TypeSnapshot  RecordType = 3
	TypeMetadata  RecordType = 4
	// TypeInstalled is a snapshot marker for a snapshot received from the
	// leader and installed: the log it replaces, written before it, is not
	// replayed after it.
	TypeInstalled RecordType = 5
)

func (t RecordType) String() string {
	switch t {
	case TypeEntry:
		return "entry"
	case TypeHardState:
		return "hardstate"
	case TypeSnapshot:
		return "snapshot"
	case TypeMetadata:
		return "metadata"
	case TypeInstalled:
		return "installed-snapshot"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Entry is a raft log entry.
type Entry struct {
	Term  uint64
	Index uint64
	Type  uint8
	Data  []byte
}

// HardState is raft's persistent state.
type HardState struct {
	Term, Vote, Commit uint64
}

// IsEmpty reports whether the hard state is all zero.
func (h HardState) IsEmpty() bool { return h == HardState{} }

// Snapshot marks that a snapshot at (Term, Index) was taken; Membership is
// the cluster configuration it holds, opaque to the WAL. Installed marks a
// snapshot received from the leader: it replaces the whole log, so the
// entries written before its marker are dropped when replay meets it
// (those of a snapshot taken locally follow from the log and are kept).
type Snapshot struct {
	Term, Index uint64
	Membership  []byte
	Installed   bool
}

// Record is one thing written to the WAL. Build it with EntryRecord,
// HardStateRecord, SnapshotRecord or MetadataRecord.
type Record struct {
	Type RecordType
	// payload is the encoded body, or for a record EntryRecord built, the
	// body's head (term, index, type), the entry's data following in data:
	// the data is copied once, into the batch.
	payload []byte
	data    []byte
}

// size is the length of the encoded body.
func (r *Record) size() int { return len(r.payload) + len(r.data) }

// EntryRecord records a raft entry. The record refers to e.Data, which
// must not change until the record is appended.
func EntryRecord(e Entry) Record {
	p := make([]byte, 17)
	le.PutUint64(p, e.Term)
	le.PutUint64(p[8:], e.Index)
	p[16] = e.Type
	return Record{Type: TypeEntry, payload: p, data: e.Data}
}

// HardStateRecord records raft's hard state.
func HardStateRecord(h HardState) Record {
	p := make([]byte, 24)
	le.PutUint64(p, h.Term)
	le.PutUint64(p[8:], h.Vote)
	le.PutUint64(p[16:], h.Commit)
	return Record{Type: TypeHardState, payload: p}
}

// SnapshotRecord records a snapshot marker.
func SnapshotRecord(s Snapshot) Record {
	p := make([]byte, 16+len(s.Membership))
	le.PutUint64(p, s.Term)
	le.PutUint64(p[8:], s.Index)
	copy(p[16:], s.Membership)
	if s.Installed {
		return Record{Type: TypeInstalled, payload: p}
	}
	return Record{Type: TypeSnapshot, payload: p}
}

// MetadataRecord records the member's metadata (cluster and member ids).
func MetadataRecord(md []byte) Record {
	return Record{Type: TypeMetadata, payload: append([]byte(nil), md...)}
}

// Entry decodes an entry record.
func (r Record) Entry() (Entry, error) {
	if r.Type != TypeEntry || len(r.payload) < 17 {
		return Entry{}, fmt.Errorf("wal: not an entry record (%v, %d bytes)", r.Type, len(r.payload))
	}
	p := r.payload
	e := Entry{Term: le.Uint64(p), Index: le.Uint64(p[8:]), Type: p[16], Data: p[17:]}
	if r.data != nil {
		e.Data = r.data
	}
	return e, nil
}

// HardState decodes a hard-state record.
func (r Record) HardState() (HardState, error) {
	if r.Type != TypeHardState || len(r.payload) != 24 {
		return HardState{}, fmt.Errorf("wal: not a hard-state record (%v, %d bytes)", r.Type, len(r.payload))
	}
	p := r.payload
	return HardState{Term: le.Uint64(p), Vote: le.Uint64(p[8:]), Commit: le.Uint64(p[16:])}, nil
}

// Snapshot decodes a snapshot-marker record.
func (r Record) Snapshot() (Snapshot, error) {
	if (r.Type != TypeSnapshot && r.Type != TypeInstalled) || len(r.payload) < 16 {
		return Snapshot{}, fmt.Errorf("wal: not a snapshot record (%v, %d bytes)", r.Type, len(r.payload))
	}
	p := r.payload
	return Snapshot{Term: le.Uint64(p), Index: le.Uint64(p[8:]), Membership: p[16:], Installed: r.Type == TypeInstalled}, nil
}

// Metadata decodes a metadata record.
func (r Record) Metadata() ([]byte, error) {
	if r.Type != TypeMetadata {
		return nil, fmt.Errorf("wal: not a metadata record (%v)", r.Type)
	}
	return r.payload, nil
}

func align8(n int) int { return (n + 7) &^ 7 }

// recordSize is a record's framed size.
func recordSize(r *Record) int { return align8(recordHeaderSize + r.size()) }

// encodeBatch frames records as one batch into buf (which it returns,
// grown), chaining CRCs from prev; it returns the chain's new value.
func encodeBatch(buf []byte, recs []Record, prev uint32) ([]byte, uint32) {
	body := 0
	for i := range recs {
		body += recordSize(&recs[i])
	}
	start := len(buf)
	buf = append(buf, make([]byte, batchHeaderSize+body)...)
	b := buf[start:]
	le.PutUint32(b[0:], batchMagic)
	le.PutUint32(b[4:], uint32(body))
	le.PutUint32(b[8:], uint32(len(recs)))
	le.PutUint32(b[12:], prev)
	le.PutUint32(b[20:], crc32.Checksum(b[:20], castagnoli))
	off := batchHeaderSize
	for i := range recs {
		r := &recs[i]
		f := b[off : off+recordSize(r)]
		le.PutUint32(f[0:], uint32(r.size()))
		f[8] = byte(r.Type)
		n := copy(f[recordHeaderSize:], r.payload)
		copy(f[recordHeaderSize+n:], r.data)
		prev = crc32.Update(prev, castagnoli, f[8:recordHeaderSize+r.size()])
		le.PutUint32(f[4:], prev)
		off += len(f)
	}
	return buf, prev
}
