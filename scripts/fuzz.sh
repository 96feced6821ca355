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
# each binary run straight (`cargo fuzz run` would re-check the build for every target).
# FUZZ_PROFILE=dev builds unoptimised: much quicker to build, slower to fuzz (CI's smoke run).
profile=${FUZZ_PROFILE:-release}
flags=()
[ "$profile" = dev ] && flags=(--dev)
echo "fuzz: building $(ls fuzz/fuzz_targets | wc -l) targets ($profile)"
start=$SECONDS
"${fuzz[@]}" build --fuzz-dir fuzz "${flags[@]}"
echo "fuzz: built in $((SECONDS - start))s"
[ "$profile" = dev ] && out=debug || out=release
bin_dir="fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/$out"
# One target per core at a time (libFuzzer runs one process on one core), so the whole run takes
# about SECONDS x targets / cores.
jobs_max=${FUZZ_JOBS:-$(nproc)}
run_one() {
    local name=$1 log
    mkdir -p "fuzz/corpus/$name" "fuzz/artifacts/$name"
    log=$(mktemp)
    if ! "$bin_dir/$name" -max_total_time="$secs" -rss_limit_mb=2048 \
        -artifact_prefix="fuzz/artifacts/$name/" "fuzz/corpus/$name" >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $name FAILED (reproducer under fuzz/artifacts/$name/)"
        echo "$name" >>"$failures"
        rm -f "$log"
        return 1
    fi
    grep -E '^Done [0-9]+ runs' "$log" | sed "s|^|fuzz: $name: |" || true
    rm -f "$log"
}
failures=$(mktemp)
trap 'rm -f "$failures"' EXIT
echo "fuzz: $(ls fuzz/fuzz_targets | wc -l) targets for ${secs}s each, $jobs_max at a time"
for target in fuzz/fuzz_targets/*.rs; do
    while (($(jobs -rp | wc -l) >= jobs_max)); do
        wait -n || true
    done
    run_one "$(basename "$target" .rs)" &
done
wait
if [ -s "$failures" ]; then
    echo "fuzz: failed: $(tr '\n' ' ' <"$failures")"
    exit 1
fi
