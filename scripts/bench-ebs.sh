#!/usr/bin/env bash
# EBS volume I/O measured inside a guest, in one nested node: our AoE target + mallee-vmm's in-VMM
# initiator vs Eucalyptus' way (vblade -s + the Linux aoe driver + mallee-vmm on /dev/etherd/eX.Y),
# same backing file, same guest. Prints one line per case:
#   bench: ebs <case> ours=<MB/s> eucalyptus=<MB/s> ratio=<x>
# Then EBS snapshots into Walrus (frontend/benches/snapshots.rs): the storage keeper's chunked,
# incremental snapshot vs Eucalyptus' (dd of the whole volume uploaded as one object):
#   bench: ebs snapshot-first|snapshot-second ours=<MB/s> eucalyptus=<MB/s> ratio=<x>
#   bench: ebs snapshot-second-stored ours=<bytes> eucalyptus=<bytes>
# Env: EBS_BENCH_SECS (seconds per case and side, default 5), EBS_BENCH_ROUNDS (default 3);
# SNAPSHOT_BENCH_GIB, SNAPSHOT_BENCH_DATA_MIB, SNAPSHOT_BENCH_ROUNDS (see the bench).
# Needs `just images` (the node image and the pinned kernel) and `just setup` (QEMU, vblade, ip).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p mallee-qemu-tests --bench ebs
cargo bench -q -p mallee-frontend --bench snapshots
