#!/usr/bin/env bash
# A node's image fetch (`GET /_node/object/...` with the node agent's own client) over TLS, the
# frontend's key pinned, vs plain HTTP, in one run: two in-process frontends on 127.0.0.1, same
# code but for TLS (init/benches/image_fetch.rs). Prints
#   bench: tls image-fetch MiB/s tls=<v> plain=<v> ratio=<tls/plain> (target >= 0.9) ...; cipher <suite>
#   bench: tls image-fetch-best MiB/s tls=<v> plain=<v> ratio=<x>
#   bench: tls image-fetch-cpu s/GiB client tls=<s> plain=<s> server tls=<s> plain=<s>
# Env: MALLEE_BENCH_TLS_MIB (object size, default 256); TMPDIR (where the stores go, default
# /var/tmp). Needs nothing beyond the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p mallee-init --bench image_fetch
