#!/usr/bin/env bash
# Builds the container image localhost/outbox:<version> (and :latest) from ops/Containerfile.
#   ops/build-image.sh            # builds the static binary first (a few minutes on 2 cores)
#   ops/build-image.sh BINARY     # uses BINARY, which must be statically linked
# The binary: RUSTFLAGS="-C target-feature=+crt-static" cargo build --release
#   --target x86_64-unknown-linux-gnu (glibc linked in; no base image needed).
# Needs podman (Debian package `podman`); OUTBOX_IMAGE overrides the image name.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
image=${OUTBOX_IMAGE:-localhost/outbox}
bin=${1:-}
if [ -z "$bin" ]; then
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked --target x86_64-unknown-linux-gnu
    bin=target/x86_64-unknown-linux-gnu/release/outbox
fi
# A dynamically linked binary would start nowhere in an image without a libc.
if readelf -l "$bin" | grep -q 'program interpreter'; then
    echo "build-image.sh: $bin is dynamically linked; build it with RUSTFLAGS=\"-C target-feature=+crt-static\"" >&2
    exit 2
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/outbox"
strip --strip-unneeded "$ctx/outbox"
mkdir "$ctx/data"
podman build --format docker -f ops/Containerfile -t "$image:$version" -t "$image:latest" "$ctx"
echo "built $image:$version ($(du -h "$ctx/outbox" | cut -f1) binary)"
