package pagefile

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
)

// The on-disk format. Everything is little-endian at fixed offsets; see the
// package documentation and docs/pagefile-format.md for diagrams. These
// constants are wire format: never renumber them.

type pgid uint64
type txid uint64

const (
	// formatVersion is written; files from oldestFormatVersion on open.
	// Version 2: a bucket header's root 0 is an empty bucket, which keeps
	// no page (version 1 gave every bucket a page, so its files read the
	// same).
	formatVersion       = 2
	oldestFormatVersion = 1
	magic               = 0x4e524143 // "CARN" read as little-endian bytes

	pageHeaderSize = 32

	// Header field offsets.
	hdrChecksum = 0  // u32 CRC-32C of bytes [4, run length)
	hdrType     = 4  // u16 page type
	hdrCount    = 6  // u16 elements in the page
	hdrPgid     = 8  // u64 the page's own id
	hdrTxid     = 16 // u64 the transaction that wrote it
	hdrOverflow = 24 // u32 pages in the run after this one
	// [28, 32) reserved, zero

	// Meta body offsets (page 0 and page 1).
	metaMagic     = 32 // u32
	metaVersion   = 36 // u32
	metaPageSize  = 40 // u32
	metaFlags     = 44 // u32, zero
	metaRoot      = 48 // u64 root page of the bucket directory
	metaFreelist  = 56 // u64 first page of the freelist run
	metaHighWater = 64 // u64 pages in use: every page id is below it
	metaTxid      = 72 // u64 the transaction this meta commits
	metaSize      = 80 // the meta checksum covers [4, metaSize)

	leafElemSize   = 12 // u32 pos, u32 key size, u32 value size
	branchElemSize = 16 // u32 pos, u32 key size, u64 child page

	bucketHeaderSize = 16 // u64 root page, u64 reserved

	// Freelist body: u64 free extents, u64 pending extents, then extents
	// of (u64 start, u64 length): the free ones, then those freed by the
	// meta's own transaction, which stay unused one transaction longer.
	freelistCounts = 16
	extentSize     = 16
)

// Page types.
const (
	typeMeta     = 1
	typeBranch   = 2
	typeLeaf     = 3
	typeFreelist = 4
)

// Limits.
const (
	MaxKeySize   = 32768
	MaxValueSize = 1<<31 - 2
	minPageSize  = 1024
	maxPageSize  = 65536
	maxDepth     = 64 // a deeper tree can only come from a cycle in a corrupt file
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var le = binary.LittleEndian

// meta is the decoded body of a meta page.
type meta struct {
	pageSize  uint32
	root      pgid
	freelist  pgid
	highWater pgid
	txid      txid
}

// encodeMeta writes m as a meta page for slot into buf (at least metaSize).
func encodeMeta(buf []byte, m *meta, slot pgid) {
	clear(buf[:metaSize])
	le.PutUint16(buf[hdrType:], typeMeta)
	le.PutUint64(buf[hdrPgid:], uint64(slot))
	le.PutUint64(buf[hdrTxid:], uint64(m.txid))
	le.PutUint32(buf[metaMagic:], magic)
	le.PutUint32(buf[metaVersion:], formatVersion)
	le.PutUint32(buf[metaPageSize:], m.pageSize)
	le.PutUint64(buf[metaRoot:], uint64(m.root))
	le.PutUint64(buf[metaFreelist:], uint64(m.freelist))
	le.PutUint64(buf[metaHighWater:], uint64(m.highWater))
	le.PutUint64(buf[metaTxid:], uint64(m.txid))
	le.PutUint32(buf[hdrChecksum:], crc32.Checksum(buf[4:metaSize], castagnoli))
}

// decodeMeta reads the meta page for slot from buf and validates everything
// that can be checked without the rest of the file.
func decodeMeta(buf []byte, slot pgid) (*meta, error) {
	if len(buf) < metaSize {
		return nil, &CorruptError{Page: slot, Msg: "meta page is short"}
	}
	if got, want := le.Uint32(buf[hdrChecksum:]), crc32.Checksum(buf[4:metaSize], castagnoli); got != want {
		return nil, &CorruptError{Page: slot, Msg: "meta checksum mismatch"}
	}
	if le.Uint32(buf[metaMagic:]) != magic {
		return nil, &CorruptError{Page: slot, Msg: "not a cairn page file (bad magic)"}
	}
	if v := le.Uint32(buf[metaVersion:]); v < oldestFormatVersion || v > formatVersion {
		return nil, ErrVersionMismatch
	}
	if le.Uint16(buf[hdrType:]) != typeMeta || pgid(le.Uint64(buf[hdrPgid:])) != slot {
		return nil, &CorruptError{Page: slot, Msg: "meta page header does not name its slot"}
	}
	m := &meta{
		pageSize:  le.Uint32(buf[metaPageSize:]),
		root:      pgid(le.Uint64(buf[metaRoot:])),
		freelist:  pgid(le.Uint64(buf[metaFreelist:])),
		highWater: pgid(le.Uint64(buf[metaHighWater:])),
		txid:      txid(le.Uint64(buf[metaTxid:])),
	}
	if !validPageSize(int(m.pageSize)) {
		return nil, &CorruptError{Page: slot, Msg: "meta has an invalid page size"}
	}
	if m.highWater < 4 || m.root < 2 || m.root >= m.highWater || m.freelist < 2 || m.freelist >= m.highWater {
		return nil, &CorruptError{Page: slot, Msg: "meta points outside the file"}
	}
	if uint64(m.txid)%2 != uint64(slot) {
		return nil, &CorruptError{Page: slot, Msg: "meta transaction id does not belong in this slot"}
	}
	return m, nil
}

func validPageSize(n int) bool {
	return n >= minPageSize && n <= maxPageSize && n&(n-1) == 0
}

// header accessors on a page buffer.

func pageType(p []byte) uint16     { return le.Uint16(p[hdrType:]) }
func pageCount(p []byte) int       { return int(le.Uint16(p[hdrCount:])) }
func pageID(p []byte) pgid         { return pgid(le.Uint64(p[hdrPgid:])) }
func pageOverflow(p []byte) uint32 { return le.Uint32(p[hdrOverflow:]) }

// sealPage fills in a page run's header and checksum.
func sealPage(p []byte, typ uint16, count int, id pgid, tx txid, overflow int) {
	le.PutUint16(p[hdrType:], typ)
	le.PutUint16(p[hdrCount:], uint16(count))
	le.PutUint64(p[hdrPgid:], uint64(id))
	le.PutUint64(p[hdrTxid:], uint64(tx))
	le.PutUint32(p[hdrOverflow:], uint32(overflow))
	le.PutUint32(p[28:], 0)
	le.PutUint32(p[hdrChecksum:], crc32.Checksum(p[4:], castagnoli))
}

// pageChecksumOK verifies a whole run.
func pageChecksumOK(p []byte) bool {
	return le.Uint32(p[hdrChecksum:]) == crc32.Checksum(p[4:], castagnoli)
}

// leafElem returns element i of a leaf page, bounds-checked so a corrupt page
// reports an error instead of crashing the process.
func leafElem(p []byte, id pgid, i int) (key, value []byte) {
	off := pageHeaderSize + i*leafElemSize
	if off+leafElemSize > len(p) {
		corruptf(id, "leaf element %d past page end", i)
	}
	pos := uint64(le.Uint32(p[off:]))
	ks := uint64(le.Uint32(p[off+4:]))
	vs := uint64(le.Uint32(p[off+8:]))
	if pos+ks+vs > uint64(len(p)) || pos < pageHeaderSize {
		corruptf(id, "leaf element %d out of bounds", i)
	}
	return p[pos : pos+ks : pos+ks], p[pos+ks : pos+ks+vs : pos+ks+vs]
}

// branchElem returns element i of a branch page.
func branchElem(p []byte, id pgid, i int) (key []byte, child pgid) {
	off := pageHeaderSize + i*branchElemSize
	if off+branchElemSize > len(p) {
		corruptf(id, "branch element %d past page end", i)
	}
	pos := uint64(le.Uint32(p[off:]))
	ks := uint64(le.Uint32(p[off+4:]))
	if pos+ks > uint64(len(p)) || pos < pageHeaderSize {
		corruptf(id, "branch element %d out of bounds", i)
	}
	return p[pos : pos+ks : pos+ks], pgid(le.Uint64(p[off+8:]))
}

// branchKey is branchElem without the child, for binary search.
func branchKey(p []byte, id pgid, i int) []byte {
	k, _ := branchElem(p, id, i)
	return k
}

func leafKey(p []byte, id pgid, i int) []byte {
	k, _ := leafElem(p, id, i)
	return k
}

// leafElemFast is leafElem for Cursor.Next's fast path, which runs without
// a deferred recover: it makes the same checks but reports a failed one as
// !ok instead of panicking.
func leafElemFast(p []byte, i int) (key, value []byte, ok bool) {
	off := pageHeaderSize + i*leafElemSize
	if off+leafElemSize > len(p) {
		return nil, nil, false
	}
	e := p[off : off+leafElemSize]
	pos := uint64(le.Uint32(e))
	ks := uint64(le.Uint32(e[4:]))
	vs := uint64(le.Uint32(e[8:]))
	if pos+ks+vs > uint64(len(p)) || pos < pageHeaderSize {
		return nil, nil, false
	}
	return p[pos : pos+ks : pos+ks], p[pos+ks : pos+ks+vs : pos+ks+vs], true
}

// searchLeaf returns the index of the first of a leaf page's n keys that is
// >= key.
func searchLeaf(p []byte, id pgid, n int, key []byte) int {
	return searchPage(p, id, n, leafElemSize, "leaf", key, false)
}

// searchBranch returns the index of the last of a branch page's n keys that
// is <= key, or 0 if every key is greater.
func searchBranch(p []byte, id pgid, n int, key []byte) int {
	return max(searchPage(p, id, n, branchElemSize, "branch", key, true)-1, 0)
}

// searchPage returns how many of a page's n elements (elemSize bytes each,
// starting with the key's u32 offset and u32 size) have a key below key,
// or at or below it if orEqual.
func searchPage(p []byte, id pgid, n, elemSize int, kind string, key []byte, orEqual bool) int {
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		off := pageHeaderSize + m*elemSize
		if off+elemSize > len(p) {
			corruptf(id, "%s element %d past page end", kind, m)
		}
		pos := uint64(le.Uint32(p[off:]))
		ks := uint64(le.Uint32(p[off+4:]))
		if pos+ks > uint64(len(p)) {
			corruptf(id, "%s element %d out of bounds", kind, m)
		}
		if c := bytes.Compare(p[pos:pos+ks], key); c < 0 || (orEqual && c == 0) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
