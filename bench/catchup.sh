#!/usr/bin/env bash
# A learner added to a member holding about 1 GiB catches up, cairn beside
# etcd 3.5: one member is loaded with KEYS keys of VALUE bytes (etcd's
# benchmark tool), a learner is added (the JSON gateway's member add) and
# started with --initial-cluster-state existing; it gets the leader's
# snapshot, installs it and replays the log after it. Measured (catchup,
# bench/etcd35/catchup): the time from its start until its applied index
# reaches the leader's index at that moment, and the latency of the puts
# the leader takes meanwhile at RATE a second (open loop). COUNT rounds,
# cairn then etcd in each, on fresh data directories.
#
#   bench/catchup.sh                       # COUNT=3 KEYS=1000000 VALUE=1024 RATE=200
#   COUNT=1 KEYS=100000 bench/catchup.sh   # a quick look
#
# The benchmark tool writes one value for every key, which compresses
# well: cairn's snapshot stream is zstd-compressed, etcd's is not.
set -euo pipefail
cd "$(dirname "$0")"
COUNT=${COUNT:-3}
KEYS=${KEYS:-1000000}
VALUE=${VALUE:-1024}
RATE=${RATE:-200}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "building cairn, etcd 3.5, etcd's benchmark tool and catchup..." >&2
(cd .. && go build -o "$work/cairn" ./cmd/cairn)
(cd etcd35 && go build -o "$work/etcd" go.etcd.io/etcd/server/v3 && go build -o "$work/benchmark" go.etcd.io/etcd/v3/tools/benchmark &&
	go build -o "$work/catchup" ./catchup)

port=24790
# round IMPL: prints "IMPL catchup_ms target puts errors p50 p99 max db_bytes".
round() {
	local impl=$1 dir="$work/data-$1-$RANDOM"
	port=$((port + 4))
	local c1="http://127.0.0.1:$port" p1="http://127.0.0.1:$((port + 1))"
	local c2="http://127.0.0.1:$((port + 2))" p2="http://127.0.0.1:$((port + 3))"
	"$work/$impl" --name m1 --data-dir "$dir/m1" --listen-client-urls "$c1" --advertise-client-urls "$c1" \
		--listen-peer-urls "$p1" --initial-advertise-peer-urls "$p1" --initial-cluster "m1=$p1" \
		--quota-backend-bytes 8589934592 --log-level error >"$work/$impl.m1.log" 2>&1 &
	local leader=$!
	for _ in $(seq 100); do curl -fs "$c1/health" >/dev/null 2>&1 && break; sleep 0.1; done
	"$work/benchmark" --endpoints="$c1" --conns=100 --clients=1000 put --key-size=8 --val-size="$VALUE" \
		--sequential-keys --key-space-size="$KEYS" --total="$KEYS" >/dev/null 2>&1
	local db
	db=$(curl -fs -X POST "$c1/v3/maintenance/status" -d '{}' | grep -o '"dbSize":"[0-9]*"' | tr -dc 0-9)
	curl -fs -X POST "$c1/v3/cluster/member/add" -d '{"peerURLs":["'"$p2"'"],"isLearner":true}' >/dev/null
	"$work/$impl" --name m2 --data-dir "$dir/m2" --listen-client-urls "$c2" --advertise-client-urls "$c2" \
		--listen-peer-urls "$p2" --initial-advertise-peer-urls "$p2" --initial-cluster "m1=$p1,m2=$p2" \
		--initial-cluster-state existing --quota-backend-bytes 8589934592 --log-level error >"$work/$impl.m2.log" 2>&1 &
	local learner=$!
	local out
	if ! out=$("$work/catchup" --leader "$c1" --learner "$c2" --rate "$RATE"); then
		echo "$impl: the learner did not catch up" >&2
		tail -20 "$work/$impl".m*.log >&2
	fi
	kill "$leader" "$learner" 2>/dev/null || true
	{ wait "$leader"; wait "$learner"; } 2>/dev/null || true
	rm -rf "$dir"
	[[ -n $out ]] && echo "$impl $out $db"
}

results="$work/results"
for i in $(seq "$COUNT"); do
	for impl in cairn etcd; do round "$impl" | tee -a "$results"; done
done

echo
echo "medians of $COUNT rounds: catch-up ms, and the leader's put latency meanwhile (ms); ratio = cairn/etcd"
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }
get() { awk -v i="$1" -v c="$2" '$1 == i {print $c}' "$results" | median; }
printf "%-10s %12s %12s %7s\n" measure cairn etcd ratio
for m in "catch-up:2" "p50:6" "p99:7" "max:8" "db-bytes:9"; do
	name=${m%%:*} col=${m##*:}
	c=$(get cairn "$col") e=$(get etcd "$col")
	awk -v n="$name" -v c="$c" -v e="$e" 'BEGIN {printf "%-10s %12.2f %12.2f %7.2f\n", n, c, e, (e > 0 ? c / e : 0)}'
done
