#!/usr/bin/env bash
# Measures one cairn member beside one etcd 3.5 member with etcd's own
# benchmark tool: key 8 B, value 256 B; put with 1,000 clients over 100
# connections, put with 1 client, linearizable and serializable range with
# 1,000 clients. Each workload runs COUNT times, cairn and etcd back to back
# on fresh data directories, each server alone on 127.0.0.1. Server CPU time
# (user + system, from /proc/<pid>/stat) is read before and after each run.
#
#   bench/server.sh                 # COUNT=5 TOTAL=100000 TOTAL1=5000
#   COUNT=3 TOTAL=30000 bench/server.sh
#
# Short runs overstate both servers' CPU a request with what a run costs
# whatever its length (connections, buffers, the heap's growth): range-s at
# 10,000 requests cost cairn 23.0 and etcd 54.0 µs a read, at 100,000 16.5
# and 44.4.
#
# Output: one line per run, then a summary table: medians, and for each
# ratio the median over rounds of cairn/etcd within a round (the two runs
# of a round are back to back, so a drift of the machine between rounds
# cancels).
set -euo pipefail
cd "$(dirname "$0")"
COUNT=${COUNT:-5}
TOTAL=${TOTAL:-100000}      # requests per many-client run
TOTAL1=${TOTAL1:-5000}      # requests per one-client run
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "building cairn, etcd 3.5 and etcd's benchmark tool..." >&2
(cd .. && go build -o "$work/cairn" ./cmd/cairn)
(cd etcd35 && go build -o "$work/etcd" go.etcd.io/etcd/server/v3 && go build -o "$work/benchmark" go.etcd.io/etcd/v3/tools/benchmark)
ver=$("$work/etcd" --version)
echo "${ver%%$'\n'*}" >&2

port=23790
# start NAME: runs the server on a fresh data dir; sets PID and EP.
start() {
	local name=$1 dir="$work/data-$1-$RANDOM"
	port=$((port + 2))
	EP="http://127.0.0.1:$port"
	local peer="http://127.0.0.1:$((port + 1))"
	"$work/$name" --name bench --data-dir "$dir" --listen-client-urls "$EP" --advertise-client-urls "$EP" \
		--initial-advertise-peer-urls "$peer" --listen-peer-urls "$peer" --initial-cluster "bench=$peer" \
		--quota-backend-bytes 8589934592 --log-level error >"$work/$name.log" 2>&1 &
	PID=$!
	for _ in $(seq 100); do
		if curl -fs "$EP/health" >/dev/null 2>&1; then return; fi
		sleep 0.1
	done
	echo "$name did not become healthy" >&2
	cat "$work/$name.log" >&2
	exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; }

# cpu PID: the process's user+system time in clock ticks.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)

# run IMPL WORKLOAD: one measured run; prints "IMPL WORKLOAD req/s avg_ms cpu_us_per_op".
run() {
	local impl=$1 wl=$2 args total
	case $wl in
	put-1000) total=$TOTAL; args=(--conns=100 --clients=1000 put --key-size=8 --val-size=256 --sequential-keys --key-space-size=100000 --total=$total) ;;
	put-1) total=$TOTAL1; args=(--conns=1 --clients=1 put --key-size=8 --val-size=256 --sequential-keys --key-space-size=100000 --total=$total) ;;
	range-l) total=$TOTAL; args=(--conns=100 --clients=1000 range k --consistency=l --total=$total) ;;
	range-s) total=$TOTAL; args=(--conns=100 --clients=1000 range k --consistency=s --total=$total) ;;
	esac
	start "$impl"
	if [[ $wl == range-* ]]; then
		# The key the ranges read: "k", a 256-byte value.
		curl -fs -X POST "$EP/v3/kv/put" -d '{"key":"aw==","value":"'"$(head -c 256 /dev/zero | base64 -w0)"'"}' >/dev/null
	fi
	local before after out
	before=$(cpu "$PID")
	out=$("$work/benchmark" --precise --endpoints="$EP" "${args[@]}" 2>&1)
	after=$(cpu "$PID")
	stop
	local rps avg
	rps=$(awk '/Requests\/sec:/ {print $2}' <<<"$out")
	avg=$(awk '/Average:/ {print $2 * 1000}' <<<"$out")
	local cpuus
	cpuus=$(awk -v a="$after" -v b="$before" -v t="$tck" -v n="$total" 'BEGIN {printf "%.1f", (a - b) / t * 1e6 / n}')
	echo "$impl $wl $rps $avg $cpuus"
}

results="$work/results"
for i in $(seq "$COUNT"); do
	for wl in put-1000 put-1 range-l range-s; do
		for impl in cairn etcd; do
			run "$impl" "$wl" | tee -a "$results"
		done
	done
done

echo
echo "medians of $COUNT runs (req/s, average latency ms, server CPU µs per request); each ratio is the"
echo "median of the $COUNT rounds' cairn/etcd ratios (a round runs cairn, then etcd, back to back)"
printf "%-9s %12s %12s %7s %10s %10s %7s %9s %9s %7s\n" workload cairn-req/s etcd-req/s ratio cairn-ms etcd-ms ratio cairn-cpu etcd-cpu ratio
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }
for wl in put-1000 put-1 range-l range-s; do
	get() { awk -v i="$1" -v w="$wl" -v c="$2" '$1 == i && $2 == w {print $c}' "$results" | median; }
	# ratio COLUMN: the median over rounds of cairn's value over etcd's in
	# the same round (lines alternate cairn, etcd per workload).
	ratio() {
		awk -v w="$wl" -v c="$1" '$2 == w && $1 == "cairn" {x = $c} $2 == w && $1 == "etcd" {print x / $c}' "$results" | median
	}
	cr=$(get cairn 3) er=$(get etcd 3) cl=$(get cairn 4) el=$(get etcd 4) cc=$(get cairn 5) ec=$(get etcd 5)
	rr=$(ratio 3) rl=$(ratio 4) rc=$(ratio 5)
	awk -v w="$wl" -v cr="$cr" -v er="$er" -v cl="$cl" -v el="$el" -v cc="$cc" -v ec="$ec" -v rr="$rr" -v rl="$rl" -v rc="$rc" 'BEGIN {
		printf "%-9s %12.0f %12.0f %7.2f %10.3f %10.3f %7.2f %9.1f %9.1f %7.2f\n", w, cr, er, rr, cl, el, rl, cc, ec, rc }'
done
