#!/usr/bin/env bash
# Node power-on → kernel running, and → mallee-init ready, network-booting target/images/node
# under QEMU (TCG): from our PXE service (DHCP + HTTP) vs dnsmasq (DHCP + TFTP, the classic
# PXE setup) serving the same kernel, initramfs and command line. Each server runs in its own
# network namespace on a tap device; QEMU runs inside it. Prints
#   bench: pxe kernel ours=<s> dnsmasq=<s> ratio=<dnsmasq/ours>
#   bench: pxe ready ours=<s> dnsmasq=<s> ratio=<dnsmasq/ours>
# (medians of BENCH_PXE_RUNS runs each, default 3; ratio > 1 means ours is faster).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
image=$target_dir/images/node
runs=${BENCH_PXE_RUNS:-3}
server=10.214.0.1
mac=52:54:00:21:40:01

for tool in qemu-system-x86_64 dnsmasq ip; do
    command -v "$tool" >/dev/null || { echo "bench-pxe: no $tool: run \`just setup\`" >&2; exit 1; }
done
[ -f "$image/vmlinuz" ] || { echo "bench-pxe: no $image: run \`just images\`" >&2; exit 1; }

cargo build --release -q -p mallee-frontend --bin mallee-pxe
pxe_bin=$target_dir/release/mallee-pxe

work=$(mktemp -d /tmp/mallee-bench-pxe.XXXXXX)
ns=mbench-pxe-$$
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cmdline="$(cat "$image/cmdline") mallee.frontend=$server:8773 mallee.cluster=bench mallee.secret=bench-secret initrd=initramfs"
mkdir -p "$work/tftp"
cp "$image/vmlinuz" "$image/initramfs" /usr/lib/ipxe/undionly.kpxe "$work/tftp/"
cat >"$work/tftp/boot.ipxe" <<EOF
#!ipxe
kernel tftp://$server/vmlinuz $cmdline
initrd --name initramfs tftp://$server/initramfs
boot
EOF

now() { date +%s.%N; }

# Waits for the regex $2 in file $1; prints seconds since $3, or fails after 300 s.
wait_console() {
    local file=$1 pattern=$2 start=$3 deadline=$(($(date +%s) + 300))
    until grep -aqE "$pattern" "$file" 2>/dev/null; do
        if (($(date +%s) > deadline)); then
            echo "bench-pxe: timed out waiting for '$pattern' in $file" >&2
            tail -c 2000 "$file" >&2 || true
            return 1
        fi
        sleep 0.05
    done
    awk -v a="$(now)" -v b="$start" 'BEGIN { printf "%.3f\n", a - b }'
}

# One boot against the server started by "$@"; prints "<kernel s> <ready s>".
one_boot() {
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" tuntap add dev tap0 mode tap
    ip -n "$ns" addr add "$server/24" dev tap0
    ip -n "$ns" link set tap0 up
    rm -f "$work/leases.db" "$work/dnsmasq.leases" "$work/console"
    ip netns exec "$ns" "$@" >"$work/server.log" 2>&1 &
    local server_pid=$!
    pids+=("$server_pid")
    # Wait until the server listens on the DHCP port.
    local deadline=$(($(date +%s) + 30))
    until ip netns exec "$ns" ss -uln | grep -q ':67 '; do
        (($(date +%s) < deadline)) || { cat "$work/server.log" >&2; return 1; }
        sleep 0.05
    done
    local start
    start=$(now)
    ip netns exec "$ns" qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64,+svm,+npt \
        -nodefaults -no-user-config -display none -vga none -no-reboot -m 1024 \
        -chardev "file,id=console,path=$work/console" -serial chardev:console \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device "virtio-net-pci,netdev=n0,mac=$mac,bootindex=1" >"$work/qemu.log" 2>&1 &
    local qemu_pid=$!
    pids+=("$qemu_pid")
    local kernel ready
    kernel=$(wait_console "$work/console" 'Linux version' "$start")
    ready=$(wait_console "$work/console" 'mallee-init: ready' "$start")
    kill "$qemu_pid" "$server_pid" 2>/dev/null || true
    wait "$qemu_pid" "$server_pid" 2>/dev/null || true
    ip netns del "$ns"
    echo "$kernel $ready"
}

ours() {
    one_boot "$pxe_bin" --interface tap0 --server-ip "$server" --image "$image" \
        --lease-db "$work/leases.db" --frontend "$server:8773" --cluster bench --secret bench-secret
}

peer() {
    one_boot dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root \
        --interface=tap0 --bind-interfaces \
        --dhcp-range=10.214.0.100,10.214.0.199,255.255.255.0,1h \
        --dhcp-leasefile="$work/dnsmasq.leases" \
        --enable-tftp --tftp-root="$work/tftp" \
        --dhcp-userclass=set:ipxe,iPXE \
        --dhcp-boot=tag:!ipxe,undionly.kpxe --dhcp-boot=tag:ipxe,boot.ipxe
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

ours_k=() ours_r=() peer_k=() peer_r=()
for i in $(seq "$runs"); do
    read -r k r < <(ours)
    ours_k+=("$k") ours_r+=("$r")
    read -r k r < <(peer)
    peer_k+=("$k") peer_r+=("$r")
    echo "bench-pxe: run $i: ours kernel=${ours_k[-1]} ready=${ours_r[-1]}; dnsmasq kernel=$k ready=$r" >&2
done

report() {
    local case=$1 o d
    o=$(printf '%s\n' "${@:2:$runs}" | median)
    d=$(printf '%s\n' "${@:$((runs + 2))}" | median)
    awk -v c="$case" -v o="$o" -v d="$d" \
        'BEGIN { printf "bench: pxe %s ours=%.2f dnsmasq=%.2f ratio=%.2f\n", c, o, d, d / o }'
}
report kernel "${ours_k[@]}" "${peer_k[@]}"
report ready "${ours_r[@]}" "${peer_r[@]}"
