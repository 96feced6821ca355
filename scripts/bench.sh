#!/usr/bin/env bash
# Run one benchmark group (scripts/bench-<name>.sh) or all of them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
which=${1:-all}
if [ "$which" = all ]; then
    shopt -s nullglob
    benches=("$here"/bench-*.sh)
    ((${#benches[@]})) || { echo "bench: no benchmarks yet"; exit 0; }
    for b in "${benches[@]}"; do "$b"; done
else
    b="$here/bench-$which.sh"
    [ -x "$b" ] || { echo "bench: no benchmark '$which' (have: $(cd "$here" && ls bench-*.sh 2>/dev/null | sed 's/bench-//;s/\.sh//' | tr '\n' ' '))" >&2; exit 2; }
    "$b"
fi
