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
#   MEMBERS=3 bench/server.sh       # three members a server (CPU summed over
#                                   # them), and first FAILOVERS=10 leader kills
#                                   # each, timed to the first write acknowledged
#   WORKLOADS="put-1 range-l" FAILOVERS=0 MEMBERS=3 bench/server.sh
#                                   # some of the workloads, no failovers
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
WORKLOADS=${WORKLOADS:-put-1000 put-1 range-l range-s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "building cairn, etcd 3.5 and etcd's benchmark tool..." >&2
(cd .. && go build -o "$work/cairn" ./cmd/cairn)
(cd etcd35 && go build -o "$work/etcd" go.etcd.io/etcd/server/v3 && go build -o "$work/benchmark" go.etcd.io/etcd/v3/tools/benchmark)
ver=$("$work/etcd" --version)
echo "${ver%%$'\n'*}" >&2

MEMBERS=${MEMBERS:-1}      # members per server: 1, or a cluster of 3 (or 5)
port=23790
# start NAME: runs a server of MEMBERS members on fresh data dirs; sets
# PIDS (one per member) and EP (their client URLs, comma-separated).
start() {
	local name=$1 run="$work/data-$1-$RANDOM" i
	local clients=() peers=() initial=()
	for i in $(seq "$MEMBERS"); do
		port=$((port + 2))
		clients+=("http://127.0.0.1:$port")
		peers+=("http://127.0.0.1:$((port + 1))")
		initial+=("m$i=http://127.0.0.1:$((port + 1))")
	done
	local cluster token="bench-$RANDOM"
	cluster=$(IFS=,; echo "${initial[*]}")
	PIDS=()
	for i in $(seq 0 $((MEMBERS - 1))); do
		"$work/$name" --name "m$((i + 1))" --data-dir "$run/m$i" --listen-client-urls "${clients[$i]}" --advertise-client-urls "${clients[$i]}" \
			--initial-advertise-peer-urls "${peers[$i]}" --listen-peer-urls "${peers[$i]}" --initial-cluster "$cluster" \
			--initial-cluster-token "$token" \
			--quota-backend-bytes 8589934592 --log-level error >"$work/$name.$i.log" 2>&1 &
		PIDS+=($!)
	done
	EP=$(IFS=,; echo "${clients[*]}")
	local u
	for u in "${clients[@]}"; do
		for _ in $(seq 100); do
			if curl -fs "$u/health" >/dev/null 2>&1; then continue 2; fi
			sleep 0.1
		done
		echo "$name did not become healthy" >&2
		cat "$work/$name".*.log >&2
		exit 1
	done
}
stop() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	# (quietly: the shell would report a member killed with SIGKILL)
	for p in "${PIDS[@]}"; do { wait "$p"; } 2>/dev/null || true; done
}

# cpu: the server's user+system time in clock ticks, summed over its
# members' processes.
cpu() {
	local p t=0
	for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
	echo "$t"
}
tck=$(getconf CLK_TCK)

# run IMPL WORKLOAD: one measured run; prints "IMPL WORKLOAD req/s avg_ms
# cpu_us_per_op tool_cpu_us_per_op" (the last: the benchmark tool's own CPU,
# which shares the two cores with the servers).
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
		curl -fs -X POST "${EP%%,*}/v3/kv/put" -d '{"key":"aw==","value":"'"$(head -c 256 /dev/zero | base64 -w0)"'"}' >/dev/null
	fi
	local before after out
	before=$(cpu)
	# (bash's time: the benchmark tool's own user+system CPU)
	out=$({ TIMEFORMAT='tool-cpu %U %S'; time "$work/benchmark" --precise --endpoints="$EP" "${args[@]}" 2>&1; } 2>&1)
	after=$(cpu)
	stop
	local rps avg
	rps=$(awk '/Requests\/sec:/ {print $2}' <<<"$out")
	avg=$(awk '/Average:/ {print $2 * 1000}' <<<"$out")
	local cpuus
	cpuus=$(awk -v a="$after" -v b="$before" -v t="$tck" -v n="$total" 'BEGIN {printf "%.1f", (a - b) / t * 1e6 / n}')
	local toolus
	toolus=$(awk -v n="$total" '/^tool-cpu/ {printf "%.1f", ($2 + $3) * 1e6 / n}' <<<"$out")
	echo "$impl $wl $rps $avg $cpuus $toolus"
}

# failover IMPL: starts a cluster, kills its leader with SIGKILL, and
# prints the milliseconds until a write is first acknowledged by a
# surviving member (every 10 ms, each try bounded at 500 ms).
failover() {
	local impl=$1 i leader=-1 st lead id
	start "$impl"
	IFS=, read -r -a eps <<<"$EP"
	curl -fs -X POST "${eps[0]}/v3/kv/put" -d '{"key":"Zg==","value":"MA=="}' >/dev/null
	for i in "${!eps[@]}"; do
		st=$(curl -fs -X POST "${eps[$i]}/v3/maintenance/status" -d '{}')
		lead=$(grep -o '"leader":"[0-9]*"' <<<"$st" | tr -dc 0-9)
		id=$(grep -o '"member_id":"[0-9]*"' <<<"$st" | tr -dc 0-9)
		if [[ -n $lead && $lead == "$id" ]]; then leader=$i; fi
	done
	if ((leader < 0)); then echo "$impl: no leader found" >&2; stop; return; fi
	kill -9 "${PIDS[$leader]}"
	local t0 t1 e
	t0=$(date +%s%N)
	while :; do
		for i in "${!eps[@]}"; do
			((i == leader)) && continue
			if curl -fs -m 0.5 -X POST "${eps[$i]}/v3/kv/put" -d '{"key":"Zg==","value":"MQ=="}' | grep -q '"header"'; then
				t1=$(date +%s%N)
				break 2
			fi
		done
		sleep 0.01
		if (( ($(date +%s%N) - t0) / 1000000 > 30000 )); then echo "$impl: no write within 30 s of the kill" >&2; break; fi
	done
	stop
	[[ -n ${t1:-} ]] && echo "$impl failover $(( (t1 - t0) / 1000000 ))"
}

FAILOVERS=${FAILOVERS:-10}
if ((MEMBERS > 1 && FAILOVERS > 0)); then
	fo="$work/failover"
	for i in $(seq "$FAILOVERS"); do
		for impl in cairn etcd; do failover "$impl" | tee -a "$fo"; done
	done
	for impl in cairn etcd; do
		echo "$impl: failover, kill -9 of the leader to the first acknowledged write, median of $FAILOVERS: $(awk -v i="$impl" '$1 == i {print $3}' "$fo" | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}') ms"
	done
fi

results="$work/results"
for i in $(seq "$COUNT"); do
	for wl in $WORKLOADS; do
		for impl in cairn etcd; do
			run "$impl" "$wl" | tee -a "$results"
		done
	done
done

echo
echo "medians of $COUNT runs (req/s, average latency ms, server CPU µs per request); each ratio is the"
echo "median of the $COUNT rounds' cairn/etcd ratios (a round runs cairn, then etcd, back to back);"
echo "tool-c, tool-e: the benchmark tool's own CPU µs per request against cairn, etcd"
printf "%-9s %12s %12s %7s %10s %10s %7s %9s %9s %7s %7s %7s\n" workload cairn-req/s etcd-req/s ratio cairn-ms etcd-ms ratio cairn-cpu etcd-cpu ratio tool-c tool-e
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }
for wl in $WORKLOADS; do
	get() { awk -v i="$1" -v w="$wl" -v c="$2" '$1 == i && $2 == w {print $c}' "$results" | median; }
	# ratio COLUMN: the median over rounds of cairn's value over etcd's in
	# the same round (lines alternate cairn, etcd per workload).
	ratio() {
		awk -v w="$wl" -v c="$1" '$2 == w && $1 == "cairn" {x = $c} $2 == w && $1 == "etcd" {print x / $c}' "$results" | median
	}
	cr=$(get cairn 3) er=$(get etcd 3) cl=$(get cairn 4) el=$(get etcd 4) cc=$(get cairn 5) ec=$(get etcd 5) tc=$(get cairn 6) te=$(get etcd 6)
	rr=$(ratio 3) rl=$(ratio 4) rc=$(ratio 5)
	awk -v w="$wl" -v cr="$cr" -v er="$er" -v cl="$cl" -v el="$el" -v cc="$cc" -v ec="$ec" -v rr="$rr" -v rl="$rl" -v rc="$rc" -v tc="$tc" -v te="$te" 'BEGIN {
		printf "%-9s %12.0f %12.0f %7.2f %10.3f %10.3f %7.2f %9.1f %9.1f %7.2f %7.1f %7.1f\n", w, cr, er, rr, cl, el, rl, cc, ec, rc, tc, te }'
done
