#!/usr/bin/env bash
# Places the slow puts of a bench/storage.sh round against the server's heap
# collections and its defragmentations:
#
#   GCTRACE=1 SAMPLES=s LOGS=l IMPLS=cairn COUNT=1 bench/storage.sh
#   bench/slowputs.sh s/cairn-1.txt l/cairn-1.log
#
# SAMPLES holds every put of the churn (when it was due, in Unix ms, and its
# latency in ms); LOG is the server's log, with gctrace's lines (each
# collection's start, in seconds since the process started, and its phases)
# and, beside it, LOG's .start file (the process's start in Unix ms, written
# by storage.sh; to within about 50 ms). The defragmentations are read from
# the log's lines (cairn's and etcd 3.5's). It prints, for puts due during a
# defragmentation and the others, how many took over 20 and over 40 ms, due
# during a collection's mark phase or not; then the slowest puts (the
# slowest of each 250 ms) with the collection nearest to each. Times are in
# seconds since the server started.
set -euo pipefail
samples=$1 log=$2 over=${OVER:-40}
start=${log%.log}.start
[[ -f $start ]] || { echo "no $start (bench/storage.sh with LOGS writes it)" >&2; exit 1; }
t0=$(cat "$start")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Collections: start (Unix ms) and mark phase (ms), from
# "gc N @S.SSSs P%: A+B+C ms clock, ...".
awk '$1 == "gc" && $3 ~ /^@/ {
	at = substr($3, 2); sub(/s$/, "", at); split($5, p, "+")
	printf "%.0f %s\n", at * 1000, p[2]
}' "$log" >"$work/gc"
# Defragmentations: start and end (ms since the start), from the log's
# JSON "ts".
grep -E '"msg":"(defragmenting the page file|defragmented the page file|defragmenting|finished defragmenting directory)"' "$log" |
	sed -E 's/.*"ts":"([^"]*)".*"msg":"([^"]*)".*/\1 \2/' |
	while read -r ts msg; do
		case $msg in
		defragmenting*) echo "begin $(($(date -d "$ts" +%s%3N) - t0))" ;;
		*) echo "end $(($(date -d "$ts" +%s%3N) - t0))" ;;
		esac
	done >"$work/defrag"
echo "collections: $(wc -l <"$work/gc"); defragmentations: $(grep -c begin "$work/defrag" || true)"

awk -v over="$over" -v t0="$t0" '
FILENAME == ARGV[1] { gs[++ng] = $1; gm[ng] = $2; next }
FILENAME == ARGV[2] { if ($1 == "begin") ds[++nd] = $2; else de[nd] = $2; next }
# The puts, in the order they were due.
{
	t = $1 - t0; w = "other"
	for (i = 1; i <= nd; i++) if (t >= ds[i] && (!(i in de) || t < de[i])) w = "defrag"
	# Collections start in order: find the last one started by t.
	while (g < ng && gs[g + 1] <= t) g++
	mark = (g > 0 && t <= gs[g] + gm[g]) ? "in a mark" : "outside marks"
	k = w " " mark; n[k]++; if ($2 > 20) a[k]++; if ($2 > 40) b[k]++
	if ($2 > over) {
		s = int(t / 250)
		if (!(s in worst) || $2 > worst[s]) {
			worst[s] = $2; due[s] = t; win[s] = w
			c = (g < ng && (g == 0 || gs[g + 1] - t < t - gs[g])) ? g + 1 : g # the nearest collection
			near[s] = c > 0 ? sprintf("%+d ms from the start of a collection (mark %s ms)", t - gs[c], gm[c]) : ""
		}
	}
}
END {
	printf "%-22s %9s %10s %10s\n", "puts due", "count", "over 20ms", "over 40ms"
	for (k in n) printf "%-22s %9d %5d %4.2f%% %10d\n", k, n[k], a[k], 100 * a[k] / n[k], b[k]
	printf "\nthe slowest of each 250 ms over %s ms: due (s), window, latency (ms), nearest collection\n", over
	for (s in worst) printf "%.3f %s %.1f %s\n", due[s] / 1000, win[s], worst[s], near[s] | "sort -n"
}' "$work/gc" "$work/defrag" <(sort -n "$samples")
