package transport

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cairn-kv/cairn/raft"
)

// A batch of raft messages on the wire, little-endian:
//
//	batch    := count:u32 message*
//	message  := type:u8 flags:u8 from:u64 to:u64 term:u64 logTerm:u64
//	            index:u64 commit:u64 rejectHint:u64 context:u64
//	            nEntries:u32 entry* [snapshot]
//	entry    := term:u64 index:u64 type:u8 len:u32 data[len]
//	snapshot := index:u64 term:u64 nVoters:u32 id:u64* nLearners:u32 id:u64*
//
// flags: bit 0 reject, bit 1 a snapshot follows the entries. A frame (see
// frame.go) carries one batch. The decoder trusts nothing: every count
// and length is checked against what is left of the frame.

const (
	flagReject   = 1 << 0
	flagSnapshot = 1 << 1

	messageHeaderSize = 2 + 8*8 + 4
	entryHeaderSize   = 8 + 8 + 1 + 4
)

// errShort is a batch that ends inside a message.
var errShort = errors.New("transport: batch cut short")

// appendMessage encodes m after b.
func appendMessage(b []byte, m *raft.Message) []byte {
	var flags byte
	if m.Reject {
		flags |= flagReject
	}
	if m.Snapshot != nil {
		flags |= flagSnapshot
	}
	b = append(b, byte(m.Type), flags)
	for _, v := range [...]uint64{m.From, m.To, m.Term, m.LogTerm, m.Index, m.Commit, m.RejectHint, m.Context} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Entries)))
	for i := range m.Entries {
		e := &m.Entries[i]
		b = binary.LittleEndian.AppendUint64(b, e.Term)
		b = binary.LittleEndian.AppendUint64(b, e.Index)
		b = append(b, byte(e.Type))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Data)))
		b = append(b, e.Data...)
	}
	if s := m.Snapshot; s != nil {
		b = binary.LittleEndian.AppendUint64(b, s.Index)
		b = binary.LittleEndian.AppendUint64(b, s.Term)
		for _, ids := range [][]uint64{s.Voters, s.Learners} {
			b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)))
			for _, id := range ids {
				b = binary.LittleEndian.AppendUint64(b, id)
			}
		}
	}
	return b
}

// encodedSize is the length appendMessage adds for m.
func encodedSize(m *raft.Message) int {
	n := messageHeaderSize
	for i := range m.Entries {
		n += entryHeaderSize + len(m.Entries[i].Data)
	}
	if s := m.Snapshot; s != nil {
		n += 8 + 8 + 4 + 8*len(s.Voters) + 4 + 8*len(s.Learners)
	}
	return n
}

// encodeBatch encodes msgs as one batch after b.
func encodeBatch(b []byte, msgs []raft.Message) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(msgs)))
	for i := range msgs {
		b = appendMessage(b, &msgs[i])
	}
	return b
}

// decoder reads a batch; its entries' data are copied out of the frame
// (raft keeps them in its log).
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) need(n int) bool {
	if d.err == nil && len(d.b) < n {
		d.err = errShort
	}
	return d.err == nil
}

func (d *decoder) u8() byte {
	if !d.need(1) {
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// count reads a u32 count of items at least min bytes each, refusing one
// that what is left could not hold.
func (d *decoder) count(min int) int {
	n := d.u32()
	if d.err == nil && uint64(n)*uint64(min) > uint64(len(d.b)) {
		d.err = fmt.Errorf("transport: %d items of %d bytes or more in %d bytes", n, min, len(d.b))
	}
	if d.err != nil {
		return 0
	}
	return int(n)
}

func (d *decoder) ids() []uint64 {
	n := d.count(8)
	if n == 0 {
		return nil
	}
	ids := make([]uint64, n)
	for i := range ids {
		ids[i] = d.u64()
	}
	return ids
}

func (d *decoder) message() raft.Message {
	var m raft.Message
	m.Type = raft.MessageType(d.u8())
	flags := d.u8()
	m.Reject = flags&flagReject != 0
	m.From, m.To, m.Term, m.LogTerm = d.u64(), d.u64(), d.u64(), d.u64()
	m.Index, m.Commit, m.RejectHint, m.Context = d.u64(), d.u64(), d.u64(), d.u64()
	if n := d.count(entryHeaderSize); n > 0 {
		m.Entries = make([]raft.Entry, n)
		for i := range m.Entries {
			e := &m.Entries[i]
			e.Term, e.Index, e.Type = d.u64(), d.u64(), raft.EntryType(d.u8())
			size := int(d.u32())
			if !d.need(size) {
				break
			}
			if size > 0 {
				e.Data = append([]byte(nil), d.b[:size]...)
			}
			d.b = d.b[size:]
		}
	}
	if flags&flagSnapshot != 0 {
		s := &raft.SnapshotMeta{Index: d.u64(), Term: d.u64()}
		s.Voters = d.ids()
		s.Learners = d.ids()
		m.Snapshot = s
	}
	if flags&^(flagReject|flagSnapshot) != 0 && d.err == nil {
		d.err = fmt.Errorf("transport: unknown message flags %#x", flags)
	}
	return m
}

// decodeBatch decodes a whole batch; anything after it is an error.
func decodeBatch(b []byte) ([]raft.Message, error) {
	d := decoder{b: b}
	n := d.count(messageHeaderSize)
	msgs := make([]raft.Message, 0, n)
	for i := 0; i < n && d.err == nil; i++ {
		msgs = append(msgs, d.message())
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("transport: %d bytes after a batch of %d messages", len(d.b), n)
	}
	if d.err != nil {
		return nil, d.err
	}
	return msgs, nil
}
