#!/usr/bin/env bash
# Runs every Go fuzz target in the repository for the given time each
# (default 60s). Found failures are written under the package's
# testdata/fuzz/<Target>/ as Go does; commit them as regression seeds.
# Minimizing is held to 10s an input (Go's default is 60s): the page file's
# inputs are files of 100 kB, and minimizing every new one for a minute
# left a 10-minute run a few hundred executions.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${1:-60s}"
status=0
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "== $pkg $target ($fuzztime)"
		go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 10s || status=1
	done
done
exit $status
