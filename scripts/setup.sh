#!/usr/bin/env bash
# Install what a fresh Debian 12 machine lacks. Idempotent: installs only what is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

mapfile -t wanted < <(grep -v '^\s*#' "$here/apt-packages.txt" | awk 'NF {print $1}')
missing=()
for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
updated=0
# The pinned packages the image builder downloads (kernel.lock, boot.lock) must be in apt's
# index: a machine whose lists predate the pin (or have none) gets them refreshed.
for lock in "$here"/../image-build/*.lock; do
    while read -r pkg ver; do
        if ! apt-cache show "$pkg=$ver" >/dev/null 2>&1; then
            echo "setup: apt's lists lack $pkg=$ver; refreshing them"
            apt-get update -qq
            updated=1
            break 2
        fi
    done < <(awk -F' = ' '/^package/ {gsub(/"/, "", $2); p = $2} /^version/ {gsub(/"/, "", $2); print p, $2}' "$lock")
done

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    ((updated)) || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    echo "setup: Debian packages present"
fi

if ! command -v just >/dev/null; then
    echo "setup: installing just"
    cargo install just --locked
fi

# Python packages for the client interop tests (AWS CLI, boto3) and peers.
if [ -s "$here/pip-packages.txt" ]; then
    mapfile -t pips < <(grep -v '^\s*#' "$here/pip-packages.txt" | awk 'NF {print $1}')
    if ((${#pips[@]})); then
        python3 -m pip install -q "${pips[@]}"
    fi
fi
