#!/usr/bin/env bash
# Storage under churn, one cairn member beside one etcd 3.5 member
# (bench/etcd35/storage): LOAD puts of VALUE random bytes over KEYS keys,
# then RATE puts a second (open loop, CLIENTS at a time, default 100)
# during which the member compacts physically at the current revision and
# then defragments. Put
# latency is reported per window (base: before the compaction; compact:
# during it; post: after it; defrag: during the defragmentation; end:
# after it), with the file's size after the load, after the churn and
# after the defragmentation. COUNT rounds, cairn then etcd in each, on
# fresh data directories.
#
#   bench/storage.sh                          # COUNT=3 KEYS=100000 LOAD=300000 VALUE=1024 RATE=2000
#   COUNT=1 LOAD=100000 bench/storage.sh      # a quick look
#   KEYS=2000000 LOAD=2000000 CLIENTS=1000 bench/storage.sh   # a 2 GiB file
#   COMPACT=0 DEFRAGS=3 KEYS=2000000 LOAD=2000000 CLIENTS=1000 bench/storage.sh
#       # no compaction: three defragmentations of the loaded file, each a
#       # defrag and an end window (medians over all of them)
#   SAMPLES=dir LOGS=dir GCTRACE=1 bench/storage.sh
#       # every put's latency, and the servers' logs with their collections:
#       # bench/slowputs.sh places the slow puts against them
set -euo pipefail
cd "$(dirname "$0")"
COUNT=${COUNT:-3}
KEYS=${KEYS:-100000}
LOAD=${LOAD:-300000}
VALUE=${VALUE:-1024}
RATE=${RATE:-2000}
CLIENTS=${CLIENTS:-100}
SETTLE=${SETTLE:-10s}
AFTER=${AFTER:-20s}
IMPLS=${IMPLS:-cairn etcd}
SAMPLES=${SAMPLES:-} # a folder: every put of the churn, per round (storage --samples)
SERVER_FLAGS=${SERVER_FLAGS:-} # more flags for both servers, e.g. --enable-pprof
LOGS=${LOGS:-} # a folder: each round's server log, as IMPL-ROUND.log, and its start (IMPL-ROUND.start, Unix ms)
GCTRACE=${GCTRACE:-0} # 1: the servers (only) run with GODEBUG=gctrace=1, a line a heap collection in their logs
COMPACT=${COMPACT:-1}
DEFRAGS=${DEFRAGS:-1}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "building cairn, etcd 3.5 and storage..." >&2
# Built without the caller's GODEBUG: the compiler's own gctrace lines
# would be kept in the build cache and printed by every later build.
(cd .. && env -u GODEBUG go build -o "$work/cairn" ./cmd/cairn)
(cd etcd35 && env -u GODEBUG go build -o "$work/etcd" go.etcd.io/etcd/server/v3 && env -u GODEBUG go build -o "$work/storage" ./storage)
godebug=${GODEBUG:-}
[[ $GCTRACE == 1 ]] && godebug=${godebug:+$godebug,}gctrace=1

port=25790
# round IMPL: prints "IMPL" lines of the storage command's output.
round() {
	local impl=$1 dir="$work/data-$1-$RANDOM"
	port=$((port + 2))
	local c1="http://127.0.0.1:$port" p1="http://127.0.0.1:$((port + 1))"
	env GODEBUG="$godebug" "$work/$impl" --name m1 --data-dir "$dir" --listen-client-urls "$c1" --advertise-client-urls "$c1" \
		--listen-peer-urls "$p1" --initial-advertise-peer-urls "$p1" --initial-cluster "m1=$p1" \
		--quota-backend-bytes 8589934592 --log-level info ${SERVER_FLAGS:-} >"$work/$impl.log" 2>&1 &
	local pid=$!
	if [[ -n $LOGS ]]; then
		# The server's start in Unix milliseconds (gctrace's times count
		# from it), to within about 50 ms: /proc's start time in clock ticks
		# after boot, against the time since boot now.
		mkdir -p "$LOGS"
		local now up
		now=$(date +%s%3N) up=$(awk '{print $1}' /proc/uptime)
		awk -v now="$now" -v up="$up" -v hz="$(getconf CLK_TCK)" \
			'{sub(/.*\) /, ""); printf "%.0f\n", now - (up - $20 / hz) * 1000}' "/proc/$pid/stat" >"$LOGS/$impl-$i.start"
	fi
	for _ in $(seq 100); do curl -fs "$c1/health" >/dev/null 2>&1 && break; sleep 0.1; done
	local out samples=()
	[[ -n $SAMPLES ]] && mkdir -p "$SAMPLES" && samples=(--samples "$SAMPLES/$impl-$i.txt")
	if ! out=$("$work/storage" --endpoint "$c1" --keys "$KEYS" --load "$LOAD" --value "$VALUE" --rate "$RATE" --clients "$CLIENTS" \
		--settle "$SETTLE" --after "$AFTER" --compact="$COMPACT" --defrags "$DEFRAGS" "${samples[@]}"); then
		echo "$impl: the run failed" >&2
		grep -m1 -A60 -E "^(panic|fatal error)" "$work/$impl.log" >&2 || tail -20 "$work/$impl.log" >&2
	fi
	# The member's own account of its defragmentation.
	grep -h -m"$DEFRAGS" -E '"msg":"(defragmented the page file|finished defragmenting directory)"' "$work/$impl.log" >&2 || true
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	[[ -n $LOGS ]] && mkdir -p "$LOGS" && cp "$work/$impl.log" "$LOGS/$impl-$i.log"
	rm -rf "$dir"
	[[ -n $out ]] && sed "s/^/$impl /" <<<"$out"
}

results="$work/results"
for i in $(seq "$COUNT"); do
	for impl in $IMPLS; do round "$impl" | tee -a "$results"; done
done

echo
echo "medians of $COUNT rounds: put latency (ms) by window, sizes (bytes), calls (ms); ratio = cairn/etcd"
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }
get() { awk -v i="$1" -v k="$2" -v n="$3" -v c="$4" '$1 == i && $2 == k && $3 == n {print $c}' "$results" | median; }
row() {
	local name=$1 kind=$2 sub=$3 col=$4 c e
	c=$(get cairn "$kind" "$sub" "$col") e=$(get etcd "$kind" "$sub" "$col")
	awk -v n="$name" -v c="${c:-0}" -v e="${e:-0}" 'BEGIN {printf "%-16s %14.2f %14.2f %7.2f\n", n, c, e, (e > 0 ? c / e : 0)}'
}
printf "%-16s %14s %14s %7s\n" measure cairn etcd ratio
for w in base compact post defrag end; do
	row "$w p50" window "$w" 5
	row "$w p99" window "$w" 6
	row "$w max" window "$w" 7
done
for s in loaded churned defragmented; do row "size $s" size "$s" 4; done
for c in compact defrag; do row "call $c" call "$c" 4; done
