#!/usr/bin/env bash
# A large database, one cairn member beside one etcd 3.5 member
# (bench/etcd35/storage): SMALL keys of 1 KiB and BIG keys of 1.5 MB
# (under the 1.5 MiB request limit), about 16 GiB with the defaults. Then
# the member is stopped and started again on its data (the page cache
# warm: nothing here may drop it), and measured: time until a range is
# answered, resident memory then (anonymous and file-backed, from
# /proc/<pid>/status), get latency (serializable and linearizable) of
# small and big keys, then a physical compaction and a defragmentation
# timed, with the highest resident memory sampled meanwhile. One round,
# cairn then etcd, each on a fresh data directory removed after.
#
#   bench/large.sh                          # SMALL=2000000 BIG=9500
#   SMALL=200000 BIG=500 bench/large.sh     # a quick look (about 1 GiB)
set -euo pipefail
cd "$(dirname "$0")"
SMALL=${SMALL:-2000000}
BIG=${BIG:-9500}
IMPLS=${IMPLS:-cairn etcd}
# etcd 3.5 holds raft's log in memory for --snapshot-count entries (100,000)
# plus 5,000 kept for followers: 9,500 entries of 1.5 MB took it to 24 GB
# and the OOM killer on a 24 GiB machine. ETCD_FLAGS (default: snapshots
# every 1,000 entries, 500 kept) lets it hold the load.
ETCD_FLAGS=${ETCD_FLAGS:---snapshot-count 1000 --experimental-snapshot-catchup-entries 500}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "building cairn, etcd 3.5 and storage..." >&2
(cd .. && go build -o "$work/cairn" ./cmd/cairn)
(cd etcd35 && go build -o "$work/etcd" go.etcd.io/etcd/server/v3 && go build -o "$work/storage" ./storage)

port=26790
# rss PID: "anon file" resident kB.
rss() { awk '/^RssAnon/ {a=$2} /^RssFile/ {f=$2} END {print a, f}' "/proc/$1/status"; }
# sample PID FILE: appends "anon file" every 200 ms until killed.
sample() { while kill -0 "$1" 2>/dev/null; do rss "$1" >>"$2"; sleep 0.2; done; }
peak() { awk 'BEGIN {a=0; f=0} $1 > a {a=$1} $2 > f {f=$2} END {print a, f}' "$1"; }

round() {
	local impl=$1 dir="$work/data-$1" c1 p1 pid t0 t1
	port=$((port + 2))
	c1="http://127.0.0.1:$port" p1="http://127.0.0.1:$((port + 1))"
	local extra=()
	[[ $impl == etcd ]] && read -ra extra <<<"$ETCD_FLAGS"
	start() {
		"$work/$impl" "${extra[@]}" --name m1 --data-dir "$dir" --listen-client-urls "$c1" --advertise-client-urls "$c1" \
			--listen-peer-urls "$p1" --initial-advertise-peer-urls "$p1" --initial-cluster "m1=$p1" \
			--quota-backend-bytes 34359738368 --log-level warn >>"$work/$impl.log" 2>&1 &
		pid=$!
	}
	served() { curl -fs -X POST "$c1/v3/kv/range" -d '{"key":"c21hbGwtMDAwMDAwMDA="}' | grep -q '"kvs"'; }
	start
	until curl -fs "$c1/health" >/dev/null 2>&1; do sleep 0.05; done
	"$work/storage" --endpoint "$c1" --mode load --prefix small- --keys "$SMALL" --load "$SMALL" --value 1024 --clients 1000 | sed "s/^/$impl small /"
	"$work/storage" --endpoint "$c1" --mode load --prefix big- --keys "$BIG" --load "$BIG" --value 1500000 --clients 16 | sed "s/^/$impl big /"
	kill "$pid"
	wait "$pid" || true
	t0=$(date +%s%N)
	start
	until served; do sleep 0.01; done
	t1=$(date +%s%N)
	echo "$impl start-ms $(((t1 - t0) / 1000000))"
	echo "$impl rss-at-start-kb $(rss "$pid")"
	"$work/storage" --endpoint "$c1" --mode get --prefix small- --keys "$SMALL" --gets 5000 --clients 100 | sed "s/^/$impl small /"
	"$work/storage" --endpoint "$c1" --mode get --prefix big- --keys "$BIG" --gets 200 --clients 4 | sed "s/^/$impl big /"
	echo "$impl rss-after-gets-kb $(rss "$pid")"
	local rev samples="$work/$impl.rss"
	rev=$(curl -fs -X POST "$c1/v3/kv/range" -d '{"key":"c21hbGwtMDAwMDAwMDA="}' | grep -o '"revision":"[0-9]*"' | head -1 | tr -dc 0-9)
	: >"$samples"
	sample "$pid" "$samples" &
	local sampler=$!
	t0=$(date +%s%N)
	curl -fs -X POST "$c1/v3/kv/compaction" -d '{"revision":"'"$rev"'","physical":true}' >/dev/null
	t1=$(date +%s%N)
	echo "$impl compact-ms $(((t1 - t0) / 1000000))"
	echo "$impl rss-peak-compact-kb $(peak "$samples")"
	: >"$samples"
	t0=$(date +%s%N)
	curl -fs -m 1800 -X POST "$c1/v3/maintenance/defragment" -d '{}' >/dev/null
	t1=$(date +%s%N)
	echo "$impl defrag-ms $(((t1 - t0) / 1000000))"
	echo "$impl rss-peak-defrag-kb $(peak "$samples")"
	echo "$impl size $(curl -fs -X POST "$c1/v3/maintenance/status" -d '{}' | grep -o '"dbSize":"[0-9]*"' | tr -dc 0-9)"
	kill "$pid" "$sampler" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	rm -rf "$dir"
}

for impl in $IMPLS; do round "$impl"; done
