#!/usr/bin/env bash
# RunInstances → SSH login for the Debian cloud image, first launch (the node fetches the image)
# and cached launch, each against the guest's own boot: its /proc/uptime read by that same login.
# One cloud under QEMU as `just demo` runs it (the appliance under TCG, one node). Prints
#   bench: launch debian-ssh first_ms=<ms> guest_up_ms=<ms> added_ms=<ms> ratio=<x>
#   bench: launch debian-ssh cached(best of 2) cached_ms=<ms> guest_up_ms=<ms> added_ms=<ms> ratio=<x>
# Needs `just images` (the appliance and the Debian cloud image) and `just setup` (QEMU, dnsmasq,
# the AWS CLI, ssh); runs as root (network namespace, taps).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p mallee-qemu-tests --bench launch
