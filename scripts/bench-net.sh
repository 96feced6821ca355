#!/usr/bin/env bash
# Instance networking, mallee-vmm vs QEMU (-enable-kvm, -netdev tap,vhost=on + virtio-net-pci), in
# one cloud run: the frontend appliance and two nodes whose agent runs each test guest under the
# VMM its user data names (same taps, VLAN bridges, addresses and rules for both). Prints:
#   bench: net instance-tcp|instance-rtt|outside-tcp|outside-rtt ours=<v> qemu=<v> unit=<MB/s|us> ratio=<x>
# (ratio above 1: ours is better). Env: NET_BENCH_SECS (default 5), NET_BENCH_ROUNDS (default 5),
# NET_BENCH_PINGS (default 200). Needs `just images` (the appliance, the test guest, the pinned
# kernel) and QEMU on the host (`just setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p mallee-qemu-tests --bench net
