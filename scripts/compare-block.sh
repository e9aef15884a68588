#!/usr/bin/env bash
# compare-block.sh: back up and restore one sparse ext4 image with restic (--stdin, dump)
# and with mover (--image, restore --target-device), and print wall time and peak RSS of
# each, plus mover with one rayon thread against all of them.
#
# Usage: scripts/compare-block.sh [WORKDIR] [SOURCE_DIR]
#   WORKDIR     default $TMPDIR/mover-block (wiped), SOURCE_DIR default /usr/share
# Environment: MOVER (default target/release/mover), RESTIC (default restic).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-${TMPDIR:-/tmp}/mover-block}
SRC=${2:-/usr/share}
MOVER=${MOVER:-$ROOT/target/release/mover}
RESTIC=${RESTIC:-restic}
export RESTIC_PASSWORD=${RESTIC_PASSWORD:-compare-block}
T=/usr/bin/time
drop() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi; }
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
truncate -s 3G img && mkfs.ext4 -q -d "$SRC" img
echo "image: $(du -h --apparent-size img | cut -f1) apparent, $(du -h img | cut -f1) allocated"
"$RESTIC" -q -r r-restic init >/dev/null
for t in all 1; do "$MOVER" -q -r "r-mover-$t" init >/dev/null; done
drop; $T -f "restic backup --stdin:          %e s, %M KiB" "$RESTIC" -q --no-cache -r r-restic backup --stdin --stdin-filename img <img
drop; $T -f "mover backup --image:           %e s, %M KiB" "$MOVER" -q -r r-mover-all backup --image "$WORK/img"
drop; $T -f "mover backup --image, 1 thread: %e s, %M KiB" env RAYON_NUM_THREADS=1 "$MOVER" -q -r r-mover-1 backup --image "$WORK/img"
drop; $T -f "restic dump > file:             %e s, %M KiB" sh -c "\"$RESTIC\" -q --no-cache -r r-restic dump latest img > out-restic"
drop; $T -f "mover restore --target-device:  %e s, %M KiB" "$MOVER" -q -r r-mover-all restore latest --target-device out-mover
cmp img out-mover && cmp img out-restic && echo "both restores equal the image"
du -sh r-restic r-mover-all
