package engine

import (
	"fmt"
	"math/rand"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/cairn-kv/cairn/internal/testseed"
	"github.com/stretchr/testify/require"
)

// wevent is an event as the naive model expects it.
type wevent struct {
	rev  int64
	del  bool
	kv   KeyValue
	prev *KeyValue
}

// watchLog records every revision's events as the model predicts them.
type watchLog struct {
	m    kvModel
	evs  []wevent
	last int64
}

// put and del record a change at rev, computed from the model before it.
func (l *watchLog) put(rev int64, key, value string) {
	prev, had := l.m.at(key, rev-1)
	l.m[key] = append(l.m[key], mevent{rev: rev, value: value})
	kv, _ := l.m.at(key, rev)
	e := wevent{rev: rev, kv: kv}
	if had {
		e.prev = &prev
	}
	l.evs = append(l.evs, e)
}

func (l *watchLog) del(rev int64, key string) {
	prev, had := l.m.at(key, rev-1)
	if !had {
		return
	}
	l.m[key] = append(l.m[key], mevent{rev: rev, deleted: true})
	l.evs = append(l.evs, wevent{rev: rev, del: true, kv: KeyValue{Key: []byte(key), ModRevision: rev}, prev: &prev})
}

// expect returns the events a watcher with o should get, from its start
// revision (given as the first revision it is owed) to the end.
func (l *watchLog) expect(o WatchOptions, from int64) []wevent {
	var out []wevent
	key, end := o.Key, o.End
	if len(key) == 0 {
		key = []byte{0}
	}
	for _, e := range l.evs {
		if e.rev < from || !inRange(e.kv.Key, key, end) || (e.del && o.NoDelete) || (!e.del && o.NoPut) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// gotWatch is what one watcher received.
type gotWatch struct {
	o          WatchOptions
	from       int64 // the first revision it is owed
	resps      []WatchResponse
	cancelled  *WatchResponse // by compaction
	userCancel bool           // by Cancel: events may end anywhere
}

// checkWatcher compares what a watcher got with the model: the expected
// events in order, exactly once, each revision's in one response, previous
// key-values as asked (absent only where compaction may have taken them);
// a cancelled watcher got a prefix and was owed a compacted revision.
func checkWatcher(t *testing.T, g *gotWatch, l *watchLog, finalCompacted int64) {
	t.Helper()
	want := l.expect(g.o, g.from)
	var got []Event
	lastRev := int64(0)
	for i, r := range g.resps {
		if len(r.Events) == 0 {
			t.Fatalf("watcher %d: response %d has no events", g.o.ID, i)
		}
		if r.Events[0].KV.ModRevision == lastRev {
			t.Fatalf("watcher %d: revision %d split across responses", g.o.ID, lastRev)
		}
		lastRev = r.Events[len(r.Events)-1].KV.ModRevision
		got = append(got, r.Events...)
	}
	if g.userCancel && len(got) <= len(want) {
		want = want[:len(got)]
	}
	if g.cancelled != nil {
		if len(got) > len(want) {
			t.Fatalf("watcher %d: %d events before cancellation, %d expected in all", g.o.ID, len(got), len(want))
		}
		want = want[:len(got)]
		next := g.from
		if len(got) > 0 {
			next = got[len(got)-1].KV.ModRevision + 1
		}
		if next >= g.cancelled.CompactRevision {
			t.Fatalf("watcher %d: cancelled at compaction %d but owed only revisions from %d", g.o.ID, g.cancelled.CompactRevision, next)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("watcher %+v from %d: got %d events, want %d", g.o, g.from, len(got), len(want))
	}
	for i := range want {
		e, w := got[i], want[i]
		if (e.Type == EventDelete) != w.del || !sameKVs([]KeyValue{e.KV}, []KeyValue{w.kv}) {
			t.Fatalf("watcher %d: event %d = %v %+v, want del=%v %+v", g.o.ID, i, e.Type, e.KV, w.del, w.kv)
		}
		switch {
		case !g.o.PrevKV:
			if e.PrevKV != nil {
				t.Fatalf("watcher %d: event %d has a previous key-value it did not ask for", g.o.ID, i)
			}
		case e.PrevKV == nil:
			if w.prev != nil && finalCompacted < w.rev {
				t.Fatalf("watcher %d: event %d at %d lacks its previous key-value %+v", g.o.ID, i, w.rev, *w.prev)
			}
		case w.prev == nil || !sameKVs([]KeyValue{*e.PrevKV}, []KeyValue{*w.prev}):
			t.Fatalf("watcher %d: event %d previous key-value %+v, want %+v", g.o.ID, i, *e.PrevKV, w.prev)
		}
	}
}

// drainStream reads a stream until every watcher on it is synced and a
// progress report came after, filing responses by watcher. It gives up
// (failing the test) after a minute: the catch-up loop must get there.
func drainStream(t *testing.T, ws *WatchStream, got map[int64]*gotWatch) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	asked := false
	for {
		select {
		case r := <-ws.Chan():
			if r.WatchID == -1 {
				return
			}
			file(t, got, r)
			continue
		default:
		}
		if !asked {
			asked = ws.RequestProgress()
		}
		if time.Now().After(deadline) {
			t.Fatal("watchers did not catch up within a minute")
		}
		if !asked {
			time.Sleep(time.Millisecond)
		}
	}
}

func file(t *testing.T, got map[int64]*gotWatch, r WatchResponse) {
	t.Helper()
	g := got[r.WatchID]
	if g == nil {
		t.Fatalf("response for unknown watcher %d", r.WatchID)
	}
	if g.cancelled != nil {
		t.Fatalf("watcher %d: response after its cancellation", r.WatchID)
	}
	if r.Canceled {
		g.cancelled = &r
		return
	}
	if len(r.Events) > 0 {
		g.resps = append(g.resps, r)
	}
}

var watchKeys = func() []string {
	var ks []string
	for _, p := range []string{"a/", "b/"} {
		for i := 0; i < 12; i++ {
			ks = append(ks, fmt.Sprintf("%s%02d", p, i))
		}
	}
	return ks
}()

// randomWatch draws a watcher: a key, a prefix, keys from one on, or every
// key; filters and prev_kv at random.
func randomWatch(rng *rand.Rand) WatchOptions {
	o := WatchOptions{PrevKV: rng.Intn(2) == 0}
	switch rng.Intn(4) {
	case 0:
		o.Key = []byte(watchKeys[rng.Intn(len(watchKeys))])
	case 1:
		o.Key, o.End = []byte("a/"), []byte("a0")
	case 2:
		o.Key, o.End = []byte(watchKeys[rng.Intn(len(watchKeys))]), []byte{0}
	default:
		o.End = []byte{0}
	}
	switch rng.Intn(6) {
	case 0:
		o.NoPut = true
	case 1:
		o.NoDelete = true
	}
	return o
}

// randomTxn writes one revision: puts and deletes of distinct keys, or a
// range delete, recording the model's events.
func randomTxn(rng *rand.Rand, s *Store, l *watchLog) *TxnRequest {
	rev := s.Rev() + 1
	req := &TxnRequest{}
	if rng.Intn(8) == 0 {
		start := watchKeys[rng.Intn(len(watchKeys))]
		req.Success = []Op{{Type: OpDelete, Key: []byte(start), End: []byte("b0")}}
		for _, k := range l.m.rangeAt(start, "b0", rev-1) {
			l.del(rev, string(k.Key))
		}
		return req
	}
	used := map[string]bool{}
	for n := 1 + rng.Intn(3); n > 0; n-- {
		k := watchKeys[rng.Intn(len(watchKeys))]
		if used[k] {
			continue
		}
		used[k] = true
		if rng.Intn(4) == 0 {
			req.Success = append(req.Success, Op{Type: OpDelete, Key: []byte(k)})
			l.del(rev, k)
		} else {
			v := fmt.Sprintf("v%d", rng.Int63())
			req.Success = append(req.Success, Op{Type: OpPut, Key: []byte(k), Value: []byte(v)})
			l.put(rev, k, v)
		}
	}
	return req
}

// TestWatchAgainstModel runs random write transactions from one writer
// (with batch commits and compactions) while streams come and go with
// watchers on keys, prefixes and open ranges, from the next revision, from
// history (some compacted), and from the future; some streams are read
// promptly, some slowly, some not until the writes end, so watchers fall
// behind and are caught up from history. Every watcher's events are then
// checked against the model, and the store as a whole.
func TestWatchAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(testseed.Seed(t)))
	_, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	l := &watchLog{m: kvModel{}}

	const revisions, nstreams = 1500, 24
	type streamState struct {
		ws   *WatchStream
		got  map[int64]*gotWatch
		mode int // 0: read promptly, 1: read slowly, 2: read at the end
		mu   sync.Mutex
		stop chan struct{}
		done chan struct{}
	}
	var streams []*streamState
	reader := func(st *streamState) {
		defer close(st.done)
		for {
			select {
			case <-st.stop:
				return
			case r := <-st.ws.Chan():
				st.mu.Lock()
				file(t, st.got, r)
				st.mu.Unlock()
				if st.mode == 1 {
					time.Sleep(50 * time.Microsecond)
				}
			}
		}
	}
	// Writes go on in their own goroutine, as the applier does, while this
	// one adds watchers; the writer hands over each revision's log entry.
	writes := make(chan func(), 1)
	var written sync.WaitGroup
	written.Add(1)
	go func() {
		defer written.Done()
		for f := range writes {
			f()
		}
	}()
	var compacted int64
	for i := 0; i < revisions; i++ {
		done := make(chan struct{})
		seedW := rng.Int63()
		writes <- func() {
			defer close(done)
			r := rand.New(rand.NewSource(seedW))
			if _, err := s.Txn(randomTxn(r, s, l)); err != nil {
				t.Error(err)
			}
			if r.Intn(50) == 0 {
				if err := s.Commit(); err != nil {
					t.Error(err)
				}
			}
			if cur := s.Rev(); r.Intn(200) == 0 && cur > compacted+1 {
				c := compacted + 1 + r.Int63n(cur-compacted-1)
				if err := s.Compact(c); err != nil {
					t.Error(err)
				}
				compacted = c
			}
			if _, err := s.CompactStep(50); err != nil {
				t.Error(err)
			}
		}
		// Meanwhile, maybe a new stream or watcher.
		if rng.Intn(20) == 0 && len(streams) < nstreams {
			st := &streamState{ws: s.NewWatchStream(), got: map[int64]*gotWatch{}, mode: rng.Intn(3), stop: make(chan struct{}), done: make(chan struct{})}
			if st.mode != 2 {
				go reader(st)
			}
			streams = append(streams, st)
		}
		// A watcher from a given revision (past, or maybe future) is added
		// while the write runs; one from the next revision after it, when
		// the next revision is known.
		addWatch := func(next bool) {
			if rng.Intn(4) != 0 || len(streams) == 0 {
				return
			}
			st := streams[rng.Intn(len(streams))]
			o := randomWatch(rng)
			cur := s.Rev()
			from := cur + 1
			if !next {
				o.StartRev = 1 + rng.Int63n(cur+5)
				from = o.StartRev
			}
			st.mu.Lock()
			defer st.mu.Unlock()
			id, err := st.ws.Watch(o)
			if err != nil {
				t.Fatal(err)
			}
			o.ID = id
			st.got[id] = &gotWatch{o: o, from: from}
		}
		addWatch(false)
		if rng.Intn(40) == 0 && len(streams) > 0 {
			st := streams[rng.Intn(len(streams))]
			st.mu.Lock()
			for id, g := range st.got {
				if g.cancelled == nil && !g.userCancel {
					switch err := st.ws.Cancel(id); err {
					case nil:
						g.userCancel = true
					case ErrWatcherNotExist:
						// Compaction cancelled it; the stream says so.
					default:
						t.Fatal(err)
					}
					break
				}
			}
			st.mu.Unlock()
		}
		<-done
		addWatch(true)
		if t.Failed() {
			t.FailNow()
		}
	}
	close(writes)
	written.Wait()
	finishCompaction(t, s)

	for _, st := range streams {
		if st.mode != 2 {
			close(st.stop)
			<-st.done
		}
		drainStream(t, st.ws, st.got)
		for _, g := range st.got {
			checkWatcher(t, g, l, compacted)
		}
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	for _, st := range streams {
		st.ws.Close()
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// watchFixture writes k at revisions 2..4, deletes it at 5, puts it at 6
// ("other" is written at 2 too; a fresh store is at revision 1).
func watchFixture(t *testing.T) *Store {
	t.Helper()
	_, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	t.Cleanup(func() { s.Close() })
	steps := []TxnRequest{
		{Success: []Op{{Type: OpPut, Key: []byte("other"), Value: []byte("o")}, {Type: OpPut, Key: []byte("k"), Value: []byte("v2")}}},
		{Success: []Op{{Type: OpPut, Key: []byte("k"), Value: []byte("v3")}}},
		{Success: []Op{{Type: OpPut, Key: []byte("k"), Value: []byte("v4")}}},
		{Success: []Op{{Type: OpDelete, Key: []byte("k")}}},
		{Success: []Op{{Type: OpPut, Key: []byte("k"), Value: []byte("v6")}}},
	}
	for i := range steps {
		if _, err := s.Txn(&steps[i]); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// next waits for a stream's next response (a minute at most).
func next(t *testing.T, ws *WatchStream) WatchResponse {
	t.Helper()
	select {
	case r := <-ws.Chan():
		return r
	case <-time.After(time.Minute):
		t.Fatal("no watch response within a minute")
		return WatchResponse{}
	}
}

func eventsOf(r WatchResponse) string {
	out := ""
	for _, e := range r.Events {
		prev := ""
		if e.PrevKV != nil {
			prev = "<" + string(e.PrevKV.Value)
		}
		out += fmt.Sprintf("%d:%s=%s%s ", e.KV.ModRevision, e.KV.Key, e.KV.Value, prev)
	}
	return out
}

// TestWatchCompaction: a watch from the compaction revision gets the delete
// made there (etcd #18089); one from below it is cancelled with the
// compacted revision, once, with nothing after.
func TestWatchCompaction(t *testing.T) {
	s := watchFixture(t)
	if err := s.Compact(5); err != nil {
		t.Fatal(err)
	}
	finishCompaction(t, s)
	if err := s.Commit(); err != nil {
		t.Fatal(err)
	}
	ws := s.NewWatchStream()
	defer ws.Close()
	if _, err := ws.Watch(WatchOptions{Key: []byte("k"), StartRev: 5, PrevKV: true}); err != nil {
		t.Fatal(err)
	}
	if got := eventsOf(next(t, ws)); got != "5:k= 6:k=v6 " {
		t.Fatalf("watch from the compaction revision: %q", got)
	}
	id, err := ws.Watch(WatchOptions{Key: []byte("k"), StartRev: 4})
	if err != nil {
		t.Fatal(err)
	}
	r := next(t, ws)
	if r.WatchID != id || !r.Canceled || r.CompactRevision != 5 || len(r.Events) != 0 {
		t.Fatalf("watch from below the compaction: %+v", r)
	}
	if err := ws.Cancel(id); err != ErrWatcherNotExist {
		t.Fatalf("cancelling a watcher compaction cancelled: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestWatchOptions: filters, prev_kv from history and as written, ranges,
// ids, and the errors etcd gives.
func TestWatchOptions(t *testing.T) {
	s := watchFixture(t)
	ws := s.NewWatchStream()
	defer ws.Close()
	mustWatch := func(o WatchOptions) int64 {
		t.Helper()
		id, err := ws.Watch(o)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	if id := mustWatch(WatchOptions{Key: []byte("k"), StartRev: 2, NoPut: true, PrevKV: true}); id != 0 {
		t.Fatalf("first automatic id %d, want 0", id)
	}
	if got := eventsOf(next(t, ws)); got != "5:k=<v4 " {
		t.Fatalf("NOPUT with prev_kv from history: %q", got)
	}
	mustWatch(WatchOptions{Key: []byte("k"), StartRev: 3, NoDelete: true})
	if got := eventsOf(next(t, ws)); got != "3:k=v3 4:k=v4 6:k=v6 " {
		t.Fatalf("NODELETE from history: %q", got)
	}
	if _, err := ws.Watch(WatchOptions{ID: 1, Key: []byte("k")}); err != ErrWatcherDuplicateID {
		t.Fatalf("duplicate id: %v", err)
	}
	if _, err := ws.Watch(WatchOptions{Key: []byte("b"), End: []byte("a")}); err != ErrEmptyWatcherRange {
		t.Fatalf("empty range: %v", err)
	}
	if _, err := ws.Watch(WatchOptions{Key: []byte("a"), End: []byte("a")}); err != ErrEmptyWatcherRange {
		t.Fatalf("empty range: %v", err)
	}
	if id := mustWatch(WatchOptions{ID: 7, End: []byte{0}, PrevKV: true}); id != 7 {
		t.Fatalf("chosen id %d", id)
	}
	if id := mustWatch(WatchOptions{Key: []byte("o"), End: []byte("p")}); id != 2 {
		t.Fatalf("automatic id after 0, 1: %d", id)
	}
	if _, err := s.Txn(&TxnRequest{Success: []Op{
		{Type: OpPut, Key: []byte("k"), Value: []byte("v7")},
		{Type: OpPut, Key: []byte("other"), Value: []byte("o7")},
	}}); err != nil {
		t.Fatal(err)
	}
	got := map[int64]string{}
	for len(got) < 3 {
		r := next(t, ws)
		got[r.WatchID] = eventsOf(r)
	}
	want := map[int64]string{1: "7:k=v7 ", 7: "7:k=v7<v6 7:other=o7<o ", 2: "7:other=o7 "}
	for id, w := range want {
		if got[id] != w {
			t.Fatalf("watcher %d got %q, want %q", id, got[id], w)
		}
	}
	if err := ws.Cancel(99); err != ErrWatcherNotExist {
		t.Fatalf("cancelling an unknown id: %v", err)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestWatchSlowStreamHoldsUpNoOther: a stream nobody reads fills, its
// watcher is set aside, and another stream's watcher gets every revision
// while the first is still unread; then the first catches up from history,
// in order, exactly once.
func TestWatchSlowStreamHoldsUpNoOther(t *testing.T) {
	_, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	slow, fast := s.NewWatchStream(), s.NewWatchStream()
	defer slow.Close()
	defer fast.Close()
	for _, ws := range []*WatchStream{slow, fast} {
		if _, err := ws.Watch(WatchOptions{Key: []byte("k/"), End: []byte("k0")}); err != nil {
			t.Fatal(err)
		}
	}
	const n = 3 * WatchStreamBuffer
	fastGot := make(chan int64, n)
	go func() {
		for r := range fast.Chan() {
			for _, e := range r.Events {
				fastGot <- e.KV.ModRevision
			}
		}
	}()
	for i := 1; i <= n; i++ {
		if _, err := s.Txn(&TxnRequest{Success: []Op{{Type: OpPut, Key: []byte(fmt.Sprintf("k/%d", i%7)), Value: []byte("v")}}}); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			if err := s.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for want := int64(2); want <= n+1; want++ { // a fresh store is at revision 1
		select {
		case got := <-fastGot:
			if got != want {
				t.Fatalf("fast watcher got revision %d, want %d", got, want)
			}
		case <-time.After(time.Minute):
			t.Fatalf("fast watcher stuck before revision %d", want)
		}
	}
	if len(slow.Chan()) != WatchStreamBuffer {
		t.Fatalf("the unread stream holds %d responses, want it full (%d)", len(slow.Chan()), WatchStreamBuffer)
	}
	var revs []int64
	for int64(len(revs)) < n {
		for _, e := range next(t, slow).Events {
			revs = append(revs, e.KV.ModRevision)
		}
	}
	if !sort.SliceIsSorted(revs, func(i, j int) bool { return revs[i] < revs[j] }) || revs[0] != 2 || revs[n-1] != n+1 {
		t.Fatalf("slow watcher's revisions out of order or incomplete: first %d last %d", revs[0], revs[n-1])
	}
	for i := range revs {
		if revs[i] != int64(i+2) {
			t.Fatalf("slow watcher: event %d at revision %d", i, revs[i])
		}
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestWatchIdleWatcherSurvivesCompaction: a watcher that matched nothing
// for a long while, then falls behind, is owed only from where it fell
// behind, so a compaction below that does not cancel it.
func TestWatchIdleWatcherSurvivesCompaction(t *testing.T) {
	_, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	ws := s.NewWatchStream()
	defer ws.Close()
	x, err := ws.Watch(WatchOptions{Key: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Watch(WatchOptions{Key: []byte("busy")}); err != nil {
		t.Fatal(err)
	}
	put := func(k string) {
		t.Helper()
		if _, err := s.Txn(&TxnRequest{Success: []Op{{Type: OpPut, Key: []byte(k), Value: []byte("v")}}}); err != nil {
			t.Fatal(err)
		}
	}
	put("x") // revision 2, delivered
	for i := 0; i < 200; i++ {
		put("other")
	}
	for i := 0; i < WatchStreamBuffer; i++ {
		put("busy") // the last one finds the stream full
	}
	put("x") // so does this: x falls behind at revision 331
	fellAt := s.Rev()
	if err := s.Compact(150); err != nil {
		t.Fatal(err)
	}
	finishCompaction(t, s)
	var xs []WatchResponse
	for {
		r := next(t, ws)
		if r.WatchID == x {
			xs = append(xs, r)
			if len(xs) == 2 {
				break
			}
		}
	}
	if xs[1].Canceled || len(xs[1].Events) != 1 || xs[1].Events[0].KV.ModRevision != fellAt {
		t.Fatalf("the idle watcher got %+v after falling behind at %d", xs[1], fellAt)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestWatchProgress: on request, a progress report only while every
// watcher of the stream is synced; periodic reports to idle watchers that
// asked, skipping one that just got events.
func TestWatchProgress(t *testing.T) {
	s := watchFixture(t)
	ws := s.NewWatchStream()
	defer ws.Close()
	if !ws.RequestProgress() {
		t.Fatal("no progress report on a stream with no watchers")
	}
	if r := next(t, ws); r.WatchID != -1 || r.Revision != 6 || len(r.Events) != 0 {
		t.Fatalf("progress report %+v", r)
	}
	// Fill the stream so a watcher from history cannot be served: it stays
	// unsynced and progress requests are dropped.
	for ws.RequestProgress() {
	}
	id, err := ws.Watch(WatchOptions{Key: []byte("k"), StartRev: 2, ProgressNotify: true})
	if err != nil {
		t.Fatal(err)
	}
	if ws.RequestProgress() {
		t.Fatal("a progress report while a watcher is behind")
	}
	for i := 0; i < WatchStreamBuffer; i++ {
		if r := next(t, ws); r.WatchID != -1 {
			t.Fatalf("unexpected %+v", r)
		}
	}
	if r := next(t, ws); r.WatchID != id || len(r.Events) != 5 {
		t.Fatalf("catch-up %+v", r)
	}
	// It just got events: the first tick skips it, the second reports.
	s.NotifyProgress()
	s.NotifyProgress()
	if r := next(t, ws); r.WatchID != id || len(r.Events) != 0 || r.Revision != 6 {
		t.Fatalf("periodic progress %+v", r)
	}
	if len(ws.Chan()) != 0 {
		t.Fatalf("%d responses more than expected", len(ws.Chan()))
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestWatchFragments: a large response splits into parts of about the
// limit, all marked but the last, events in order; small ones stay whole.
func TestWatchFragments(t *testing.T) {
	var evs []Event
	for i := 0; i < 10; i++ {
		evs = append(evs, Event{KV: KeyValue{Key: []byte(fmt.Sprintf("k%d", i)), Value: make([]byte, 100), ModRevision: 9}})
	}
	r := WatchResponse{WatchID: 3, Events: evs, Revision: 9}
	if parts := r.Fragments(1 << 20); len(parts) != 1 || parts[0].Fragment {
		t.Fatalf("a small response split: %d parts", len(parts))
	}
	parts := r.Fragments(400)
	var again []Event
	for i, p := range parts {
		if p.Fragment != (i < len(parts)-1) || p.WatchID != 3 || p.Revision != 9 {
			t.Fatalf("part %d: %+v", i, p)
		}
		size := 0
		for j := range p.Events {
			size += p.Events[j].size()
		}
		if size > 400 {
			t.Fatalf("part %d is %d bytes", i, size)
		}
		again = append(again, p.Events...)
	}
	if len(parts) < 3 || len(again) != len(evs) {
		t.Fatalf("%d parts, %d events", len(parts), len(again))
	}
	for i := range evs {
		if string(again[i].KV.Key) != string(evs[i].KV.Key) {
			t.Fatalf("event %d out of place", i)
		}
	}
	one := WatchResponse{Events: evs[:1]}
	if parts := one.Fragments(10); len(parts) != 1 {
		t.Fatal("a lone event split")
	}
}

// TestSlowStreamDoesNotStarveCatchUp: a watcher whose stream is full
// (its reader stopped) far back in history must not hold back another
// stream's watcher that is behind by more than one catch-up batch. (Found
// by TestWatchAgainstModel: the catch-up pass started at the slowest
// watcher's revision, so the other never got past it.)
func TestSlowStreamDoesNotStarveCatchUp(t *testing.T) {
	_, s := openStore(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	put := func(k string) {
		w := s.Write()
		if _, err := w.Put([]byte(k), []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
		w.End()
	}
	for i := 0; i < 3*watchBatchRevs; i++ {
		put("a")
	}
	put("b")
	slow := s.NewWatchStream()
	defer slow.Close()
	for len(slow.ch) < cap(slow.ch) {
		slow.ch <- WatchResponse{WatchID: -1} // nobody reads these
	}
	if _, err := slow.Watch(WatchOptions{Key: []byte("a"), StartRev: 2}); err != nil {
		t.Fatal(err)
	}
	fresh := s.NewWatchStream()
	defer fresh.Close()
	if _, err := fresh.Watch(WatchOptions{Key: []byte("b"), StartRev: s.Rev()}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-fresh.Chan():
		if len(r.Events) != 1 || string(r.Events[0].KV.Key) != "b" {
			t.Fatalf("got %+v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a watcher behind by one revision was not caught up in 30 s while another stream was full")
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestWatchPendingEvents: events sent to a stream and not yet taken by its
// reader are counted pending (etcd's pending events gauge); taking them,
// or closing the stream, uncounts them.
func TestWatchPendingEvents(t *testing.T) {
	s := watchFixture(t)
	c := s.Counters()
	ws := s.NewWatchStream()
	_, err := ws.Watch(WatchOptions{Key: []byte("k")})
	require.NoError(t, err)
	for _, v := range []string{"a", "b", "c"} {
		_, err := s.Txn(&TxnRequest{Success: []Op{{Type: OpPut, Key: []byte("k"), Value: []byte(v)}}})
		require.NoError(t, err)
	}
	require.Equal(t, int64(3), c.PendingEvents.Load())
	r := next(t, ws)
	ws.Taken(r)
	require.Equal(t, int64(3-len(r.Events)), c.PendingEvents.Load())
	ws.Close()
	require.Zero(t, c.PendingEvents.Load(), "closing the stream uncounts what it held")
	for r := range ws.Chan() {
		ws.Taken(r) // a reader draining after the close changes nothing
	}
	require.Zero(t, c.PendingEvents.Load())
}
