package pagefile

import (
	"errors"
	"fmt"
)

// Errors returned by the API. Corruption is a class of its own: test for it
// with errors.Is(err, ErrCorrupt).
var (
	ErrCorrupt            = errors.New("pagefile: file is corrupt")
	ErrDatabaseNotOpen    = errors.New("pagefile: database not open")
	ErrDatabaseReadOnly   = errors.New("pagefile: database is in read-only mode")
	ErrLocked             = errors.New("pagefile: file is locked by another process")
	ErrVersionMismatch    = errors.New("pagefile: format version mismatch")
	ErrTxClosed           = errors.New("pagefile: tx closed")
	ErrTxNotWritable      = errors.New("pagefile: tx not writable")
	ErrBucketNotFound     = errors.New("pagefile: bucket not found")
	ErrBucketExists       = errors.New("pagefile: bucket already exists")
	ErrBucketNameRequired = errors.New("pagefile: bucket name required")
	ErrKeyRequired        = errors.New("pagefile: key required")
	ErrKeyTooLarge        = errors.New("pagefile: key too large")
	ErrValueTooLarge      = errors.New("pagefile: value too large")
	ErrManagedTx          = errors.New("pagefile: managed tx commit/rollback not allowed")
)

// CorruptError describes what is wrong and where. It matches ErrCorrupt.
type CorruptError struct {
	Page pgid   // the page at fault, or 0 when not about one page
	Msg  string // what is wrong
}

func (e *CorruptError) Error() string {
	if e.Page != 0 {
		return fmt.Sprintf("pagefile: file is corrupt: page %d: %s", e.Page, e.Msg)
	}
	return "pagefile: file is corrupt: " + e.Msg
}

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// FatalError wraps a failed write or sync. After one, the database refuses
// further write transactions: a failed fdatasync may have dropped data the
// kernel will not write again, so retrying proves nothing. Reopen the file to
// recover the last durable state.
type FatalError struct{ Err error }

func (e *FatalError) Error() string {
	return "pagefile: write failed, database needs reopening: " + e.Err.Error()
}
func (e *FatalError) Unwrap() error { return e.Err }

// corruptPanic carries a CorruptError from deep in a read path to the API
// method that recovers it into the transaction's error.
type corruptPanic struct{ err *CorruptError }

// catchCorrupt, deferred, turns a corruption panic into *err; any other
// panic goes on. Unlike Tx.recoverCorrupt it leaves the transaction's error
// alone.
func catchCorrupt(err *error) {
	if r := recover(); r != nil {
		cp, ok := r.(corruptPanic)
		if !ok {
			panic(r)
		}
		*err = cp.err
	}
}

func corruptf(id pgid, format string, args ...any) {
	panic(corruptPanic{&CorruptError{Page: id, Msg: fmt.Sprintf(format, args...)}})
}
