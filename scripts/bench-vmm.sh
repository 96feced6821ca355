#!/usr/bin/env bash
# mallee-vmm vs qemu-system-x86_64 -enable-kvm (-M microvm, -M q35) inside one nested node:
# time from process start to the guest's init marker, and the monitor's memory overhead.
# Needs `just images` (the node image and the pinned kernel) and QEMU on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p mallee-qemu-tests --bench vmm
