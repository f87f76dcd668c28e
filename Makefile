# cairn's build and test entry points. `make test` is what CI runs.

GO        ?= go
BENCHSTAT ?= $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
COUNT     ?= 6
BENCH     ?= .
FUZZTIME  ?= 60s
TIME      ?= 10m
TARGET    ?= cairn
NEMESIS   ?= all
WORKLOAD  ?= register,bank,watch

.PHONY: test vet unit invariants race bench-smoke e2e k8s bench fuzz jepsen jepsen-matrix etcd

# The whole CI suite: vet, unit tests, the same tests with expensive
# invariants compiled in, the storage packages under the race detector, and
# one iteration of every benchmark so they keep compiling and running, the
# end-to-end tests of the binary with etcd's etcdctl, and Kubernetes' own
# storage tests against the binary.
test: vet unit invariants race bench-smoke e2e k8s

vet:
	$(GO) vet ./...
	cd bench && $(GO) vet ./...
	cd e2e && $(GO) vet ./...
	cd k8s && $(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

# The tag turns on assertions in pagefile/ only, so the pass runs the
# packages whose tests link the page file, and jepsen/, which builds the
# binary it drives with the tag.
INVARIANT_PKGS = ./pagefile/... ./engine/... ./server/... ./fuzz/... ./cmd/cairn/... ./cmd/cairnctl/... ./jepsen/...

invariants:
	$(GO) test -count=1 -tags invariants $(INVARIANT_PKGS)

# The server's tests run one at a time and use about one core under the race
# detector, so its cluster and membership tests run in a process of their
# own beside the storage packages and then the server's other tests (a
# test's failpoints and hooks are its process's).
RACE_PKGS  = ./internal/... ./pagefile/... ./wal/... ./btreeindex/... ./engine/...
RACE_APART = ^Test(Cluster|Membership)

race:
	@$(GO) test -count=1 -race ./server -run '$(RACE_APART)' & apart=$$!; \
	r=0; $(GO) test -count=1 -race $(RACE_PKGS) || r=1; \
	$(GO) test -count=1 -race ./server/... -skip '$(RACE_APART)' || r=1; \
	a=0; wait $$apart || a=1; \
	test $$a -eq 0 && test $$r -eq 0

# The cairn binary driven by etcdctl v3.5 (built from the e2e module).
e2e:
	cd e2e && $(GO) test -count=1 ./...

# Kubernetes' generic storage tests (k8s.io/apiserver) on its etcd3 store,
# against the cairn binary (the k8s module); K8S_STORAGE_BINARY=bin/etcd
# runs them against etcd 3.5 instead.
k8s:
	cd k8s && $(GO) test -count=1 ./...

bench-smoke:
	cd bench && $(GO) test -count=1 -run '^$$' -bench '$(BENCH)' -benchtime=1x -short ./...

# Side-by-side benchmarks (cairn beside bbolt/etcd in one process), in
# COUNT passes so that each pass runs ours and the comparator back to back
# (a drift in the machine then hits both), summarised by benchstat with one
# column per implementation (the name's <impl> part is read as impl=<impl>).
bench:
	cd bench && $(GO) test -c -o bench.test . && rm -f bench.txt && \
	for i in $$(seq $(COUNT)); do ./bench.test -test.run '^$$' -test.bench '$(BENCH)' -test.timeout=120m | tee -a bench.txt; done
	cd bench && sed -E 's#^(Benchmark[A-Za-z]+)/(cairn|bbolt|etcd)/#\1/impl=\2/#' bench.txt > bench.impl.txt && \
	$(BENCHSTAT) -col /impl bench.impl.txt

# Every fuzz target for FUZZTIME each (corpora persist in the Go cache).
fuzz:
	./fuzz/run.sh $(FUZZTIME)

# The fault-injection harness (jepsen/, cmd/jepsen) for TIME against
# TARGET (cairn, or etcd: bin/etcd, built by `make etcd`), every nemesis
# in turn; the run's folder lands under jepsen-runs/. Add flags with
# JEPSENFLAGS (--members 5, --seed N, --interval, --duration, --profile).
jepsen: $(if $(filter etcd,$(TARGET)),etcd)
	$(GO) run ./cmd/jepsen --target $(TARGET) $(if $(filter etcd,$(TARGET)),--binary bin/etcd) \
		--time $(TIME) --nemesis $(NEMESIS) --workload $(WORKLOAD) $(JEPSENFLAGS)

# Every nemesis (of NEMESIS) × every workload, TIME a cell, each cell run
# on cairn and then on etcd 3.5, and the table (also in the run's
# matrix.txt). NEMESIS=kill,pause runs part of it.
jepsen-matrix: etcd
	$(GO) run ./cmd/jepsen --matrix --beside-etcd bin/etcd \
		--time $(TIME) --nemesis $(NEMESIS) --workload all $(JEPSENFLAGS)

# etcd 3.5, for the harness's side-by-side runs (from bench/etcd35's pin).
etcd:
	cd bench/etcd35 && $(GO) build -o ../../bin/etcd go.etcd.io/etcd/server/v3
