#!/usr/bin/env bash
# The frontend appliance from power-on to API ready: the flashable image under OVMF vs the
# kernel + initramfs bundle with -kernel, alternating in one run. Needs `just images`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p mallee-qemu-tests --bench appliance
