#!/usr/bin/env bash
# AoE benchmark: our target vs `vblade -s` (both durable) on one veth pair between two
# network namespaces, same backing file, same initiator (ours). Prints one line per case:
#   bench: aoe <case> ours=<MB/s> vblade=<MB/s> ratio=<x>
# Each case runs AOE_BENCH_ROUNDS times per target, alternating, and keeps each target's best
# (the machine is shared, so the best run is the least disturbed one).
# Env: AOE_BENCH_SECS (default 3), AOE_BENCH_ROUNDS (default 2), AOE_BENCH_MTU (default 1500),
# AOE_BENCH_MB (default 256).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
secs=${AOE_BENCH_SECS:-3}
rounds=${AOE_BENCH_ROUNDS:-2}
mtu=${AOE_BENCH_MTU:-1500}
size_mb=${AOE_BENCH_MB:-256}
command -v vblade >/dev/null || { echo "bench-aoe: vblade missing: run \`just setup\`" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bench-aoe: needs root (network namespaces, AF_PACKET)" >&2; exit 1; }

cargo build --release -q -p mallee-aoe --bin mallee-aoe
bin="$here/target/release/mallee-aoe"

id=$$
nsa="mallee-aoeb-$id-a"; nsb="mallee-aoeb-$id-b"; ifa="mab${id}a"; ifb="mab${id}b"
work=$(mktemp -d "$here/target/bench-aoe.XXXXXX")
target_pid=""
cleanup() {
    set +e # a failing kill/wait must not skip the namespace removal
    if [ -n "$target_pid" ]; then
        kill "$target_pid" 2>/dev/null
        wait "$target_pid" 2>/dev/null
    fi
    ip netns del "$nsa" 2>/dev/null || true
    ip netns del "$nsb" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$nsa"; ip netns add "$nsb"
ip link add "$ifa" type veth peer name "$ifb"
ip link set "$ifa" netns "$nsa"; ip link set "$ifb" netns "$nsb"
ip -n "$nsa" link set "$ifa" mtu "$mtu" up; ip -n "$nsb" link set "$ifb" mtu "$mtu" up
disk="$work/disk.img"
head -c "${size_mb}M" /dev/zero > "$disk"
sync "$disk"

start_target() { # ours|vblade
    if [ "$1" = ours ]; then
        ip netns exec "$nsa" "$bin" export "$ifa" 1 1 "$disk" >/dev/null 2>&1 &
    else
        ip netns exec "$nsa" vblade -s 1 1 "$ifa" "$disk" >/dev/null 2>&1 &
    fi
    target_pid=$!
}
stop_target() { kill "$target_pid"; wait "$target_pid" 2>/dev/null || true; target_pid=""; }

cases=("seq-1M-read seq read 1048576 1" "seq-1M-write seq write 1048576 1"
       "seq-1M-read-qd16 seq read 1048576 16" "seq-1M-write-qd16 seq write 1048576 16"
       "rand-4K-read rand read 4096 1" "rand-4K-write rand write 4096 1"
       "rand-4K-read-qd16 rand read 4096 16" "rand-4K-write-qd16 rand write 4096 16")
declare -A result
failed=0
# Interleaved per case (ours, then vblade) so background load hits both alike.
for c in "${cases[@]}"; do
    set -- $c
    for ((r = 0; r < rounds; r++)); do
        for who in ours vblade; do
            start_target "$who"
            if ! out=$(ip netns exec "$nsb" "$bin" bench "$ifb" 1 1 "$2" "$3" "$4" "$5" "$secs" 2>&1); then
                echo "bench-aoe: $who $1 failed: $(tail -n 1 <<<"$out")" >&2
                failed=1
            fi
            mbps=$(sed -n 's/^MB\/s=\([0-9.]*\).*/\1/p' <<<"$out")
            best=${result["$who $1"]:-0}
            result["$who $1"]=$(awk -v a="${mbps:-0}" -v b="$best" 'BEGIN { print (a > b ? a : b) }')
            stop_target
        done
    done
done
# A run that failed on either side is an error, never a ratio.
if ((failed)); then
    echo "bench-aoe: runs failed (above); no figures" >&2
    exit 1
fi
for c in "${cases[@]}"; do
    set -- $c
    o=${result["ours $1"]:-0}; v=${result["vblade $1"]:-0}
    if awk -v o="$o" -v v="$v" 'BEGIN { exit !(o <= 0 || v <= 0) }'; then
        echo "bench-aoe: $1 measured nothing (ours=$o vblade=$v)" >&2
        exit 1
    fi
    ratio=$(awk -v o="$o" -v v="$v" 'BEGIN { printf "%.2f", o / v }')
    echo "bench: aoe $1 ours=$o vblade=$v ratio=$ratio"
done
