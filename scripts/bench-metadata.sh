#!/usr/bin/env bash
# The VMM's metadata service vs nginx on the node, from inside the Debian cloud image booted by
# mallee-vmm in one nested node: GETs per second and latency, a new connection per request.
# Needs `just images` (the node image, the pinned kernel, the Debian cloud image) and nginx on
# the host (`just setup`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p mallee-qemu-tests --bench metadata
