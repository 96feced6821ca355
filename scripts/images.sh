#!/usr/bin/env bash
# Build the static binaries that go into images, then the images themselves: the node and
# frontend bundles, the test instance bundle (guest: ramdisk + ext4 root image), the Debian cloud
# image and the flashable frontend appliance (mallee-frontend.img; and under test/ two later builds
# the upgrade tests use).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-target}
triple=x86_64-unknown-linux-gnu

echo "images: building static mallee-init, mallee-vmm and mallee-frontend ($triple, +crt-static)"
# RUSTFLAGS with an explicit --target apply to our binaries only, not to build scripts or
# proc-macros, which must stay dynamic.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile image --locked --target "$triple" \
    -p mallee-init -p mallee-vmm -p mallee-frontend

bin="$target_dir/$triple/image"
cargo run --release --locked -q -p mallee-image-build -- node \
    --init "$bin/mallee-init" --vmm "$bin/mallee-vmm" --out "$target_dir/images/node"
cargo run --release --locked -q -p mallee-image-build -- frontend \
    --init "$bin/mallee-init" --frontend "$bin/mallee-frontend" \
    --node "$target_dir/images/node" --out "$target_dir/images/frontend"
cargo run --release --locked -q -p mallee-image-build -- guest \
    --init "$bin/mallee-init" --out "$target_dir/images/guest"
# The Debian cloud image instances of the end-to-end tests boot (mmdebstrap, as root; cached
# per machine, so only the first run on a machine takes its minute).
cargo run --release --locked -q -p mallee-image-build -- debian-cloud \
    --out "$target_dir/images/debian-cloud"
# The appliance's version is dated by the last commit; the upgrade tests need two later builds:
# one that boots (…-next.img) and one whose kernel panics (…-broken.img: no such init).
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
appliance() {
    SOURCE_DATE_EPOCH=$1 cargo run --release --locked -q -p mallee-image-build -- appliance \
        --bundle "$target_dir/images/frontend" --out "$target_dir/images/$2" "${@:3}"
}
appliance "$epoch" mallee-frontend.img
# Upgrades use only the ESP: small partitions keep the uploads short.
small=(--esp-mib 96 --data-mib 1)
appliance $((epoch + 1)) test/mallee-frontend-next.img "${small[@]}"
appliance $((epoch + 2)) test/mallee-frontend-broken.img "${small[@]}" --cmdline-append rdinit=/nonexistent
