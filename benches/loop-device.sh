#!/usr/bin/env bash
# Runs a benchmark with its temporary directories (and so its data directories) on a fresh
# ext4 filesystem on a loop device, and has it read the bytes it wrote off that device
# (see write_bytes in benches/support/mod.rs). Needs root.
#   benches/loop-device.sh cargo bench --bench drain
# OUTBOX_BENCH_LOOP_SIZE sets the filesystem's size (default 16G; the image is sparse).
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "loop-device.sh: needs root (losetup, mount)" >&2; exit 2; }
work=$(mktemp -d)
dev=
cleanup() {
    umount "$work/mnt" 2>/dev/null || true
    [ -n "$dev" ] && losetup -d "$dev" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
truncate -s "${OUTBOX_BENCH_LOOP_SIZE:-16G}" "$work/fs.img"
mkfs.ext4 -q "$work/fs.img"
# Direct I/O: the loop device writes through to the disk, so an fdatasync waits for it.
dev=$(losetup --direct-io=on --find --show "$work/fs.img")
mkdir "$work/mnt"
mount "$dev" "$work/mnt"
export TMPDIR="$work/mnt" OUTBOX_BENCH_DEVICE="${dev#/dev/}"
echo "loop-device.sh: $dev on $TMPDIR" >&2
"$@"
