package raft

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the golden interaction files in testdata/")

// TestInteraction runs the scripts in testdata/*.txt. Each block is a
// command, a line "----", and the output the command must produce (every
// Ready handled and every message delivered shows there). -rewrite writes
// the output the code produces back into the files; review the diff.
//
// Commands:
//
//	add-nodes N [prevote] [checkquorum] [learners=ID,...] [join]
//	                          (join: the new nodes are outside the configuration)
//	campaign ID | propose ID DATA | read-index ID CTX | transfer-leader ID TO
//	propose-conf-change ID add-voter|add-learner|remove NODE
//	tick ID N                 Tick N times
//	process-ready ID...       handle each node's Ready (persist, send, apply)
//	deliver-msgs [drop=ID,...] deliver every queued message, dropping those to or from the ids
//	stabilize                 process-ready and deliver-msgs until nothing is left to do
//	compact ID INDEX          compact the log up to INDEX
//	report-snapshot ID TO ok|failed  tell leader ID how its snapshot to TO ended
//	isolate ID | heal         drop everything to and from ID from now on | stop dropping
//	status ID | log ID        print the node's state | its log
func TestInteraction(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

type block struct {
	comment []string // lines starting with # before the command
	cmd     string
	output  string
}

func parseScript(t *testing.T, path string) []block {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []block
	var comment []string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			comment = append(comment, line)
			continue
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		b := block{cmd: line, comment: comment}
		comment = nil
		if !sc.Scan() || sc.Text() != "----" {
			t.Fatalf("%s: command %q is not followed by ----", path, line)
		}
		var out []string
		for sc.Scan() && sc.Text() != "" {
			out = append(out, sc.Text())
		}
		b.output = strings.Join(out, "\n")
		blocks = append(blocks, b)
	}
	return blocks
}

func runScript(t *testing.T, path string) {
	blocks := parseScript(t, path)
	env := &interactionEnv{t: t, nodes: map[uint64]*simNode{}, isolated: map[uint64]bool{}}
	var rewritten strings.Builder
	for _, b := range blocks {
		got := strings.TrimRight(env.run(b.cmd), "\n")
		if got == "" {
			got = "ok"
		}
		if *rewrite {
			for _, c := range b.comment {
				fmt.Fprintln(&rewritten, c)
			}
			fmt.Fprintf(&rewritten, "%s\n----\n%s\n\n", b.cmd, got)
			continue
		}
		if got != b.output {
			t.Fatalf("%s: %s\n--- got:\n%s\n--- want:\n%s", path, b.cmd, got, b.output)
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(rewritten.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// interactionEnv is a cluster driven one step at a time by a script.
type interactionEnv struct {
	t        *testing.T
	nodes    map[uint64]*simNode
	ids      []uint64
	peers    []uint64
	learners []uint64
	queue    []Message
	isolated map[uint64]bool
	out      strings.Builder
	prevote  bool
	cq       bool
}

func (e *interactionEnv) printf(format string, args ...any) { fmt.Fprintf(&e.out, format, args...) }

func (e *interactionEnv) id(s string) uint64 {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		e.t.Fatalf("bad node id %q", s)
	}
	return v
}

func (e *interactionEnv) run(cmd string) string {
	e.out.Reset()
	f := strings.Fields(cmd)
	switch f[0] {
	case "add-nodes":
		n, _ := strconv.Atoi(f[1])
		join := false
		for _, opt := range f[2:] {
			switch {
			case opt == "prevote":
				e.prevote = true
			case opt == "checkquorum":
				e.cq = true
			case opt == "join":
				join = true
			case strings.HasPrefix(opt, "learners="):
				for _, s := range strings.Split(strings.TrimPrefix(opt, "learners="), ",") {
					e.learners = append(e.learners, e.id(s))
				}
			}
		}
		for i := 1; i <= n; i++ {
			id := uint64(len(e.ids) + 1)
			e.ids = append(e.ids, id)
			if !join && !slices.Contains(e.learners, id) {
				e.peers = append(e.peers, id)
			}
		}
		if join {
			e.learners = slices.DeleteFunc(e.learners, func(uint64) bool { return false })
		}
		for _, id := range e.ids {
			if e.nodes[id] == nil {
				e.nodes[id] = &simNode{id: id}
				e.start(id)
			}
		}
		e.printf("nodes %v, voters %v, learners %v", e.ids, e.peers, e.learners)
	case "campaign":
		e.check(e.node(f[1]).Campaign())
	case "propose":
		e.check(e.node(f[1]).Propose([]byte(f[2])))
	case "read-index":
		e.check(e.node(f[1]).ReadIndex([]byte(f[2])))
	case "transfer-leader":
		e.check(e.node(f[1]).TransferLeader(e.id(f[2])))
	case "propose-conf-change":
		typ := map[string]ConfChangeType{"add-voter": ConfAddVoter, "add-learner": ConfAddLearner, "remove": ConfRemove, "update": ConfUpdate}[f[2]]
		e.check(e.node(f[1]).ProposeConfChange(ConfChange{Type: typ, NodeID: e.id(f[3])}))
	case "tick":
		r := e.node(f[1])
		n, _ := strconv.Atoi(f[2])
		before := r.Status()
		for i := 0; i < n; i++ {
			r.Tick()
		}
		e.stateChange(e.id(f[1]), before)
	case "process-ready":
		for _, s := range f[1:] {
			e.processReady(e.id(s))
		}
	case "deliver-msgs":
		var drop []uint64
		for _, opt := range f[1:] {
			if strings.HasPrefix(opt, "drop=") {
				for _, s := range strings.Split(strings.TrimPrefix(opt, "drop="), ",") {
					drop = append(drop, e.id(s))
				}
			}
		}
		e.deliver(drop)
	case "stabilize":
		for i := 0; i < 100; i++ {
			busy := false
			for _, id := range e.ids {
				if e.nodes[id].r.HasReady() {
					e.processReady(id)
					busy = true
				}
			}
			if len(e.queue) > 0 {
				e.deliver(nil)
				busy = true
			}
			if !busy {
				break
			}
		}
	case "compact":
		idx, _ := strconv.ParseUint(f[2], 10, 64)
		n := e.nodes[e.id(f[1])]
		e.check(n.r.Compact(idx))
		sn := *n.r.Snapshot()
		n.log = n.log[idx-snapIndex(n.snap):]
		n.snap = &sn
		e.printf("snapshot index %d term %d voters %v learners %v", sn.Index, sn.Term, sn.Voters, sn.Learners)
	case "report-unreachable":
		e.node(f[1]).ReportUnreachable(e.id(f[2]))
		e.printf("ok")
	case "report-snapshot":
		e.node(f[1]).ReportSnapshot(e.id(f[2]), f[3] == "ok")
		e.printf("ok")
	case "isolate":
		e.isolated[e.id(f[1])] = true
	case "heal":
		e.isolated = map[uint64]bool{}
	case "status":
		st := e.node(f[1]).Status()
		e.printf("%d: %v term %d vote %d lead %d commit %d applied %d last %d", st.ID, st.State, st.Term, st.Vote, st.Lead, st.Commit, st.Applied, st.LastIndex)
		for _, id := range e.ids {
			if p, ok := st.Progress[id]; ok {
				mode := "probe"
				switch {
				case p.Replicating:
					mode = "replicate"
				case p.Snapshot != 0:
					mode = fmt.Sprintf("snapshot %d", p.Snapshot)
				}
				e.printf("\n  %d: match %d next %d %s", id, p.Match, p.Next, mode)
			}
		}
	case "log":
		n := e.nodes[e.id(f[1])]
		l := n.r.log
		e.printf("offset %d", l.offset)
		for i := l.offset + 1; i <= l.lastIndex(); i++ {
			e.printf("\n%s", fmtEntry(*l.at(i)))
		}
	default:
		e.t.Fatalf("unknown command %q", cmd)
	}
	return e.out.String()
}

func (e *interactionEnv) start(id uint64) {
	n := e.nodes[id]
	r, err := New(Config{ID: id, Peers: e.peers, Learners: e.learners, ElectionTick: 10, HeartbeatTick: 1,
		Rand: rand.New(rand.NewSource(int64(id))), PreVote: e.prevote, CheckQuorum: e.cq,
		Snapshot: n.snap, HardState: n.hs, Entries: n.log, Applied: snapIndex(n.snap)})
	if err != nil {
		e.t.Fatal(err)
	}
	n.r = r
}

func (e *interactionEnv) node(s string) *Raft { return e.nodes[e.id(s)].r }

func (e *interactionEnv) check(err error) {
	if err != nil {
		e.printf("error: %v\n", err)
	}
}

// stateChange prints a node's role change since before, if any.
func (e *interactionEnv) stateChange(id uint64, before Status) {
	after := e.nodes[id].r.Status()
	if after.State != before.State || after.Term != before.Term {
		e.printf("%d: %v term %d -> %v term %d\n", id, before.State, before.Term, after.State, after.Term)
	}
}

func (e *interactionEnv) processReady(id uint64) {
	n := e.nodes[id]
	if !n.r.HasReady() {
		return
	}
	rd := n.r.Ready()
	e.printf("> %d handling Ready\n", id)
	if s := rd.Snapshot; s != nil {
		e.printf("  Snapshot index %d term %d voters %v learners %v\n", s.Index, s.Term, s.Voters, s.Learners)
		cp := *s
		n.snap, n.log = &cp, nil
	}
	if hs := rd.HardState; hs != nil {
		e.printf("  HardState term %d vote %d commit %d\n", hs.Term, hs.Vote, hs.Commit)
		n.hs = *hs
	}
	for _, en := range rd.Entries {
		e.printf("  Entry %s\n", fmtEntry(en))
	}
	if len(rd.Entries) > 0 {
		first := rd.Entries[0].Index
		n.log = append(n.log[:first-snapIndex(n.snap)-1], rd.Entries...)
	}
	for _, m := range rd.Messages {
		e.printf("  Send %v\n", m)
		e.queue = append(e.queue, m)
	}
	for _, m := range rd.MessagesAfterPersist {
		e.printf("  Send after persist %v\n", m)
		e.queue = append(e.queue, m)
	}
	for _, en := range rd.CommittedEntries {
		e.printf("  Apply %s\n", fmtEntry(en))
	}
	for _, rs := range rd.ReadStates {
		e.printf("  Read %q at index %d\n", rs.RequestCtx, rs.Index)
	}
	n.r.Advance(rd)
}

// deliver hands every queued message to its recipient, in order.
func (e *interactionEnv) deliver(drop []uint64) {
	q := e.queue
	e.queue = nil
	for _, m := range q {
		if slices.Contains(drop, m.From) || slices.Contains(drop, m.To) || e.isolated[m.From] || e.isolated[m.To] {
			e.printf("dropped %v\n", m)
			continue
		}
		before := e.nodes[m.To].r.Status()
		if err := e.nodes[m.To].r.Step(m); err != nil {
			e.printf("%v: %v\n", m, err)
		}
		e.stateChange(m.To, before)
	}
}

func fmtEntry(en Entry) string {
	switch {
	case en.Type == EntryConfChange:
		cc, err := DecodeConfChange(en.Data)
		if err != nil {
			return fmt.Sprintf("%d/%d conf-change (bad)", en.Term, en.Index)
		}
		name := map[ConfChangeType]string{ConfAddVoter: "add-voter", ConfAddLearner: "add-learner", ConfRemove: "remove", ConfUpdate: "update"}[cc.Type]
		return fmt.Sprintf("%d/%d conf-change %s %d", en.Term, en.Index, name, cc.NodeID)
	case len(en.Data) == 0:
		return fmt.Sprintf("%d/%d empty", en.Term, en.Index)
	}
	return fmt.Sprintf("%d/%d %q", en.Term, en.Index, en.Data)
}
