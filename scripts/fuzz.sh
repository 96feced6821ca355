#!/usr/bin/env bash
# Run every cargo-fuzz target in the workspace (`<crate>/fuzz/fuzz_targets/*.rs`) for a bounded
# time each: `scripts/fuzz.sh [SECONDS]` (default 20). A crash fails the run and leaves the
# reproducer under <crate>/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# libFuzzer needs nightly's -Z flags; use the nightly toolchain when there is one, else let
# stable accept them.
if cargo +nightly --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
# One target directory for every fuzz crate: they pin the same libFuzzer, serde, ... so each is
# built once, not once per crate (the builds, not the runs, are most of this script's time).
target_dir="$PWD/target/fuzz"
for dir in */fuzz; do
    crate=${dir%/fuzz}
    for target in "$dir"/fuzz_targets/*.rs; do
        name=$(basename "$target" .rs)
        echo "fuzz: $crate/$name for ${secs}s"
        log=$(mktemp)
        if ! (cd "$crate" && "${fuzz[@]}" run --target-dir "$target_dir" "$name" -- -max_total_time="$secs" -rss_limit_mb=2048) >"$log" 2>&1; then
            tail -40 "$log"
            echo "fuzz: $crate/$name FAILED (reproducer under $crate/fuzz/artifacts/$name/)"
            exit 1
        fi
        grep -E '^Done [0-9]+ runs' "$log" | sed "s|^|fuzz: $crate/$name: |" || true
        rm -f "$log"
    done
done
