#!/usr/bin/env bash
# compare-cbt.sh: one fully written image, 1 % of it changed in scattered 64 KiB writes;
# back up the change with restic (--stdin, the whole device), with mover reading the whole
# image again (--force) and with mover's changed block tracking (--parent --changed-ranges).
# Prints wall time and peak RSS of each, mover's bytes read, and checks that mover's two
# snapshots list the same blobs and that restic dumps the CBT snapshot byte for byte.
#
# Usage: scripts/compare-cbt.sh [WORKDIR] [SIZE_MIB]
#   WORKDIR default $TMPDIR/mover-cbt (wiped), SIZE_MIB default 2048
# Environment: MOVER (default target/release/mover), RESTIC (default restic).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-${TMPDIR:-/tmp}/mover-cbt}
SIZE_MIB=${2:-2048}
MOVER=${MOVER:-$ROOT/target/release/mover}
RESTIC=${RESTIC:-restic}
export RESTIC_PASSWORD=${RESTIC_PASSWORD:-compare-cbt}
T=/usr/bin/time
drop() { sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi; }
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
head -c "$((SIZE_MIB << 20))" /dev/urandom >img
"$RESTIC" -q -r r-restic init >/dev/null
"$MOVER" -q -r r-mover init >/dev/null
"$RESTIC" -q --no-cache -r r-restic backup --stdin --stdin-filename img <img
parent=$("$MOVER" -r r-mover --json backup --image "$WORK/img" | tail -1 |
    sed 's/.*"snapshot_id":"\([0-9a-f]*\)".*/\1/')
# 1 % of the image in 64 KiB writes at random 4 KiB-aligned offsets.
writes=$(((SIZE_MIB << 20) / 100 / 65536))
python3 - "$writes" "$((SIZE_MIB << 20))" >ranges <<'PY'
import os, random, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
random.seed(7)
with open("img", "r+b") as f:
    for _ in range(n):
        off = random.randrange(0, size - 65536) & ~4095
        f.seek(off)
        f.write(os.urandom(65536))
        print(off, 65536)
PY
echo "image ${SIZE_MIB} MiB, $writes writes of 64 KiB"
drop; $T -f "restic backup --stdin:           %e s, %M KiB" "$RESTIC" -q --no-cache -r r-restic backup --stdin --stdin-filename img <img
drop; $T -f "mover backup --image --force:    %e s, %M KiB" "$MOVER" -r r-mover --json backup --image --force "$WORK/img" >full.json
drop; $T -f "mover backup --changed-ranges:   %e s, %M KiB" "$MOVER" -r r-mover --json backup --image --parent "$parent" --changed-ranges ranges "$WORK/img" >cbt.json
field() { tail -1 "$1" | sed "s/.*\"$2\":\([0-9]*\).*/\1/"; }
echo "bytes read: full $(field full.json bytes_read), changed ranges $(field cbt.json bytes_read)"
cbt=$(tail -1 cbt.json | sed 's/.*"snapshot_id":"\([0-9a-f]*\)".*/\1/')
"$RESTIC" -q --no-cache -r r-mover dump "$cbt" "$WORK/img" | cmp - img && echo "restic dump of the CBT snapshot equals the image"
"$MOVER" -q -r r-mover restore "$cbt" --target-device out && cmp out img && echo "mover restore of the CBT snapshot equals the image"
