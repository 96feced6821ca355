#!/usr/bin/env bash
# Node power-on → kernel running, → mallee-init ready and → registered with the frontend,
# network-booting target/images/node under QEMU (TCG). Each run starts a real `mallee-frontend`
# daemon (the appliance's static binary from `just images`, fresh data dir) in its own network
# namespace, on the server address the node's command line names, with a tap device QEMU uses:
#   ours:    the daemon with its `[pxe]` table on serves DHCP and iPXE's boot.ipxe, kernel and
#            initramfs over HTTP from target/images/node (the appliance's own path);
#   dnsmasq: the same daemon with PXE off, dnsmasq serving DHCP and TFTP (the classic PXE
#            setup) of the same kernel and initramfs with the same boot script and command line.
# Same QEMU command line and MAC; ours and dnsmasq alternate. "registered" is when the daemon
# logs `node registered` for the node. Prints (medians of BENCH_PXE_RUNS runs, default 3)
#   bench: pxe kernel ours=<s> dnsmasq=<s> ratio=<dnsmasq/ours>
#   bench: pxe ready ours=<s> dnsmasq=<s> ratio=<dnsmasq/ours>
#   bench: pxe registered ours=<s> dnsmasq=<s> ratio=<dnsmasq/ours>
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
image=$(realpath -m "$target_dir/images/node")
frontend_bin=$(realpath -m "$target_dir/x86_64-unknown-linux-gnu/image/mallee-frontend")
runs=${BENCH_PXE_RUNS:-3}
server=10.214.0.1
api_port=8773
cluster=bench
secret=bench-secret
mac=52:54:00:21:40:01
node_id=node-${mac//:/}

for tool in qemu-system-x86_64 dnsmasq ip ss curl; do
    command -v "$tool" >/dev/null || { echo "bench-pxe: no $tool: run \`just setup\`" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "bench-pxe: needs root (network namespaces, taps)" >&2; exit 1; }
for f in "$image/vmlinuz" "$frontend_bin"; do
    [ -f "$f" ] || { echo "bench-pxe: no $f: run \`just images\`" >&2; exit 1; }
done
# Both artifacts come from `just images`; refuse to measure ones older than their sources.
stale=$(find init/src vmm/src proto/src frontend/src -name '*.rs' \
    -newer "$image/initramfs" -print -quit)
[ -z "$stale" ] || { echo "bench-pxe: $stale is newer than $image: run \`just images\`" >&2; exit 1; }

work=$(mktemp -d /tmp/mallee-bench-pxe.XXXXXX)
# The daemon drops root to 65534 (as on the appliance) and must reach its data dir.
chmod 755 "$work"
ns=mbench-pxe-$$

# Stops everything running in the namespace (only what this script started there), then
# removes the namespace.
netns_down() {
    [ -e "/run/netns/$ns" ] || return 0
    local pids start=$(date +%s)
    pids=$(ip netns pids "$ns")
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
    while pids=$(ip netns pids "$ns") && [ -n "$pids" ]; do
        if (($(date +%s) > start + 20)); then
            echo "bench-pxe: processes $pids in $ns do not exit" >&2
            return 1
        elif (($(date +%s) > start + 10)); then
            kill -9 $pids 2>/dev/null || true
        fi
        sleep 0.05
    done
    wait 2>/dev/null || true
    ip netns del "$ns"
}
cleanup() {
    trap - EXIT INT TERM
    netns_down || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

netns_up() {
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" tuntap add dev tap0 mode tap
    ip -n "$ns" addr add "$server/24" dev tap0
    ip -n "$ns" link set tap0 up
}

now() { date +%s.%N; }

# The current run's logs, shown when a wait fails.
run_dir=
show_logs() {
    for f in "$run_dir"/{console,frontend.log,dnsmasq.log,qemu.log}; do
        [ -s "$f" ] || continue
        echo "--- tail of $(basename "$f") ---" >&2
        tail -c 2000 "$f" >&2 || true
        echo >&2
    done
}

# wait_for FILE REGEX START TIMEOUT PID...: prints seconds from START until REGEX shows in
# FILE; fails after TIMEOUT seconds or as soon as one of the PIDs has exited.
wait_for() {
    local file=$1 pattern=$2 start=$3 deadline=$(($(date +%s) + $4)) pid
    shift 4
    until grep -aqE "$pattern" "$file" 2>/dev/null; do
        for pid in "$@"; do
            kill -0 "$pid" 2>/dev/null && continue
            echo "bench-pxe: process $pid exited while waiting for '$pattern' in $file" >&2
            show_logs
            return 1
        done
        if (($(date +%s) > deadline)); then
            echo "bench-pxe: timed out waiting for '$pattern' in $file" >&2
            show_logs
            return 1
        fi
        sleep 0.05
    done
    awk -v a="$(now)" -v b="$start" 'BEGIN { printf "%.3f\n", a - b }'
}

# The daemon in the namespace with a fresh data dir; with PXE when $1 is "pxe".
start_frontend() {
    {
        cat <<EOF
# bench-pxe: every other field keeps its default (frontend/src/config.rs), but for [tls]:
# plain HTTP, because with TLS on each run's fresh data dir makes a new CA and key, which the
# node pins on its command line, and the dnsmasq arm boots from the boot.ipxe taken in the
# first "ours" run (another run's key).
listen = "$server:$api_port"
data_dir = "$run_dir/data"
run_as = "65534:65534"
[tls]
enabled = false
[ec2]
clusters = ["$cluster"]
cluster_secret = "$secret"
admit_macs = ["$mac"]
EOF
        if [ "$1" = pxe ]; then
            cat <<EOF
[pxe]
interface = "tap0"
server_ip = "$server"
image_dir = "$image"
EOF
        fi
    } >"$run_dir/frontend.toml"
    ip netns exec "$ns" env RUST_LOG=info NO_COLOR=1 \
        "$frontend_bin" --config "$run_dir/frontend.toml" serve >"$run_dir/frontend.log" 2>&1 &
    frontend_pid=$!
    wait_for "$run_dir/frontend.log" 'mallee-frontend: listening on' "$(now)" 60 "$frontend_pid" >/dev/null
}

# dnsmasq is set up as well as it can be for iPXE, as our daemon is: iPXE's `no-pxedhcp`
# setting (option 175, setting 176) so it does not wait for a ProxyDHCP answer, and router
# advertisements so it does not wait for an IPv6 router (without these two dnsmasq's arm is
# ~13 s slower).
# dnsmasq's TFTP root: iPXE for plain PXE ROMs, the node bundle, and boot.ipxe — the script
# our daemon serves (taken from it in the first "ours" run) with its HTTP URLs turned into
# TFTP ones, so both arms boot with the same command line.
tftp="$work/tftp"
mkdir -p "$tftp"
cp "$image/vmlinuz" "$image/initramfs" /usr/lib/ipxe/undionly.kpxe "$tftp/"

start_dnsmasq() {
    ip netns exec "$ns" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root \
        --interface=tap0 --bind-interfaces \
        --dhcp-range=10.214.0.100,10.214.0.199,255.255.255.0,1h \
        --dhcp-leasefile="$run_dir/dnsmasq.leases" \
        --enable-tftp --tftp-root="$tftp" \
        --dhcp-userclass=set:ipxe,iPXE \
        --dhcp-boot=tag:!ipxe,undionly.kpxe --dhcp-boot=tag:ipxe,boot.ipxe \
        --dhcp-option=encap:175,176,1b \
        --enable-ra --dhcp-range=::,constructor:tap0,ra-only \
        >"$run_dir/dnsmasq.log" 2>&1 &
    local pid=$! deadline=$(($(date +%s) + 30))
    until ip netns exec "$ns" ss -uln | grep -q ':67 '; do
        kill -0 "$pid" 2>/dev/null && (($(date +%s) < deadline)) || { show_logs; return 1; }
        sleep 0.05
    done
}

# one_boot ARM RUN: boots the node once against ARM (ours or dnsmasq); sets t_kernel, t_ready
# and t_registered (seconds from QEMU start).
one_boot() {
    run_dir="$work/$1-$2"
    mkdir -p "$run_dir"
    netns_up
    if [ "$1" = ours ]; then
        start_frontend pxe
        if [ ! -f "$tftp/boot.ipxe" ]; then
            local url base
            url=$(grep -o 'pxe serving http://[^ ]*' "$run_dir/frontend.log" | cut -d' ' -f3)
            base=${url%/boot.ipxe}
            ip netns exec "$ns" curl -fsS "$url" |
                sed -e "s#$base/node/#tftp://$server/#g" -e "s#$base#tftp://$server#g" \
                    >"$tftp/boot.ipxe.new"
            mv "$tftp/boot.ipxe.new" "$tftp/boot.ipxe"
        fi
    else
        start_frontend plain
        start_dnsmasq
    fi
    local start
    start=$(now)
    ip netns exec "$ns" qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64,+svm,+npt \
        -nodefaults -no-user-config -display none -vga none -no-reboot -m 1024 \
        -chardev "file,id=console,path=$run_dir/console" -serial chardev:console \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device "virtio-net-pci,netdev=n0,mac=$mac,bootindex=1" >"$run_dir/qemu.log" 2>&1 &
    local qemu_pid=$!
    t_kernel=$(wait_for "$run_dir/console" 'Linux version' "$start" 300 "$qemu_pid" "$frontend_pid")
    t_ready=$(wait_for "$run_dir/console" 'mallee-init: ready' "$start" 300 "$qemu_pid" "$frontend_pid")
    t_registered=$(wait_for "$run_dir/frontend.log" "node registered.*$node_id" "$start" 300 \
        "$qemu_pid" "$frontend_pid")
    netns_down
    rm -rf "$run_dir"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A times
for i in $(seq "$runs"); do
    line="bench-pxe: run $i:"
    for arm in ours dnsmasq; do
        one_boot "$arm" "$i"
        times[$arm-kernel]+="$t_kernel " times[$arm-ready]+="$t_ready "
        times[$arm-registered]+="$t_registered "
        line+=" $arm kernel=$t_kernel ready=$t_ready registered=$t_registered;"
    done
    echo "${line%;}" >&2
done

echo "bench-pxe: seconds from QEMU power-on, median of $runs runs; ratio = dnsmasq/ours, > 1 means ours is faster"
for case in kernel ready registered; do
    o=$(printf '%s\n' ${times[ours-$case]} | median)
    d=$(printf '%s\n' ${times[dnsmasq-$case]} | median)
    awk -v c="$case" -v o="$o" -v d="$d" \
        'BEGIN { printf "bench: pxe %s ours=%.2f dnsmasq=%.2f ratio=%.2f\n", c, o, d, d / o }'
done
