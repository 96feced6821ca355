#!/usr/bin/env bash
# Run every cargo-fuzz target in the workspace (`fuzz/fuzz_targets/*.rs`, one crate) for a
# bounded time each: `scripts/fuzz.sh [SECONDS]` (default 20). A crash fails the run and leaves
# the reproducer under fuzz/artifacts/<target>/.
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
# One build of every target (the dependencies are compiled once, the targets in parallel), then
# the runs. The build, not the runs, was most of this script's time.
echo "fuzz: building $(ls fuzz/fuzz_targets | wc -l) targets"
start=$SECONDS
"${fuzz[@]}" build --fuzz-dir fuzz
echo "fuzz: built in $((SECONDS - start))s"
for target in fuzz/fuzz_targets/*.rs; do
    name=$(basename "$target" .rs)
    echo "fuzz: $name for ${secs}s"
    log=$(mktemp)
    if ! "${fuzz[@]}" run --fuzz-dir fuzz "$name" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $name FAILED (reproducer under fuzz/artifacts/$name/)"
        exit 1
    fi
    grep -E '^Done [0-9]+ runs' "$log" | sed "s|^|fuzz: $name: |" || true
    rm -f "$log"
done
