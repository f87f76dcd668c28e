// Package wal is cairn's write-ahead log: the point of durability. A member
// acknowledges a write only once its entry is in a quorum's WALs, and on
// restart it rebuilds its raft log from its own WAL.
//
// # Files
//
// A WAL is a directory of segments named <seq>-<first index>.wal (both
// %016x): seq counts segments, first index is the raft index of the first
// entry the segment may hold. Segments are preallocated (fallocate) to a
// fixed size (default 64 MiB). A new segment is built under a temporary
// name (header written and synced), renamed into place, and the directory
// synced; the previous segment was synced before, so the existence of a
// segment proves every earlier one durable.
//
// # Format
//
// Little-endian throughout. A segment starts with a 32-byte header:
//
//	0  u32 magic "CWAL"   4  u32 version   8  u64 seq   16 u64 first index
//	24 u32 previous CRC (the chain's value at the end of the last segment)
//	28 u32 CRC-32C of bytes [0, 28)
//
// Then batches, at 8-byte aligned offsets. A batch is what one group commit
// writes with one write and one fdatasync:
//
//	0  u32 magic "BTCH"   4  u32 body length   8  u32 record count
//	12 u32 the chain's value before the batch     16 u32 zero
//	20 u32 CRC-32C of bytes [0, 20)
//	24 records (the body), each 8-byte aligned
//
// A record is framed as:
//
//	0  u32 payload length
//	4  u32 CRC-32C, seeded with the previous record's CRC, of bytes
//	       [8, 12+length): the chain catches a record reordered or lost
//	8  u8  type           9 three zero bytes      12 payload, zero padding
//
// Record types and payloads: entry (u64 term, u64 index, u8 entry type,
// data), hard state (u64 term, u64 vote, u64 commit), snapshot marker (u64
// term, u64 index, membership), metadata (bytes), installed-snapshot marker
// (as a snapshot marker; replay drops the entries written before it). Zeroed bytes where a batch
// header should be mean the end of the log (the preallocated rest).
//
// # Torn tail versus corruption
//
// A batch is written only after the previous one is durable, so at most the
// last batch of the log can be incomplete after a crash. Reading stops at
// the first batch that fails any check. If no valid batch follows it in the
// segment and it is the last segment, it is a torn tail: it is cut off (the
// rest of the segment zeroed) and the log goes on. Anything else (a bad
// batch followed by a valid one, or in a segment that is not the last, or
// a broken chain between segments) is corruption: Open refuses with a
// *CorruptError saying which file and offset.
//
// # Appends
//
// Append may be called from many goroutines. Records that arrive while a
// write and fdatasync are in flight are queued and go out together in the
// next batch (group commit); Append returns only once its records are
// durable. A failed write or sync is fatal: the WAL returns that error from
// every later call (an fsync is never retried).
//
// # Replay
//
// Open returns the state to restart from: the latest hard state and
// metadata, and the entries after a given snapshot marker, where an entry
// appended later replaces every entry at or above its index (raft log
// truncation is written as appends). Each new segment begins with the
// latest metadata, hard state and snapshot marker, so ReleaseTo can drop
// whole older segments without losing them, and Open reads from the segment
// that holds the entry after the snapshot, not the segments kept before it
// (it reads them all only if the marker is not in the segments from there).
// Verify reads every segment.
package wal
