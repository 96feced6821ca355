# Mallee: the verbs people type. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

# Show the verbs.
default:
    @just --list

# Install what a fresh Debian 12 machine lacks (apt packages, cargo tools). Idempotent.
setup:
    scripts/setup.sh

# Build the node, frontend and test-guest bundles (target/images/{node,frontend,guest}), the Debian cloud image (target/images/debian-cloud; as root, cached) and the flashable appliance (mallee-frontend.img; test/ holds two later builds for the upgrade tests).
images:
    scripts/images.sh

# Build a Debian bookworm cloud image with mmdebstrap (target/images/debian-cloud: vmlinuz, initrd.img, root.img, root-gpt.img, image.txt); cached per machine, needs root.
image-debian-cloud:
    cargo run --release --locked -q -p mallee-image-build -- debian-cloud

# Boot the frontend appliance and a PXE-booted node under QEMU, run a Debian cloud instance you can SSH into, keep the cloud up.
demo: images
    cargo run --release -q -p mallee-qemu-tests --bin mallee-demo

# Move the kernel pin (newest bookworm linux-image-6.1.0-*-amd64, or PACKAGE); rewrites image-build/kernel.lock.
pin-kernel package="":
    cargo run --release -q -p mallee-image-build -- pin {{package}}

# Unit, integration and end-to-end (QEMU) tests.
test: images
    rm -f target/qemu-tests/figures.txt
    @# The figures are printed after the run, a failed one too: a failing test's own output then
    @# opens with its panic message, not with the figures measured before it.
    cargo test --workspace --all-targets || { cat target/qemu-tests/figures.txt 2>/dev/null; exit 1; }
    @cat target/qemu-tests/figures.txt 2>/dev/null || true

# Benchmarks against peers in the same run: `just bench` (all) or `just bench aoe|vmm|ebs|api|pxe|appliance|launch|metadata|net|tls`.
bench which="all":
    scripts/bench.sh {{which}}

# Format and lint as CI expects.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Run every cargo-fuzz target for SECONDS each (CI runs this bounded).
fuzz seconds="20":
    scripts/fuzz.sh {{seconds}}
