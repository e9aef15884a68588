#!/usr/bin/env bash
# fresh-ext4.sh MOUNTPOINT [SIZE] [IMAGE]: unmounts MOUNTPOINT if mounted, makes a new ext4
# filesystem of SIZE (default 16G) in the sparse file IMAGE (default MOUNTPOINT.img) on a
# direct-I/O loop device and mounts it at MOUNTPOINT. Needs root.
#
# For benchmarks that write large trees: every run starts on an empty filesystem, with
# inode tables initialised up front (no lazy init running in the background) and no
# recently deleted inodes (ext4 scans past those for minutes when allocating new ones).

set -euo pipefail

MNT=${1:?usage: fresh-ext4.sh MOUNTPOINT [SIZE] [IMAGE]}
SIZE=${2:-16G}
IMG=${3:-${MNT%/}.img}

die() {
    echo "fresh-ext4: $*" >&2
    exit 1
}

((EUID == 0)) || die "needs root (losetup, mkfs, mount)"
for t in losetup mkfs.ext4 mount umount mountpoint truncate; do
    command -v "$t" >/dev/null || die "$t not found"
done

mkdir -p "$MNT"
if mountpoint -q "$MNT"; then
    umount "$MNT" || die "cannot unmount $MNT"
fi
# Detach loop devices left on this image by earlier runs.
losetup -j "$IMG" 2>/dev/null | cut -d: -f1 | while read -r dev; do
    losetup -d "$dev" || true
done
rm -f "$IMG"
truncate -s "$SIZE" "$IMG"
dev=$(losetup -f --show --direct-io=on "$IMG") || die "losetup failed for $IMG"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$dev" || die "mkfs.ext4 failed on $dev"
mount "$dev" "$MNT" || die "cannot mount $dev at $MNT"
