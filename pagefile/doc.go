// Package pagefile is cairn's page file: a copy-on-write B+tree in one file,
// read through a shared read-only mmap and written with pwrite + fdatasync.
// It holds the MVCC data, leases, users and members, in the place bbolt holds
// in etcd, and has bbolt's shape: DB, Tx, Bucket, Cursor.
//
// # Model
//
// One write transaction at a time; any number of read transactions, each of
// which sees one committed state for its whole life. A write never changes a
// page in place: the nodes it touches are materialized in memory and, at
// commit, written to newly allocated pages, bottom-up to the root. A meta
// page then names the new root. Two meta pages alternate (slot txid % 2), so
// the previous commit's meta is always intact on disk.
//
// A page freed by transaction T (it was part of T-1's tree) is reused only
// once no reader sees a snapshot older than T+1 and T is no longer the
// newest commit: both metas on disk always point at whole trees.
//
// Growing the file never waits for readers: transactions hold a reference to
// the map they began with; when the file outgrows it, new transactions get a
// larger map and the old one is unmapped when its last reader ends.
//
// # Format
//
// Everything is little-endian at fixed offsets (docs/pagefile.md draws it).
// Every page run begins with a 32-byte header:
//
//	0   u32 checksum   CRC-32C of bytes [4, run length)
//	4   u16 type       1 meta, 2 branch, 3 leaf, 4 freelist
//	6   u16 count      elements
//	8   u64 pgid       the page's own id
//	16  u64 txid       the transaction that wrote it
//	24  u32 overflow   pages in the run after this one
//	28  u32 reserved
//
// Pages 0 and 1 are metas (checksum over bytes [4, 80)): magic, version, page
// size, bucket directory root, freelist page, high-water mark, txid. Leaf
// elements are (u32 pos, u32 key size, u32 value size), branch elements
// (u32 pos, u32 key size, u64 child); keys and values follow the element
// array. The bucket directory is itself a B+tree: bucket name -> 16-byte
// header holding the bucket's root page.
//
// # Durability and errors
//
// Commit writes the dirty pages in page order (adjacent pages in one
// pwritev), fdatasyncs, writes the meta, fdatasyncs. A crash at any point
// leaves the previous commit or the new one. A failed write or sync is fatal
// to the handle (FatalError): later writes fail until the file is reopened.
// Corruption is its own error class (ErrCorrupt): Open validates the metas
// and the freelist, read paths check every offset they follow and turn what
// they find into the transaction's error, and Check verifies everything.
//
// # Failpoints
//
// pagefile/grow, pagefile/beforeDataSync, pagefile/beforeMetaWrite,
// pagefile/beforeMetaSync, pagefile/afterCommit (see internal/failpoint).
package pagefile
