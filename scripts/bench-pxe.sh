#!/usr/bin/env bash
# Node power-on → kernel running, → mallee-init ready and → registered with the frontend,
# network-booting target/images/node under QEMU (TCG). Each run starts a real `mallee-frontend`
# daemon (the appliance's static binary from `just images`, fresh data dir) in its own network
# namespace, on the server address the node's command line names, with a tap device QEMU uses:
#   ours:    the daemon with its `[pxe]` table on serves DHCP and iPXE's boot.ipxe, kernel and
#            initramfs over HTTP from target/images/node (the appliance's own path);
#   dnsmasq: the same daemon with PXE off, dnsmasq serving DHCP and TFTP (the classic PXE
#            setup) of the same kernel and initramfs with the same boot script and command line;
#   dnsmasq-http: the same daemon with PXE off, dnsmasq serving DHCP (which hands iPXE the
#            script's HTTP URL) and nginx serving boot.ipxe, kernel and initramfs over HTTP on
#            the address and port ours uses: the same transport as ours, byte-identical script.
# Same QEMU command line and MAC; the three alternate within each round. "registered" is when
# the daemon logs `node registered` for the node. A run that fails is an error, never a ratio.
# Prints (medians of BENCH_PXE_RUNS runs, default 3), for each of kernel, ready and registered:
#   bench: pxe <phase> ours=<s> dnsmasq=<s> ratio=<dnsmasq/ours>
#   bench: pxe <phase> ours=<s> dnsmasq-http=<s> ratio=<dnsmasq-http/ours>
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

for tool in qemu-system-x86_64 dnsmasq nginx ip ss curl; do
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

# tap0 also gets an IPv6 ULA prefix, in every arm alike: dnsmasq builds its router
# advertisement from tap0's prefix (`constructor:tap0`) and sends none without one. Ours'
# advertisement carries no prefix and ignores it.
netns_up() {
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" tuntap add dev tap0 mode tap
    ip -n "$ns" addr add "$server/24" dev tap0
    ip -n "$ns" addr add fd00:214::1/64 dev tap0 nodad
    ip -n "$ns" link set tap0 up
}

now() { date +%s.%N; }

# The current run's logs, shown when a wait fails.
run_dir=
show_logs() {
    for f in "$run_dir"/{console,frontend.log,dnsmasq.log,nginx-error.log,nginx-access.log,qemu.log}; do
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
# node pins on its command line, and the dnsmasq arms boot from the boot.ipxe taken in the
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
# setting (option 175, setting 176) so it does not wait for a ProxyDHCP answer, router
# advertisements so it does not wait for an IPv6 router (~13 s without; see netns_up), and
# `--no-ping`, as ours does no conflict check before an offer either (with the check dnsmasq
# leaves iPXE's first DISCOVERs unanswered for ~3 s).
# dnsmasq's TFTP root: iPXE for plain PXE ROMs, the node bundle, and boot.ipxe — the script
# our daemon serves (taken from it in the first "ours" run) with its HTTP URLs turned into
# TFTP ones, so both arms boot with the same command line.
tftp="$work/tftp"
mkdir -p "$tftp"
cp "$image/vmlinuz" "$image/initramfs" /usr/lib/ipxe/undionly.kpxe "$tftp/"
# The dnsmasq-http arm: TFTP holds only iPXE for plain PXE ROMs (QEMU's virtio-net ROM is
# iPXE already, so in this bench nothing goes over TFTP); nginx's root holds the script our
# daemon serves, unchanged, and the node bundle under the same paths as ours
# (`/boot.ipxe`, `/node/vmlinuz`, `/node/initramfs`), on ours' address and port.
tftp_http="$work/tftp-http"
www="$work/www"
mkdir -p "$tftp_http" "$www/node"
cp /usr/lib/ipxe/undionly.kpxe "$tftp_http/"
cp "$image/vmlinuz" "$image/initramfs" "$www/node/"
chmod -R a+rX "$www"
# The base URL of ours' HTTP (`http://IP:PORT`), taken in the first "ours" run.
ours_base=

# start_dnsmasq TFTP_ROOT IPXE_BOOT: dnsmasq answers DHCP, serves TFTP from TFTP_ROOT, and
# gives iPXE IPXE_BOOT (a file name in TFTP_ROOT, or a URL) as its boot file.
start_dnsmasq() {
    ip netns exec "$ns" dnsmasq --no-daemon --conf-file=/dev/null --port=0 --user=root \
        --interface=tap0 --bind-interfaces \
        --dhcp-range=10.214.0.100,10.214.0.199,255.255.255.0,1h \
        --dhcp-leasefile="$run_dir/dnsmasq.leases" \
        --enable-tftp --tftp-root="$1" \
        --dhcp-userclass=set:ipxe,iPXE \
        --dhcp-boot=tag:!ipxe,undionly.kpxe --dhcp-boot="tag:ipxe,$2" \
        --dhcp-option=encap:175,176,1b --no-ping \
        --enable-ra --dhcp-range=::,constructor:tap0,ra-only \
        >"$run_dir/dnsmasq.log" 2>&1 &
    local pid=$! deadline=$(($(date +%s) + 30))
    until ip netns exec "$ns" ss -uln | grep -q ':67 '; do
        kill -0 "$pid" 2>/dev/null && (($(date +%s) < deadline)) || {
            echo "bench-pxe: dnsmasq does not answer DHCP on tap0" >&2
            show_logs
            return 1
        }
        sleep 0.05
    done
    peer_pids+=("$pid")
}

# nginx as Debian ships it, but for a config of its own: a worker per core, sendfile, keep-alive,
# everything under the run's dir. The access log is on (three lines a boot) so the run can show
# that the node fetched all three files from it.
start_nginx() {
    local port=${ours_base##*:}
    cat >"$run_dir/nginx.conf" <<EOF
worker_processes auto;
pid $run_dir/nginx.pid;
error_log $run_dir/nginx-error.log;
events { worker_connections 1024; }
http {
    access_log $run_dir/nginx-access.log;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path $run_dir/nginx-body;
    proxy_temp_path $run_dir/nginx-proxy;
    fastcgi_temp_path $run_dir/nginx-fastcgi;
    uwsgi_temp_path $run_dir/nginx-uwsgi;
    scgi_temp_path $run_dir/nginx-scgi;
    server { listen $server:$port; root $www; }
}
EOF
    ip netns exec "$ns" nginx -e "$run_dir/nginx-error.log" -c "$run_dir/nginx.conf" \
        -g 'daemon off;' >>"$run_dir/nginx-error.log" 2>&1 &
    local pid=$! deadline=$(($(date +%s) + 30))
    # Serving means answering with the script itself, checked before QEMU starts.
    until ip netns exec "$ns" curl -fsS "$ours_base/boot.ipxe" 2>/dev/null | cmp -s - "$www/boot.ipxe"; do
        if ! kill -0 "$pid" 2>/dev/null || (($(date +%s) > deadline)); then
            echo "bench-pxe: nginx does not serve $ours_base/boot.ipxe" >&2
            show_logs
            return 1
        fi
        sleep 0.05
    done
    : >"$run_dir/nginx-access.log"
    peer_pids+=("$pid")
}

# one_boot ARM RUN: boots the node once against ARM (ours, dnsmasq or dnsmasq-http); sets
# t_kernel, t_ready and t_registered (seconds from QEMU start).
one_boot() {
    run_dir="$work/$1-$2"
    mkdir -p "$run_dir"
    netns_up
    peer_pids=()
    case $1 in
    ours)
        start_frontend pxe
        if [ -z "$ours_base" ]; then
            local url
            url=$(grep -o 'pxe serving http://[^ ]*' "$run_dir/frontend.log" | cut -d' ' -f3)
            ip netns exec "$ns" curl -fsS "$url" >"$www/boot.ipxe"
            ours_base=${url%/boot.ipxe}
            sed -e "s#$ours_base/node/#tftp://$server/#g" -e "s#$ours_base#tftp://$server#g" \
                "$www/boot.ipxe" >"$tftp/boot.ipxe"
        fi
        ;;
    dnsmasq)
        start_frontend plain
        start_dnsmasq "$tftp" boot.ipxe
        ;;
    dnsmasq-http)
        start_frontend plain
        start_nginx
        start_dnsmasq "$tftp_http" "$ours_base/boot.ipxe"
        ;;
    esac
    local start
    start=$(now)
    ip netns exec "$ns" qemu-system-x86_64 -accel tcg,thread=multi -cpu qemu64,+svm,+npt \
        -nodefaults -no-user-config -display none -vga none -no-reboot -m 1024 \
        -chardev "file,id=console,path=$run_dir/console" -serial chardev:console \
        -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
        -device "virtio-net-pci,netdev=n0,mac=$mac,bootindex=1" >"$run_dir/qemu.log" 2>&1 &
    local qemu_pid=$!
    local pids=("$qemu_pid" "$frontend_pid" "${peer_pids[@]}")
    t_kernel=$(wait_for "$run_dir/console" 'Linux version' "$start" 300 "${pids[@]}")
    t_ready=$(wait_for "$run_dir/console" 'mallee-init: ready' "$start" 300 "${pids[@]}")
    t_registered=$(wait_for "$run_dir/frontend.log" "node registered.*$node_id" "$start" 300 \
        "${pids[@]}")
    if [ "$1" = dnsmasq-http ]; then
        local path
        for path in /boot.ipxe /node/vmlinuz /node/initramfs; do
            grep -qE "\"GET $path HTTP/[0-9.]+\" 200 " "$run_dir/nginx-access.log" && continue
            echo "bench-pxe: the node booted without fetching $path from nginx" >&2
            show_logs
            return 1
        done
    fi
    netns_down
    rm -rf "$run_dir"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A times
for i in $(seq "$runs"); do
    line="bench-pxe: run $i:"
    for arm in ours dnsmasq dnsmasq-http; do
        one_boot "$arm" "$i"
        times[$arm-kernel]+="$t_kernel " times[$arm-ready]+="$t_ready "
        times[$arm-registered]+="$t_registered "
        line+=" $arm kernel=$t_kernel ready=$t_ready registered=$t_registered;"
    done
    echo "${line%;}" >&2
done

echo "bench-pxe: seconds from QEMU power-on, median of $runs runs; ratio = peer/ours, > 1 means ours is faster"
for case in kernel ready registered; do
    o=$(printf '%s\n' ${times[ours-$case]} | median)
    for peer in dnsmasq dnsmasq-http; do
        p=$(printf '%s\n' ${times[$peer-$case]} | median)
        awk -v c="$case" -v o="$o" -v peer="$peer" -v p="$p" \
            'BEGIN { printf "bench: pxe %s ours=%.2f %s=%.2f ratio=%.2f\n", c, o, peer, p, p / o }'
    done
done
