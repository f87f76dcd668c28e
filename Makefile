# cairn's build and test entry points. `make test` is what CI runs.

GO        ?= go
BENCHSTAT ?= $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
COUNT     ?= 6
BENCH     ?= .
FUZZTIME  ?= 60s

.PHONY: test vet unit invariants race bench-smoke bench fuzz

# The whole CI suite: vet, unit tests, the same tests with expensive
# invariants compiled in, the storage packages under the race detector, and
# one iteration of every benchmark so they keep compiling and running.
test: vet unit invariants race bench-smoke

vet:
	$(GO) vet ./...
	cd bench && $(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

invariants:
	$(GO) test -count=1 -tags invariants ./...

race:
	$(GO) test -count=1 -race ./internal/... ./pagefile/...

bench-smoke:
	cd bench && $(GO) test -count=1 -run '^$$' -bench '$(BENCH)' -benchtime=1x -short ./...

# Side-by-side benchmarks (cairn beside bbolt/etcd in one run), COUNT runs
# each, summarised by benchstat with one column per implementation.
bench:
	cd bench && $(GO) test -run '^$$' -bench '$(BENCH)' -count=$(COUNT) -timeout=120m ./... | tee bench.txt
	cd bench && $(BENCHSTAT) -col /impl bench.txt

# Every fuzz target for FUZZTIME each (corpora persist in the Go cache).
fuzz:
	./fuzz/run.sh $(FUZZTIME)
