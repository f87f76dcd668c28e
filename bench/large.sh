#!/usr/bin/env bash
# A large database, one cairn member beside one etcd 3.5 member
# (bench/etcd35/storage): SMALL keys of 1 KiB and BIG keys of 1.5 MB
# (under the 1.5 MiB request limit), about 16 GiB with the defaults. Then
# the member is stopped and started again on its data, and measured: time
# until a range is answered, resident memory then (anonymous and
# file-backed, from /proc/<pid>/status). Run as root, it is stopped and
# started once more after the page cache is dropped (a cold start). Then
# get latency (serializable and linearizable) of small and big keys; a
# learner added on an empty data directory, which the leader sends its
# snapshot (the whole file): time until the learner answers at the
# leader's revision, peak resident memory of both; then a physical
# compaction and a defragmentation timed, with the highest resident memory
# sampled meanwhile. One round, cairn then etcd, each on a fresh data
# directory removed after.
#
#   bench/large.sh                          # SMALL=2000000 BIG=9500
#   SMALL=200000 BIG=500 bench/large.sh     # a quick look (about 1 GiB)
#   LEARNER=0 bench/large.sh                # without the learner
#   MAINT=0 IMPLS=etcd bench/large.sh       # etcd only, without compaction and defragmentation
#   LOGS=/some/dir bench/large.sh           # the servers' logs kept there
set -euo pipefail
cd "$(dirname "$0")"
SMALL=${SMALL:-2000000}
BIG=${BIG:-9500}
IMPLS=${IMPLS:-cairn etcd}
LEARNER=${LEARNER:-1} # 0: no learner (no snapshot sent)
MAINT=${MAINT:-1}     # 0: no compaction or defragmentation
# etcd 3.5 holds raft's log in memory for --snapshot-count entries (100,000)
# plus 5,000 kept for followers: 9,500 entries of 1.5 MB took it to 24 GB
# and the OOM killer on a 24 GiB machine. ETCD_FLAGS (default: snapshots
# every 1,000 entries, 500 kept) lets it hold the load.
ETCD_FLAGS=${ETCD_FLAGS:---snapshot-count 1000 --experimental-snapshot-catchup-entries 500}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [[ -n ${LOGS:-} ]] && cp "$work"/*.log "$LOGS"/; rm -rf "$work"' EXIT

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
	# revision URL SERIALIZABLE: the revision a member answers a range at.
	revision() {
		curl -fs -X POST "$1/v3/kv/range" -d '{"key":"c21hbGwtMDAwMDAwMDA=","serializable":'"$2"'}' 2>/dev/null |
			grep -o '"revision":"[0-9]*"' | head -1 | tr -dc 0-9
	}
	# learner: a learner added and started on an empty data directory takes
	# the leader's snapshot (the whole file): the time until it answers at
	# the leader's revision, and the highest resident memory of the leader
	# and of the learner meanwhile. The learner is then stopped and removed.
	learner() {
		local c2="http://127.0.0.1:$((port + 50))" p2="http://127.0.0.1:$((port + 51))" id pid2 s1 s2 t0 t1 got=""
		local added
		added=$(curl -sS -X POST "$c1/v3/cluster/member/add" -d '{"peerURLs":["'"$p2"'"],"isLearner":true}' 2>&1 || true)
		if [[ $added != *'"member"'* ]]; then
			echo "$impl snapshot-to-learner failed: member add answered: $added"
			return 0
		fi
		id=$(grep -o '"ID":"[0-9]*"' <<<"$added" | head -1 | tr -dc 0-9)
		: >"$work/leader.rss"
		: >"$work/learner.rss"
		sample "$pid" "$work/leader.rss" &
		s1=$!
		t0=$(date +%s%N)
		"$work/$impl" "${extra[@]}" --name m2 --data-dir "$dir-learner" --listen-client-urls "$c2" --advertise-client-urls "$c2" \
			--listen-peer-urls "$p2" --initial-advertise-peer-urls "$p2" --initial-cluster "m1=$p1,m2=$p2" \
			--initial-cluster-state existing --quota-backend-bytes 34359738368 --log-level warn >>"$work/$impl-learner.log" 2>&1 &
		pid2=$!
		sample "$pid2" "$work/learner.rss" &
		s2=$!
		# Bounded: 30 minutes.
		for _ in $(seq 1 9000); do
			got=$(revision "$c2" true || true) # not yet listening: nothing
			[[ $got == "$rev" ]] && break
			kill -0 "$pid2" 2>/dev/null || break
			sleep 0.2
		done
		t1=$(date +%s%N)
		if [[ $got == "$rev" ]]; then
			echo "$impl snapshot-to-learner-ms $(((t1 - t0) / 1000000))"
		else
			echo "$impl snapshot-to-learner failed: revision '$got', want $rev (see $impl-learner.log)"
			tail -5 "$work/$impl-learner.log" >&2
		fi
		echo "$impl rss-peak-leader-snapshot-kb $(peak "$work/leader.rss")"
		echo "$impl rss-peak-learner-kb $(peak "$work/learner.rss")"
		kill "$pid2" 2>/dev/null || true
		wait "$pid2" 2>/dev/null || true
		kill "$s1" "$s2" 2>/dev/null || true
		curl -fsS -X POST "$c1/v3/cluster/member/remove" -d '{"ID":"'"$id"'"}' >/dev/null ||
			echo "$impl: removing the learner failed" >&2
		rm -rf "$dir-learner"
	}
	start
	until curl -fs "$c1/health" >/dev/null 2>&1; do sleep 0.05; done
	"$work/storage" --endpoint "$c1" --mode load --prefix small- --keys "$SMALL" --load "$SMALL" --value 1024 --clients 1000 | sed "s/^/$impl small /"
	"$work/storage" --endpoint "$c1" --mode load --prefix big- --keys "$BIG" --load "$BIG" --value 1500000 --clients 16 | sed "s/^/$impl big /"
	# restart NAME: stops the member, starts it again on its data, and
	# prints the time until a range is answered (NAME-ms) and its resident
	# memory then (rss-at-NAME-kb); with DROP, the page cache is dropped
	# in between.
	restart() {
		kill "$pid"
		wait "$pid" || true
		if [[ ${2:-} == DROP ]]; then
			sync
			echo 1 >/proc/sys/vm/drop_caches
		fi
		t0=$(date +%s%N)
		start
		until served; do sleep 0.01; done
		t1=$(date +%s%N)
		echo "$impl $1-ms $(((t1 - t0) / 1000000))"
		echo "$impl rss-at-$1-kb $(rss "$pid")"
	}
	restart start
	if [[ -w /proc/sys/vm/drop_caches ]]; then restart cold-start DROP; fi
	"$work/storage" --endpoint "$c1" --mode get --prefix small- --keys "$SMALL" --gets 5000 --clients 100 | sed "s/^/$impl small /"
	"$work/storage" --endpoint "$c1" --mode get --prefix big- --keys "$BIG" --gets 200 --clients 4 | sed "s/^/$impl big /"
	echo "$impl rss-after-gets-kb $(rss "$pid")"
	local rev samples="$work/$impl.rss"
	rev=$(revision "$c1" false)
	if [[ $LEARNER == 1 ]]; then learner; fi
	if [[ $MAINT == 0 ]]; then
		kill "$pid"
		wait "$pid" 2>/dev/null || true
		rm -rf "$dir"
		return
	fi
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
