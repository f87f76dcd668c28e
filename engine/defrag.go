package engine

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cairn-kv/cairn/internal/failpoint"
	"github.com/cairn-kv/cairn/pagefile"
)

// Defragmentation runs while the store goes on serving reads and writes:
//
//  1. On the writer: commit the batch, start recording what later commits
//     change (pagefile.Tx.TrackChanges), and take a read transaction.
//  2. Anywhere: write a compacted copy of that read transaction's state
//     beside the file (<file>.defrag), and open it.
//  3. Rounds: on the writer, commit and take the changes recorded since
//     the last round with a read transaction that sees them; anywhere,
//     carry them into the copy (each changed key's value now, or its
//     absence). A round ends when few changes were left, or after
//     defragRounds.
//  4. On the writer, writes held: commit, carry the last changes, close
//     the copy, rename it over the file, sync the directory, open it and
//     make it the store's. The old file closes once its last reader ends.
//
// Only step 4 holds writes, for one short round's changes and a rename.
// A crash before the rename leaves the old file, whole, and a copy that
// the next defragmentation (or the member's start) removes; after it, the
// copy holds everything the old file did.
//
// Failpoints: engine/defragCopied (the copy written and open, off the
// writer), engine/defragBeforeSwitch (writes held, the copy complete,
// not yet renamed), engine/defragAfterSwitch (renamed, not yet opened).

const (
	// defragRounds bounds the rounds of step 3 whatever the write rate.
	defragRounds = 16
	// defragFinalChanges: a round that carried no more changes than this
	// is followed by the final one.
	defragFinalChanges = 256
)

// defragDuty: the copy, and the rounds that carry changes into it, work a
// quarter of their time and rest the rest (pagefile.CompactOptions),
// leaving the store's commits most of a core and of the disk; the
// defragmentation takes about three times as long as flat out.
const defragDuty = 0.25

// defragCarryBytes bounds each transaction that carries changes into the
// copy (pagefile.ChangeSet.Split): a round after a long copy carries
// everything written meanwhile, and one commit of all of it would write
// it at once, the live file's commits waiting behind its sync.
const defragCarryBytes = 4 << 20

// The old file is emptied discardStep bytes at a time, discardPause apart
// (pagefile.DB.Discard).
const (
	discardStep  = 16 << 20
	discardPause = 10 * time.Millisecond
)

// ErrDefragSuperseded: the store's file was replaced (a snapshot
// installed) while a defragmentation ran; the copy is dropped.
var ErrDefragSuperseded = errors.New("engine: defragmentation superseded: the page file was replaced")

// ErrStoreUnusable is wrapped by the errors of a defragmentation that
// failed once the copy had taken the file's place: the store cannot go on.
var ErrStoreUnusable = errors.New("the store is closed")

// DefragSuffix names a defragmentation's copy beside the page file.
const DefragSuffix = ".defrag"

// Defragment rewrites the page file without free pages while the store
// goes on serving (above). onWriter runs a function on the store's writer
// and returns its error (a caller with no other writer may call it
// directly); Defragment runs its copying on the calling goroutine, which
// must not be the writer. open opens a page file at a path. A failure
// before the switch leaves the store on its old file and usable; one
// after it leaves the store unusable (the error says so).
func (s *Store) Defragment(onWriter func(func() error) error, open func(path string) (*pagefile.DB, error)) (DefragStats, error) {
	d := &defrag{s: s, open: open}
	// A step on the writer runs under d.mu and not at all once aborted:
	// onWriter may give up waiting (the member stopping) while the step
	// runs or before it does, and abort must then wait for it to end, and
	// end what it began.
	step := func(f func() error) error {
		return onWriter(func() error {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.aborted {
				return errDefragAborted
			}
			return f()
		})
	}
	err := step(d.begin)
	if err == nil {
		err = d.copy()
	}
	for round := 0; err == nil && round < defragRounds; round++ {
		var set pagefile.ChangeSet
		if err = step(func() (err error) { set, err = d.take(); return err }); err != nil {
			break
		}
		d.stats.Rounds++
		d.stats.Carried += set.Len()
		err = d.carry(set, true)
		if set.Len() <= defragFinalChanges {
			break
		}
	}
	if err == nil {
		err = step(d.finish)
	}
	if err != nil {
		d.abort()
	}
	return d.stats, err
}

// DefragStats describes a defragmentation.
type DefragStats struct {
	Rounds  int           // rounds of carrying changes while writes went on
	Carried int           // changes carried in them
	Final   int           // changes carried with writes held
	Held    time.Duration // how long the final step held writes
}

// errDefragAborted: a step came to the writer after the defragmentation
// gave up.
var errDefragAborted = errors.New("engine: defragmentation aborted")

// defrag is one defragmentation's state.
type defrag struct {
	s    *Store
	open func(path string) (*pagefile.DB, error)

	mu       sync.Mutex // held by each step on the writer, and by abort
	aborted  bool
	src      *pagefile.DB // the file being defragmented
	tmp      string       // the copy's path
	changes  *pagefile.Changes
	snap     *pagefile.Tx // step 1's read transaction, until copied
	round    *pagefile.Tx // a round's read transaction, until carried
	dst      *pagefile.DB // the copy, once written
	switched bool         // the copy took the file's place (or the store failed trying)
	stats    DefragStats
}

// begin is step 1 (writer).
func (d *defrag) begin() error {
	s := d.s
	if err := s.Commit(); err != nil {
		return err
	}
	d.src = s.db
	d.tmp = s.db.Path() + DefragSuffix
	if err := s.db.FS().Remove(d.tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var err error
	if d.changes, err = s.batch.TrackChanges(); err != nil {
		return err
	}
	// The batch is empty: the committed state is all there is.
	d.snap, err = s.db.Begin(false)
	return err
}

// copy is step 2.
func (d *defrag) copy() error {
	err := d.snap.CompactTo(d.tmp, &pagefile.CompactOptions{Duty: defragDuty})
	_ = d.snap.Rollback()
	d.snap = nil
	if err != nil {
		return fmt.Errorf("copying the page file: %w", err)
	}
	if d.dst, err = d.open(d.tmp); err != nil {
		return err
	}
	return failpoint.Hit("engine/defragCopied")
}

// take starts a round of step 3 (writer): the changes committed since the
// last, and a read transaction that sees them (d.round).
func (d *defrag) take() (pagefile.ChangeSet, error) {
	s := d.s
	if s.db != d.src {
		return nil, ErrDefragSuperseded
	}
	if err := s.Commit(); err != nil {
		return nil, err
	}
	set := d.changes.Take()
	var err error
	d.round, err = s.db.Begin(false)
	return set, err
}

// carry makes the copy hold what the round's read transaction holds for
// every change of set, and ends that transaction. It commits at most
// defragCarryBytes at a time; paced, it rests between commits as the copy
// does (defragDuty).
func (d *defrag) carry(set pagefile.ChangeSet, paced bool) error {
	src := d.round
	d.round = nil
	defer src.Rollback()
	for _, part := range set.Split(src, defragCarryBytes) {
		start := time.Now()
		if err := d.dst.Update(func(tx *pagefile.Tx) error { return part.Apply(src, tx) }); err != nil {
			return err
		}
		if paced {
			pagefile.Rest(start, defragDuty)
		}
	}
	return nil
}

// finish is step 4 (writer).
func (d *defrag) finish() error {
	start := time.Now()
	defer func() { d.stats.Held = time.Since(start) }()
	s := d.s
	if s.db != d.src {
		return ErrDefragSuperseded
	}
	if err := s.commit(); err != nil {
		return err // the store cannot write again (commit says why)
	}
	resume := func(err error) error {
		var berr error
		s.batch, berr = s.db.Begin(true)
		return errors.Join(err, berr)
	}
	set := d.changes.Take()
	d.changes.Stop()
	d.stats.Final = set.Len()
	var err error
	if d.round, err = s.db.Begin(false); err != nil {
		return resume(err)
	}
	if err := d.carry(set, false); err != nil {
		return resume(err)
	}
	if err := failpoint.Hit("engine/defragBeforeSwitch"); err != nil {
		return resume(err)
	}
	dst := d.dst
	d.dst = nil
	if err := dst.Close(); err != nil {
		return resume(err)
	}
	path, fs := s.db.Path(), s.db.FS()
	if err := fs.Rename(d.tmp, path); err != nil {
		return resume(err)
	}
	d.switched = true
	fail := func(err error) error {
		return fmt.Errorf("engine: defragmenting (%w): %w", ErrStoreUnusable, err)
	}
	if err := fs.SyncDir(filepath.Dir(path)); err != nil {
		return fail(err)
	}
	if err := failpoint.Hit("engine/defragAfterSwitch"); err != nil {
		return fail(err)
	}
	db, err := d.open(path)
	if err != nil {
		return fail(err)
	}
	batch, err := db.Begin(true)
	if err != nil {
		db.Close()
		return fail(err)
	}
	s.mu.Lock()
	old := s.db
	s.db, s.batch = db, batch
	s.mu.Unlock()
	// Readers of the old file go on with it (renamed over, it stays open);
	// it is emptied in steps and closed once the last of them ends.
	go old.Discard(discardStep, discardPause)
	return nil
}

// abort drops the copy after a failure before the switch, once no step
// runs on the writer.
func (d *defrag) abort() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.aborted = true
	if d.switched {
		return
	}
	if d.round != nil {
		_ = d.round.Rollback()
	}
	if d.changes != nil {
		d.changes.Stop()
	}
	if d.snap != nil {
		_ = d.snap.Rollback()
	}
	if d.dst != nil {
		_ = d.dst.Close()
	}
	if d.tmp != "" {
		_ = d.src.FS().Remove(d.tmp)
	}
}
