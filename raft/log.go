package raft

import "fmt"

// raftLog is a node's log in memory: the entries after the last snapshot.
// Entries live in chunks of a fixed size, so the log grows without ever
// copying what it holds.
type raftLog struct {
	// Position p holds index offset+p; position 0 is a sentinel standing for
	// the snapshot's last entry (index offset, its term). n counts positions.
	chunks [][]Entry
	n      uint64
	offset uint64
	// Invariant: applied <= committed <= lastIndex, applied <= stabled <= lastIndex.
	committed uint64
	applied   uint64
	stabled   uint64 // entries up to here are durable (the driver said so)
	// truncatedFrom is set by maybeAppend to the first index it replaced
	// (0: it only appended).
	truncatedFrom uint64
}

const (
	chunkShift = 10
	chunkSize  = 1 << chunkShift
	chunkMask  = chunkSize - 1
)

// newLog rebuilds the log from a snapshot (zero: none) and the entries
// persisted after it.
func newLog(snapIndex, snapTerm uint64, persisted []Entry, commit, applied uint64) *raftLog {
	l := &raftLog{offset: snapIndex}
	l.push(Entry{Index: snapIndex, Term: snapTerm})
	for i, e := range persisted {
		if e.Index != snapIndex+uint64(i+1) {
			panic(fmt.Sprintf("raft: persisted entry %d has index %d", snapIndex+uint64(i+1), e.Index))
		}
		l.push(e)
	}
	commit = max(commit, snapIndex)
	applied = max(applied, snapIndex)
	l.stabled = l.lastIndex()
	if commit > l.lastIndex() {
		panic(fmt.Sprintf("raft: commit %d is past the persisted log's last index %d", commit, l.lastIndex()))
	}
	if applied > commit {
		panic(fmt.Sprintf("raft: applied %d is past commit %d", applied, commit))
	}
	l.committed, l.applied = commit, applied
	return l
}

// at returns the entry at index i (offset <= i <= lastIndex).
func (l *raftLog) at(i uint64) *Entry {
	p := i - l.offset
	return &l.chunks[p>>chunkShift][p&chunkMask]
}

func (l *raftLog) push(e Entry) {
	c := l.n >> chunkShift
	if c == uint64(len(l.chunks)) {
		l.chunks = append(l.chunks, make([]Entry, 0, chunkSize))
	}
	l.chunks[c] = append(l.chunks[c], e)
	l.n++
}

// truncate keeps the entries below index i.
func (l *raftLog) truncate(i uint64) {
	l.truncatePos(i - l.offset)
}

func (l *raftLog) truncatePos(n uint64) {
	for l.n > n {
		c := (l.n - 1) >> chunkShift
		ch := l.chunks[c]
		keep := max(int(n)-int(c<<chunkShift), 0)
		clear(ch[keep:]) // drop references to the data
		l.chunks[c] = ch[:keep]
		l.n = c<<chunkShift + uint64(keep)
		if keep == 0 && c > 0 {
			l.chunks = l.chunks[:c]
		}
	}
}

func (l *raftLog) lastIndex() uint64 { return l.offset + l.n - 1 }
func (l *raftLog) lastTerm() uint64  { return l.at(l.lastIndex()).Term }

// term returns the term of the entry at i, if the log has it (a compacted
// entry's term is not known, but the snapshot's last one's is).
func (l *raftLog) term(i uint64) (uint64, bool) {
	if i < l.offset || i > l.lastIndex() {
		return 0, false
	}
	return l.at(i).Term, true
}

// compact drops the entries up to index i (which must be applied).
func (l *raftLog) compact(i uint64) {
	if i <= l.offset {
		return
	}
	if i > l.applied {
		panic(fmt.Sprintf("raft: compacting to %d past applied %d", i, l.applied))
	}
	rest := l.slice(i+1, l.lastIndex()+1)
	term := l.at(i).Term
	l.chunks, l.n, l.offset = nil, 0, i
	l.push(Entry{Index: i, Term: term})
	for _, e := range rest {
		l.push(e)
	}
}

// restore replaces the whole log with a snapshot's position.
func (l *raftLog) restore(index, term uint64) {
	l.chunks, l.n, l.offset = nil, 0, index
	l.push(Entry{Index: index, Term: term})
	l.committed, l.stabled = index, index
	// applied moves when the driver says it installed the snapshot.
}

func (l *raftLog) matchTerm(i, term uint64) bool {
	t, ok := l.term(i)
	return ok && t == term
}

// isUpToDate reports whether a log ending at (index, term) is at least as
// up to date as this one (Raft §5.4.1).
func (l *raftLog) isUpToDate(index, term uint64) bool {
	return term > l.lastTerm() || (term == l.lastTerm() && index >= l.lastIndex())
}

// maybeAppend appends a leader's entries after (prevIndex, prevTerm) if the
// log has that entry, replacing what conflicts. It returns the index of the
// last entry the message covers.
func (l *raftLog) maybeAppend(prevIndex, prevTerm, committed uint64, ents []Entry) (uint64, bool) {
	if !l.matchTerm(prevIndex, prevTerm) {
		return 0, false
	}
	lastNew := prevIndex + uint64(len(ents))
	l.truncatedFrom = 0
	for i, e := range ents {
		if l.matchTerm(e.Index, e.Term) {
			continue
		}
		if e.Index <= l.offset {
			continue // inside the snapshot, hence committed and matching
		}
		// The first entry that is new or conflicts: everything from here
		// on comes from the leader.
		if e.Index <= l.committed {
			panic(fmt.Sprintf("raft: entry %d conflicts with committed entry (commit %d)", e.Index, l.committed))
		}
		if e.Index <= l.lastIndex() {
			l.truncatedFrom = e.Index
		}
		l.truncateAndAppend(ents[i:])
		break
	}
	l.commitTo(min(committed, lastNew))
	return lastNew, true
}

// truncateAndAppend replaces everything from ents[0].Index on.
func (l *raftLog) truncateAndAppend(ents []Entry) {
	first := ents[0].Index
	if first > l.lastIndex()+1 || first <= l.offset {
		panic(fmt.Sprintf("raft: appending entry %d to a log of (%d, %d]", first, l.offset, l.lastIndex()))
	}
	l.truncate(first)
	for _, e := range ents {
		l.push(e)
	}
	if l.stabled >= first {
		l.stabled = first - 1
	}
}

func (l *raftLog) commitTo(c uint64) {
	if c <= l.committed {
		return
	}
	if c > l.lastIndex() {
		panic(fmt.Sprintf("raft: commit %d is past last index %d", c, l.lastIndex()))
	}
	l.committed = c
}

// slice returns a copy of the entries [lo, hi).
func (l *raftLog) slice(lo, hi uint64) []Entry {
	if lo >= hi {
		return nil
	}
	out := make([]Entry, 0, hi-lo)
	p, q := lo-l.offset, hi-l.offset
	for p < q {
		c := l.chunks[p>>chunkShift]
		end := min(q-p+(p&chunkMask), uint64(len(c)))
		out = append(out, c[p&chunkMask:end]...)
		p += end - (p & chunkMask)
	}
	return out
}

// unstable returns the entries not yet durable.
func (l *raftLog) unstable() []Entry { return l.slice(l.stabled+1, l.lastIndex()+1) }

// toApply returns committed entries that are durable here and not applied
// (none while a snapshot is waiting to be installed).
func (l *raftLog) toApply() []Entry {
	if l.applied < l.offset {
		return nil
	}
	return l.slice(l.applied+1, min(l.committed, l.stabled)+1)
}
