package engine

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-kv/cairn/btreeindex"
	"github.com/cairn-kv/cairn/pagefile"
)

// Watch errors, with etcd's messages.
var (
	ErrEmptyWatcherRange  = errors.New("mvcc: watcher range is empty")
	ErrWatcherDuplicateID = errors.New("mvcc: duplicate watch ID provided on the WatchStream")
	ErrWatcherNotExist    = errors.New("mvcc: watcher does not exist")
)

// Watch limits, etcd's.
const (
	// WatchStreamBuffer is how many responses a stream holds for its
	// reader before its watchers are set aside as slow.
	WatchStreamBuffer = 128
	// watchBatchRevs is the most revisions one catch-up response carries.
	watchBatchRevs = 1000
	// watchersPerSync is the most slow watchers one catch-up pass serves.
	watchersPerSync = 512
	// watchSyncInterval is how often slow watchers are retried when nothing
	// else wakes the catch-up loop.
	watchSyncInterval = 100 * time.Millisecond
)

// EventType is what an event did to its key.
type EventType uint8

const (
	EventPut EventType = iota
	EventDelete
)

// Event is one change to one key. A delete's KV holds the key and the
// delete's revision (ModRevision) only. Events share their bytes with the
// store and with other watchers: read them, never change them.
type Event struct {
	Type   EventType
	KV     KeyValue
	PrevKV *KeyValue // the key before, for watchers that asked (nil if compacted or none)
}

// size is about what the event takes on the wire.
func (e *Event) size() int {
	n := len(e.KV.Key) + len(e.KV.Value) + 48
	if e.PrevKV != nil {
		n += len(e.PrevKV.Key) + len(e.PrevKV.Value) + 48
	}
	return n
}

// WatchOptions describe a watcher.
type WatchOptions struct {
	// ID is the watcher's id on its stream; 0 lets the stream pick the
	// lowest unused id counting up from 0, as etcd does.
	ID int64
	// Key and End: etcd's range (End nil: Key alone; "\x00": every key
	// from Key). An empty Key is "\x00".
	Key, End []byte
	// StartRev is the first revision to report (0: the next one). A
	// revision below the compacted one cancels the watcher.
	StartRev        int64
	PrevKV          bool
	NoPut, NoDelete bool
	ProgressNotify  bool // NotifyProgress reports to this watcher when idle
}

// WatchResponse is what a stream delivers: events of one watcher, all
// events of each revision together, revisions in order; or a progress
// report (no events; WatchID -1 when the stream asked for it); or a
// cancellation because the watcher's next revision was compacted.
type WatchResponse struct {
	WatchID         int64
	Events          []Event
	Revision        int64 // the store's revision when the response was made
	CompactRevision int64 // with Canceled: the compacted revision
	Canceled        bool
	Fragment        bool // set by Fragments on every part but the last
}

// Fragments splits r, for a watcher that allows it, into parts of at most
// about limit bytes each (at least one event each), every part but the
// last marked Fragment. A response smaller than limit, or with fewer than
// two events, is returned whole.
func (r WatchResponse) Fragments(limit int) []WatchResponse {
	total := 0
	for i := range r.Events {
		total += r.Events[i].size()
	}
	if len(r.Events) < 2 || total < limit {
		return []WatchResponse{r}
	}
	var parts []WatchResponse
	evs := r.Events
	for len(evs) > 0 {
		n, size := 0, 0
		for n < len(evs) && (n == 0 || size+evs[n].size() <= limit) {
			size += evs[n].size()
			n++
		}
		part := r
		part.Events, part.Fragment = evs[:n:n], n < len(evs)
		parts = append(parts, part)
		evs = evs[n:]
	}
	return parts
}

// watcher is one watch. Every field after the options is guarded by the
// hub's lock.
type watcher struct {
	o      WatchOptions
	stream *WatchStream
	// minRev is the first revision not yet delivered.
	minRev int64
	// synced watchers get each revision as it is written; the others are
	// caught up from history by the sync loop.
	synced bool
	// pos is the watcher's place in the synced set's list.
	pos int
	// sent says a response went out since the last progress tick.
	sent bool
}

// matches reports whether the watcher wants the event.
func (w *watcher) matches(ev *Event) bool {
	if (ev.Type == EventPut && w.o.NoPut) || (ev.Type == EventDelete && w.o.NoDelete) {
		return false
	}
	return inRange(ev.KV.Key, w.o.Key, w.o.End)
}

// eventViews is a batch of events as watchers see them: with their
// previous key-values, and (made on first need) without.
type eventViews struct{ full, bare []Event }

func (v *eventViews) of(prevKV bool) []Event {
	if prevKV {
		return v.full
	}
	if v.bare == nil {
		v.bare = make([]Event, len(v.full))
		for i, e := range v.full {
			v.bare[i] = Event{Type: e.Type, KV: e.KV}
		}
	}
	return v.bare
}

// take returns the events of v from revision from on that the watcher
// wants, as it asked to see them; wanting every event, it gets the shared
// slice itself, so watchers of a revision share one.
func (w *watcher) take(v *eventViews, from int64) []Event {
	wants := func(e *Event) bool { return e.KV.ModRevision >= from && w.matches(e) }
	n := 0
	for i := range v.full {
		if wants(&v.full[i]) {
			n++
		}
	}
	switch n {
	case 0:
		return nil
	case len(v.full):
		return v.of(w.o.PrevKV)
	}
	view, out := v.of(w.o.PrevKV), make([]Event, 0, n)
	for i := range v.full {
		if wants(&v.full[i]) {
			out = append(out, view[i])
		}
	}
	return out
}

// watchHub keeps the store's watchers: synced ones, told of each write as
// End publishes it, and slow ones, caught up from history by a loop of
// its own. Its lock is taken before the store's.
type watchHub struct {
	s  *Store
	mu sync.Mutex
	// synced: single-key watchers by key, the others in a list.
	keys   map[string][]*watcher
	ranges []*watcher
	// unsynced watchers, in the order they fell behind.
	unsynced []*watcher

	// streams counts the watch streams open.
	streams atomic.Int64

	start sync.Once
	kick  chan struct{}
	stop  chan struct{}
	done  chan struct{}
}

func (h *watchHub) init(s *Store) {
	h.s = s
	h.keys = map[string][]*watcher{}
	h.kick = make(chan struct{}, 1)
	h.stop = make(chan struct{})
	h.done = make(chan struct{})
}

func (h *watchHub) addSynced(w *watcher) {
	w.synced = true
	if w.o.End == nil {
		h.keys[string(w.o.Key)] = append(h.keys[string(w.o.Key)], w)
		return
	}
	w.pos = len(h.ranges)
	h.ranges = append(h.ranges, w)
}

func (h *watchHub) removeSynced(w *watcher) {
	w.synced = false
	if w.o.End == nil {
		ws := h.keys[string(w.o.Key)]
		for i, x := range ws {
			if x == w {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(h.keys, string(w.o.Key))
		} else {
			h.keys[string(w.o.Key)] = ws
		}
		return
	}
	last := h.ranges[len(h.ranges)-1]
	h.ranges[w.pos], last.pos = last, w.pos
	h.ranges[len(h.ranges)-1] = nil
	h.ranges = h.ranges[:len(h.ranges)-1]
}

// addUnsynced sets w aside for the sync loop and wakes it.
func (h *watchHub) addUnsynced(w *watcher) {
	h.unsynced = append(h.unsynced, w)
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// resync sets every synced watcher aside for the sync loop, to be caught
// up from revision from+1 on (it has had everything before): the store's
// state was replaced, and the revisions since come from its history.
func (h *watchHub) resync(from int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var all []*watcher
	for _, ws := range h.keys {
		all = append(all, ws...)
	}
	all = append(all, h.ranges...)
	for _, w := range all {
		h.removeSynced(w)
		w.minRev = max(w.minRev, from+1)
		h.addUnsynced(w)
	}
}

func (h *watchHub) remove(w *watcher) {
	if w.synced {
		h.removeSynced(w)
		return
	}
	for i, x := range h.unsynced {
		if x == w {
			h.unsynced = append(h.unsynced[:i], h.unsynced[i+1:]...)
			return
		}
	}
}

// send offers a response to the watcher's stream without waiting.
func (h *watchHub) send(w *watcher, r WatchResponse) bool {
	select {
	case w.stream.ch <- r:
		w.sent = true
		n := int64(len(r.Events))
		h.s.counters.EventsSent.Add(n)
		w.stream.pending.Add(n)
		h.s.counters.PendingEvents.Add(n)
		return true
	default:
		return false
	}
}

// notify delivers the events of revision rev to the synced watchers; one
// whose stream is full falls behind, to be caught up from history. Called
// under h.mu as the revision becomes current.
func (h *watchHub) notify(rev int64, evs []Event) {
	if len(h.ranges) == 0 && len(h.keys) == 0 {
		return
	}
	v := &eventViews{full: evs}
	var behind []*watcher
	deliver := func(w *watcher, picked []Event) {
		if w.minRev > rev || len(picked) == 0 {
			return // it starts later, or wants none of these
		}
		if h.send(w, WatchResponse{WatchID: w.o.ID, Events: picked, Revision: rev}) {
			return
		}
		// It has had everything before rev.
		w.minRev = rev
		behind = append(behind, w)
	}
	for _, w := range h.ranges {
		deliver(w, w.take(v, rev))
	}
	for i := range evs {
		for _, w := range h.keys[string(evs[i].KV.Key)] {
			if w.matches(&evs[i]) {
				deliver(w, v.of(w.o.PrevKV)[i:i+1:i+1])
			}
		}
	}
	for _, w := range behind {
		h.removeSynced(w)
		h.addUnsynced(w)
	}
}

// loop catches up slow watchers until the store closes: at once when one
// falls behind, and every watchSyncInterval while any is behind.
func (h *watchHub) loop() {
	defer close(h.done)
	t := time.NewTicker(watchSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-h.kick:
		case <-t.C:
		}
		for h.syncOnce() {
			select {
			case <-h.stop:
				return
			default:
			}
		}
	}
}

// syncOnce serves up to watchersPerSync slow watchers (passing over those
// whose stream is full, which could take nothing): those whose next
// revision is compacted are cancelled; the others get up to watchBatchRevs
// revisions of history, read without the hub's lock so writers go on
// meanwhile, and rejoin the synced ones once nothing was written since.
// It reports whether it delivered anything and slow watchers remain.
func (h *watchHub) syncOnce() bool {
	h.mu.Lock()
	cur, compacted := h.s.Rev(), h.s.CompactRev()
	progress := h.cancelCompacted(compacted)
	var batch []*watcher
	lo := int64(-1)
	for _, w := range h.unsynced {
		if len(batch) == watchersPerSync {
			break
		}
		if w.minRev < compacted {
			continue // its stream is full; cancelled on a later pass
		}
		if len(w.stream.ch) == cap(w.stream.ch) {
			// Its reader is behind: it could take nothing now, and its
			// next revision must not hold back the others' catch-up.
			continue
		}
		batch = append(batch, w)
		if lo < 0 || w.minRev < lo {
			lo = w.minRev
		}
	}
	if len(batch) == 0 {
		more := progress && len(h.unsynced) > 0
		h.mu.Unlock()
		return more
	}
	h.mu.Unlock()

	hi := min(cur, lo+watchBatchRevs-1)
	wantPrev := false
	for _, w := range batch {
		wantPrev = wantPrev || w.o.PrevKV
	}
	v := &eventViews{}
	if lo <= hi {
		var err error
		if v.full, err = h.s.history(lo, hi, wantPrev); err != nil {
			// The store is failing; its applier will find out. Retry later.
			return false
		}
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	compacted = h.s.CompactRev()
	for _, w := range batch {
		if w.synced || w.stream == nil || w.minRev < compacted {
			continue // cancelled, or compacted meanwhile (the next pass says so)
		}
		picked := w.take(v, w.minRev)
		if len(picked) > 0 {
			if !h.send(w, WatchResponse{WatchID: w.o.ID, Events: picked, Revision: h.s.Rev()}) {
				continue // still slow
			}
			progress = true
		}
		w.minRev = max(w.minRev, hi+1)
		if w.minRev > h.s.Rev() {
			// Nothing was written since the read: it is caught up.
			h.remove(w)
			h.addSynced(w)
			progress = true
		}
	}
	return progress && len(h.unsynced) > 0
}

// cancelCompacted tells each slow watcher whose next revision is below
// compacted that it is cancelled, and drops it; one whose stream is full
// is told on a later pass. Under h.mu.
func (h *watchHub) cancelCompacted(compacted int64) bool {
	sent := false
	kept := h.unsynced[:0]
	for _, w := range h.unsynced {
		if w.minRev < compacted && h.send(w, WatchResponse{WatchID: w.o.ID, Revision: h.s.Rev(), CompactRevision: compacted, Canceled: true}) {
			delete(w.stream.watchers, w.o.ID)
			w.stream = nil
			sent = true
			continue
		}
		kept = append(kept, w)
	}
	clear(h.unsynced[len(kept):])
	h.unsynced = kept
	return sent
}

// history reads the events of revisions [lo, hi] from the page file and
// the open batch's buffer, in revision order, with each event's previous
// key-value if wantPrev (looked up at the revision before; nil if
// compacted or none).
func (s *Store) history(lo, hi int64, wantPrev bool) ([]Event, error) {
	s.mu.RLock()
	buf := s.mu.buf
	tx, err := s.db.Begin(false)
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	pending := bufferRevisions(buf, lo, hi)
	var evs []Event
	err = mergeRevisions(tx, pending, lo, hi, func(r btreeindex.Revision, k, v []byte) error {
		if len(v) >= pagefile.WillNeedBytes {
			tx.WillNeed(v)
		}
		kv, err := decodeKV(v)
		if err != nil {
			return err
		}
		ev := Event{Type: EventPut, KV: kv}
		if len(k) > revBytesLen {
			ev.Type = EventDelete
		}
		if wantPrev && !(ev.Type == EventPut && kv.Version == 1) {
			if mod, _, _, err := s.index.Get(kv.Key, r.Main-1); err == nil {
				if prev, err := s.lookup(tx, buf, mod, false); err == nil {
					ev.PrevKV = &prev
				}
			}
		}
		evs = append(evs, ev)
		return nil
	})
	return evs, err
}

// WatchStream is a set of watchers whose responses come on one channel,
// as etcd's gRPC watch stream has. Its methods may be called from any
// goroutine; the channel must be read, or its watchers fall behind.
type WatchStream struct {
	h  *watchHub
	ch chan WatchResponse
	// pending counts the events on the channel not yet taken (Taken).
	pending atomic.Int64
	// Guarded by the hub's lock.
	watchers map[int64]*watcher
	nextID   int64
	closed   bool
}

// NewWatchStream opens a stream with room for WatchStreamBuffer
// responses.
func (s *Store) NewWatchStream() *WatchStream {
	s.hub.start.Do(func() { go s.hub.loop() })
	s.hub.streams.Add(1)
	return &WatchStream{h: &s.hub, ch: make(chan WatchResponse, WatchStreamBuffer), watchers: map[int64]*watcher{}}
}

// Chan is where the stream's responses arrive; Close closes it.
func (ws *WatchStream) Chan() <-chan WatchResponse { return ws.ch }

// Watch adds a watcher and returns its id. Events from StartRev on come
// in revision order, each exactly once.
func (ws *WatchStream) Watch(o WatchOptions) (int64, error) {
	if len(o.Key) == 0 {
		o.Key = []byte{0}
	}
	if o.End != nil && !(len(o.End) == 1 && o.End[0] == 0) && bytes.Compare(o.Key, o.End) >= 0 {
		return -1, ErrEmptyWatcherRange
	}
	o.Key = bytes.Clone(o.Key)
	o.End = bytes.Clone(o.End)
	h := ws.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if ws.closed {
		return -1, ErrWatcherNotExist
	}
	if o.ID == 0 {
		for ws.watchers[ws.nextID] != nil {
			ws.nextID++
		}
		o.ID = ws.nextID
		ws.nextID++
	} else if ws.watchers[o.ID] != nil {
		return -1, ErrWatcherDuplicateID
	}
	w := &watcher{o: o, stream: ws, minRev: o.StartRev}
	ws.watchers[o.ID] = w
	// Under h.mu the current revision is stable: End advances it there.
	if cur := h.s.Rev(); o.StartRev == 0 || o.StartRev > cur {
		w.minRev = max(cur+1, o.StartRev)
		h.addSynced(w)
	} else {
		h.addUnsynced(w)
	}
	return o.ID, nil
}

// Cancel removes a watcher: no response for it is sent after Cancel
// returns (some may already wait in the channel).
func (ws *WatchStream) Cancel(id int64) error {
	h := ws.h
	h.mu.Lock()
	defer h.mu.Unlock()
	w := ws.watchers[id]
	if w == nil {
		return ErrWatcherNotExist
	}
	h.remove(w)
	delete(ws.watchers, id)
	w.stream = nil
	return nil
}

// RequestProgress sends a progress report (WatchID -1, no events, the
// current revision) if every watcher of the stream is synced; otherwise,
// as in etcd, nothing. It reports whether one was sent.
func (ws *WatchStream) RequestProgress() bool {
	h := ws.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if ws.closed {
		return false
	}
	for _, w := range ws.watchers {
		if !w.synced {
			return false
		}
	}
	select {
	case ws.ch <- WatchResponse{WatchID: -1, Revision: h.s.Rev()}:
		return true
	default:
		return false
	}
}

// Close cancels every watcher of the stream and closes its channel.
func (ws *WatchStream) Close() {
	h := ws.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if ws.closed {
		return
	}
	for id, w := range ws.watchers {
		h.remove(w)
		w.stream = nil
		delete(ws.watchers, id)
	}
	ws.closed = true
	h.streams.Add(-1)
	h.s.counters.PendingEvents.Add(-ws.pending.Swap(0))
	close(ws.ch)
}

// Taken tells the stream its reader took r from the channel (for the
// count of events sent but not yet taken).
func (ws *WatchStream) Taken(r WatchResponse) {
	n := int64(len(r.Events))
	for n > 0 {
		p := ws.pending.Load()
		if p < n {
			n = p // (the stream was closed meanwhile)
		}
		if ws.pending.CompareAndSwap(p, p-n) {
			ws.h.s.counters.PendingEvents.Add(-n)
			return
		}
	}
}

// WatchCounts are the watch streams open, their watchers, and the
// watchers that fell behind (unsynced), as etcd's gauges count them.
func (s *Store) WatchCounts() (streams, watchers, slow int) {
	h := &s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	watchers = len(h.ranges) + len(h.unsynced)
	for _, ws := range h.keys {
		watchers += len(ws)
	}
	return int(h.streams.Load()), watchers, len(h.unsynced)
}

// NotifyProgress sends a progress report (its id, no events, the current
// revision) to every synced watcher that asked for them and was sent
// nothing since the last call. The server calls it on its progress
// interval.
func (s *Store) NotifyProgress() {
	h := &s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	rev := s.Rev()
	tell := func(w *watcher) {
		if !w.o.ProgressNotify {
			return
		}
		if w.sent {
			w.sent = false
			return
		}
		h.send(w, WatchResponse{WatchID: w.o.ID, Revision: rev})
		w.sent = false
	}
	for _, w := range h.ranges {
		tell(w)
	}
	for _, ws := range h.keys {
		for _, w := range ws {
			tell(w)
		}
	}
}

// closeWatch stops the catch-up loop, if it ever started.
func (h *watchHub) closeWatch() {
	started := true
	h.start.Do(func() { started = false })
	if started {
		close(h.stop)
		<-h.done
	}
}

// checkWatch verifies the hub as a whole: every watcher is in exactly one
// of the synced and unsynced sets, under its key or in the list as its
// range says, with its list position right, and belongs to its stream; an
// unsynced one is owed no revision after the current one.
func (h *watchHub) checkWatch() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.s.Rev()
	seen := map[*watcher]int{}
	for k, ws := range h.keys {
		for _, w := range ws {
			if w.o.End != nil || string(w.o.Key) != k || !w.synced {
				return fmt.Errorf("engine: synced key watcher %d is filed wrongly", w.o.ID)
			}
			seen[w]++
		}
	}
	for i, w := range h.ranges {
		if w.o.End == nil || w.pos != i || !w.synced {
			return fmt.Errorf("engine: synced range watcher %d is filed wrongly", w.o.ID)
		}
		seen[w]++
	}
	for _, w := range h.unsynced {
		if w.synced || w.minRev > cur+1 {
			return fmt.Errorf("engine: unsynced watcher %d is marked synced or ahead (%d > %d)", w.o.ID, w.minRev, cur+1)
		}
		seen[w]++
	}
	for w, c := range seen {
		if c != 1 || w.stream == nil || w.stream.watchers[w.o.ID] != w {
			return fmt.Errorf("engine: watcher %d is filed %d times or belongs to no stream", w.o.ID, c)
		}
	}
	return nil
}
