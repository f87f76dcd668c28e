package wal

import (
	"errors"
	"fmt"
	"hash/crc32"
)

// ErrCorrupt is the class of every corruption error: test with errors.Is.
var ErrCorrupt = errors.New("wal: corrupt")

// CorruptError says which file and where the WAL is damaged.
type CorruptError struct {
	File   string
	Offset int64
	Msg    string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("wal: corrupt: %s at offset %d: %s", e.File, e.Offset, e.Msg)
}

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// segmentHeader is a segment's decoded header.
type segmentHeader struct {
	seq, first uint64
	prevCRC    uint32
}

func encodeSegmentHeader(h segmentHeader) []byte {
	b := make([]byte, segmentHeaderSize)
	le.PutUint32(b[0:], segmentMagic)
	le.PutUint32(b[4:], formatVersion)
	le.PutUint64(b[8:], h.seq)
	le.PutUint64(b[16:], h.first)
	le.PutUint32(b[24:], h.prevCRC)
	le.PutUint32(b[28:], crc32.Checksum(b[:28], castagnoli))
	return b
}

func decodeSegmentHeader(b []byte) (segmentHeader, string) {
	if len(b) < segmentHeaderSize {
		return segmentHeader{}, "segment shorter than its header"
	}
	if le.Uint32(b[0:]) != segmentMagic {
		return segmentHeader{}, "bad segment magic"
	}
	if le.Uint32(b[28:]) != crc32.Checksum(b[:28], castagnoli) {
		return segmentHeader{}, "segment header checksum mismatch"
	}
	if v := le.Uint32(b[4:]); v != formatVersion {
		return segmentHeader{}, fmt.Sprintf("segment format version %d, this build reads %d", v, formatVersion)
	}
	return segmentHeader{seq: le.Uint64(b[8:]), first: le.Uint64(b[16:]), prevCRC: le.Uint32(b[24:])}, ""
}

// segmentEnd says how a segment's data ends.
type segmentEnd int

const (
	endClean segmentEnd = iota // zeros (or the end of the file) after the last batch
	endTorn                    // an incomplete last batch: cut it off
)

// scanSegment reads the batches of one segment (the whole file in data),
// chaining CRCs from *chain, and calls visit for the records of each batch
// that passes every check. It returns the offset just past the last good
// batch and how the segment ends. A bad batch followed by a valid one is
// corruption, and so is a torn batch in a segment that is not the last
// (last says whether it is).
func scanSegment(data []byte, name string, chain *uint32, last bool, visit func(Record) error) (int64, segmentEnd, error) {
	off := segmentHeaderSize
	for {
		n, crc, reason := checkBatch(data, off, *chain)
		if reason != "" {
			end, err := classifyEnd(data, off, name, last, reason)
			return int64(off), end, err
		}
		if visit != nil {
			if err := visitBatch(data[off:off+n], visit); err != nil {
				return int64(off), 0, err
			}
		}
		*chain = crc
		off += n
	}
}

// checkBatch validates the batch at off: its header, and every record's
// framing and chained CRC. It returns the batch's size and the chain's value
// after it, or a reason it is not a good batch ("" when it is).
func checkBatch(data []byte, off int, chain uint32) (int, uint32, string) {
	if off+batchHeaderSize > len(data) {
		return 0, 0, "end of file"
	}
	h := data[off : off+batchHeaderSize]
	if le.Uint32(h[0:]) != batchMagic {
		return 0, 0, "no batch header"
	}
	if le.Uint32(h[20:]) != crc32.Checksum(h[:20], castagnoli) || le.Uint32(h[16:]) != 0 {
		return 0, 0, "batch header checksum mismatch"
	}
	if le.Uint32(h[12:]) != chain {
		return 0, 0, "batch does not continue the checksum chain (a batch is missing or out of order)"
	}
	body, count := int(le.Uint32(h[4:])), int(le.Uint32(h[8:]))
	if body > len(data)-off-batchHeaderSize || body%8 != 0 || count == 0 || count > body/recordHeaderSize {
		return 0, 0, "batch header out of bounds"
	}
	b := data[off+batchHeaderSize : off+batchHeaderSize+body]
	pos := 0
	for i := 0; i < count; i++ {
		if pos+recordHeaderSize > len(b) {
			return 0, 0, fmt.Sprintf("record %d past the batch", i)
		}
		r := b[pos:]
		n := int(le.Uint32(r[0:]))
		if n > maxRecordSize || recordHeaderSize+n > len(r) {
			return 0, 0, fmt.Sprintf("record %d length %d out of bounds", i, n)
		}
		if t := RecordType(r[8]); t < TypeEntry || t > TypeInstalled || r[9]|r[10]|r[11] != 0 {
			return 0, 0, fmt.Sprintf("record %d has a bad type", i)
		}
		chain = crc32.Update(chain, castagnoli, r[8:recordHeaderSize+n])
		if le.Uint32(r[4:]) != chain {
			return 0, 0, fmt.Sprintf("record %d checksum mismatch", i)
		}
		pos += align8(recordHeaderSize + n)
	}
	if pos != len(b) {
		return 0, 0, "batch length does not match its records"
	}
	return batchHeaderSize + body, chain, ""
}

// visitBatch calls visit for each record of a batch checkBatch accepted.
func visitBatch(b []byte, visit func(Record) error) error {
	count := int(le.Uint32(b[8:]))
	pos := batchHeaderSize
	for i := 0; i < count; i++ {
		r := b[pos:]
		n := int(le.Uint32(r[0:]))
		rec := Record{Type: RecordType(r[8]), payload: r[recordHeaderSize : recordHeaderSize+n : recordHeaderSize+n]}
		if err := visit(rec); err != nil {
			return err
		}
		pos += align8(recordHeaderSize + n)
	}
	return nil
}

// classifyEnd decides what the first bad batch at off means: a clean end
// (nothing but zeros from there), a torn tail (garbage but no valid batch
// after it, in the last segment), or corruption.
func classifyEnd(data []byte, off int, name string, last bool, reason string) (segmentEnd, error) {
	if off >= len(data) {
		return endClean, nil
	}
	rest := data[off:]
	// A valid batch anywhere after a bad one means the bad one was durable
	// once: batches are written only after the previous one is synced. A
	// candidate must check out entirely, from the chain value its header
	// says it starts at.
	for o := off + 8; o+batchHeaderSize <= len(data); o += 8 {
		if le.Uint32(data[o:]) != batchMagic {
			continue
		}
		if _, _, why := checkBatch(data, o, le.Uint32(data[o+12:])); why == "" {
			return 0, &CorruptError{File: name, Offset: int64(off), Msg: reason + ", and a valid batch follows at offset " + fmt.Sprint(o)}
		}
	}
	if allZero(rest) {
		return endClean, nil
	}
	if !last {
		return 0, &CorruptError{File: name, Offset: int64(off), Msg: reason + " in a segment that is not the last"}
	}
	return endTorn, nil
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if le.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
