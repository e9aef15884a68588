#!/usr/bin/env bash
# compare-prune.sh: prune the same large repository with mover and with restic, and print
# wall time, CPU time and peak memory of each, with the ratios mover/restic.
#
# Usage: scripts/compare-prune.sh [FILES] [--work WORKDIR] [--keep]
#
#   FILES   small files in the generated tree, default 1000000: each file is one data blob,
#           so the repository holds at least that many blobs (plus the trees)
#   --work  work directory, default $TMPDIR/mover-compare-prune (wiped at start)
#   --keep  leave the tree and the repositories in the work directory
#
# The repository is written by mover: a first snapshot of dirs a/ (60 % of the files) and
# b/ (40 %), a second one of a/ alone; `forget --keep-last 1` then leaves b/'s data blobs
# unused and the tree packs partly used. One copy of that repository is pruned by each
# tool (mover, restic 0.18 when `restic-0.18` is on PATH, and Debian's restic), each after
# `sync` and a dropped page cache. Afterwards `restic check` must pass on every copy.
#
# Environment: MOVER (default target/release/mover), RESTIC (default restic),
# RESTIC_018 (default restic-0.18), RESTIC_PASSWORD (default: a fixed one).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILES=1000000
WORK="${TMPDIR:-/tmp}/mover-compare-prune"
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --work) WORK="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) FILES="$1"; shift ;;
    esac
done
MOVER="${MOVER:-$ROOT/target/release/mover}"
RESTIC="${RESTIC:-restic}"
RESTIC_018="${RESTIC_018:-restic-0.18}"
export RESTIC_PASSWORD="${RESTIC_PASSWORD:-compare-prune}"
[ -x "$MOVER" ] || (cd "$ROOT" && cargo build --release)

drop_caches() {
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

# timed NAME CMD...: runs CMD under GNU time, prints "NAME wall cpu rss_mib".
timed() {
    local name=$1; shift
    drop_caches
    /usr/bin/time -f "%e %U %S %M" -o "$WORK/time.$name" "$@" > "$WORK/log.$name" 2>&1 \
        || { echo "$name failed:" >&2; tail -20 "$WORK/log.$name" >&2; exit 1; }
    read -r wall user sys rss < "$WORK/time.$name"
    printf '%s %s %s %s\n' "$name" "$wall" "$(echo "$user + $sys" | bc)" "$((rss / 1024))"
}

rm -rf "$WORK"
mkdir -p "$WORK"
echo "== generating $FILES small files" >&2
python3 - "$WORK/src" "$FILES" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
a = n * 6 // 10
for i in range(n):
    d = os.path.join(root, "a" if i < a else "b", "%04d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "%d" % i), "w") as f:
        f.write("file %d %s\n" % (i, os.urandom(24).hex()))
PY
echo "== backing up" >&2
"$MOVER" -r "$WORK/repo" init -q
(cd "$WORK" && "$MOVER" -r repo backup -q --host bench src)
rm -rf "$WORK/src/b"
(cd "$WORK" && "$MOVER" -r repo backup -q --host bench src)
"$MOVER" -r "$WORK/repo" forget -q --keep-last 1
blobs=$("$RESTIC" -r "$WORK/repo" --no-cache list blobs | wc -l)
echo "== repository: $blobs blobs, $(du -sm "$WORK/repo" | cut -f1) MiB" >&2

tools=(mover)
command -v "$RESTIC_018" > /dev/null && tools+=(restic-0.18)
command -v "$RESTIC" > /dev/null && tools+=(restic-0.14)
for t in "${tools[@]}"; do cp -a "$WORK/repo" "$WORK/repo-$t"; done
results=()
for t in "${tools[@]}"; do
    case $t in
        mover) results+=("$(timed "$t" "$MOVER" -r "$WORK/repo-$t" prune)") ;;
        restic-0.18) results+=("$(timed "$t" "$RESTIC_018" -r "$WORK/repo-$t" --no-cache prune)") ;;
        restic-0.14) results+=("$(timed "$t" "$RESTIC" -r "$WORK/repo-$t" --no-cache prune)") ;;
    esac
    "$RESTIC" -r "$WORK/repo-$t" --no-cache check > "$WORK/check.$t" 2>&1 \
        || { echo "restic check failed after $t's prune" >&2; exit 1; }
done

echo
printf '%-12s %10s %10s %10s %12s\n' tool wall_s cpu_s peak_MiB repo_MiB
read -r _ mwall mcpu mrss <<< "${results[0]}"
for r in "${results[@]}"; do
    read -r name wall cpu rss <<< "$r"
    printf '%-12s %10s %10s %10s %12s\n' "$name" "$wall" "$cpu" "$rss" \
        "$(du -sm "$WORK/repo-$name" | cut -f1)"
done
for r in "${results[@]:1}"; do
    read -r name wall cpu rss <<< "$r"
    printf 'mover / %s: wall %.2f, cpu %.2f, peak memory %.2f\n' "$name" \
        "$(echo "$mwall / $wall" | bc -l)" "$(echo "$mcpu / $cpu" | bc -l)" \
        "$(echo "$mrss / $rss" | bc -l)"
done
echo "($blobs blobs; every pruned copy passed restic check)"
[ "$KEEP" = 1 ] || rm -rf "$WORK/src" "$WORK"/repo*
