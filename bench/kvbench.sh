#!/usr/bin/env bash
# kvbench beside etcd's benchmark tool. One cairn server and one etcd 3.5
# server (MEMBERS members each, on 127.0.0.1, both up for the whole run)
# take the workloads of bench/server.sh: key 8 B, value 256 B; put with
# 1,000 clients over 100 connections, put with 1 client, linearizable and
# serializable gets of one key with 1,000 clients. For each workload:
#
#  1. `kvbench --compare cairn=...,etcd=... --rounds COUNT`: the servers'
#     throughput, latency and CPU a request (from their /metrics), cairn /
#     etcd in each round and the median of the rounds' ratios;
#  2. the clients' own CPU: etcd's benchmark tool and kvbench in turn,
#     COUNT times each, against cairn, each process's user + system time
#     (bash's time) over its requests, and kvbench / benchmark in each
#     round.
#
#   bench/kvbench.sh                   # COUNT=5 TOTAL=100000 TOTAL1=5000
#   MEMBERS=3 COUNT=3 bench/kvbench.sh
#   WORKLOADS="put-1000 range-s" bench/kvbench.sh
#
# Output: kvbench's tables as it prints them, each tool run's line, then a
# summary of the clients' CPU.
set -euo pipefail
cd "$(dirname "$0")"
COUNT=${COUNT:-5}
TOTAL=${TOTAL:-100000}
TOTAL1=${TOTAL1:-5000}
MEMBERS=${MEMBERS:-1}
WORKLOADS=${WORKLOADS:-put-1000 put-1 range-l range-s}
work=$(mktemp -d)
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do { wait "$p"; } 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

echo "building cairn, kvbench, etcd 3.5 and etcd's benchmark tool..." >&2
(cd .. && go build -o "$work/cairn" ./cmd/cairn && go build -o "$work/kvbench" ./cmd/kvbench)
(cd etcd35 && go build -o "$work/etcd" go.etcd.io/etcd/server/v3 && go build -o "$work/benchmark" go.etcd.io/etcd/v3/tools/benchmark)

# start NAME BASEPORT: MEMBERS members of NAME on fresh data dirs; sets EP
# to their client URLs, comma-separated.
start() {
	local name=$1 port=$2 i clients=() peers=() initial=()
	for i in $(seq "$MEMBERS"); do
		clients+=("http://127.0.0.1:$((port + 2 * i))")
		peers+=("http://127.0.0.1:$((port + 2 * i + 1))")
		initial+=("m$i=http://127.0.0.1:$((port + 2 * i + 1))")
	done
	local cluster
	cluster=$(IFS=,; echo "${initial[*]}")
	for i in $(seq 0 $((MEMBERS - 1))); do
		"$work/$name" --name "m$((i + 1))" --data-dir "$work/data-$name/m$i" --listen-client-urls "${clients[$i]}" \
			--advertise-client-urls "${clients[$i]}" --initial-advertise-peer-urls "${peers[$i]}" \
			--listen-peer-urls "${peers[$i]}" --initial-cluster "$cluster" --initial-cluster-token "kvbench-$name" \
			--quota-backend-bytes 8589934592 --log-level error >"$work/$name.$i.log" 2>&1 &
		pids+=($!)
	done
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
	EP=$(IFS=,; echo "${clients[*]}")
}
start cairn 24800
cairn=$EP
start etcd 24900
etcd=$EP
# The key benchmark's ranges read ("k") and the one kvbench's gets read
# (eight zero bytes, its key 0 of a space of one), 256 bytes each.
val=$(head -c 256 /dev/zero | base64 -w0)
for ep in "${cairn%%,*}" "${etcd%%,*}"; do
	curl -fs -X POST "$ep/v3/kv/put" -d '{"key":"aw==","value":"'"$val"'"}' >/dev/null
	curl -fs -X POST "$ep/v3/kv/put" -d '{"key":"AAAAAAAAAAA=","value":"'"$val"'"}' >/dev/null
done

# args WORKLOAD TOOL: the tool's arguments for the workload; sets N, its
# requests.
args() {
	local wl=$1 tool=$2
	case $wl in
	put-1000) N=$TOTAL ;;
	put-1) N=$TOTAL1 ;;
	*) N=$TOTAL ;;
	esac
	case $tool-$wl in
	benchmark-put-1000) A=(--conns=100 --clients=1000 put --key-size=8 --val-size=256 --sequential-keys --key-space-size=100000 --total="$N") ;;
	benchmark-put-1) A=(--conns=1 --clients=1 put --key-size=8 --val-size=256 --sequential-keys --key-space-size=100000 --total="$N") ;;
	benchmark-range-l) A=(--conns=100 --clients=1000 range k --consistency=l --total="$N") ;;
	benchmark-range-s) A=(--conns=100 --clients=1000 range k --consistency=s --total="$N") ;;
	kvbench-put-1000) A=(put --conns=100 --clients=1000 --key-size=8 --val-size=256 --key-dist=sequential --key-space=100000 --total="$N") ;;
	kvbench-put-1) A=(put --conns=1 --clients=1 --key-size=8 --val-size=256 --key-dist=sequential --key-space=100000 --total="$N") ;;
	kvbench-range-l) A=(get --conns=100 --clients=1000 --key-size=8 --key-space=1 --consistency=l --preload=false --total="$N") ;;
	kvbench-range-s) A=(get --conns=100 --clients=1000 --key-size=8 --key-space=1 --consistency=s --preload=false --total="$N") ;;
	esac
}

cpufile="$work/cpu"
for wl in $WORKLOADS; do
	args "$wl" kvbench
	echo
	echo "== $wl: kvbench --compare cairn,etcd, $COUNT rounds"
	"$work/kvbench" "${A[@]}" --compare "cairn=${cairn//,/+},etcd=${etcd//,/+}" --rounds "$COUNT" --progress none
	echo
	echo "== $wl: the clients' own CPU against cairn (bash's time, user + system, the whole process)"
	for i in $(seq "$COUNT"); do
		for tool in benchmark kvbench; do
			args "$wl" "$tool"
			if [[ $tool == benchmark ]]; then
				cmd=("$work/benchmark" --endpoints="$cairn" "${A[@]}")
			else
				cmd=("$work/kvbench" "${A[@]}" --endpoints="$cairn" --progress none)
			fi
			out=$({ TIMEFORMAT='client-cpu %U %S'; time "${cmd[@]}" >/dev/null 2>&1; } 2>&1)
			us=$(awk -v n="$N" '/^client-cpu/ {printf "%.1f", ($2 + $3) * 1e6 / n}' <<<"$out")
			echo "$wl $i $tool $us" | tee -a "$cpufile"
		done
	done
done

echo
echo "clients' CPU µs a request against cairn: medians of $COUNT rounds; ratio = the median of the"
echo "rounds' kvbench / benchmark (the two run back to back in a round)"
printf "%-9s %10s %10s %7s\n" workload benchmark kvbench ratio
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2] + a[NR/2+1]) / 2}'; }
for wl in $WORKLOADS; do
	b=$(awk -v w="$wl" '$1 == w && $3 == "benchmark" {print $4}' "$cpufile" | median)
	k=$(awk -v w="$wl" '$1 == w && $3 == "kvbench" {print $4}' "$cpufile" | median)
	r=$(awk -v w="$wl" '$1 == w && $3 == "benchmark" {b = $4} $1 == w && $3 == "kvbench" {print $4 / b}' "$cpufile" | median)
	printf "%-9s %10.1f %10.1f %7.2f\n" "$wl" "$b" "$k" "$r"
done
