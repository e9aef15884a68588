#!/usr/bin/env bash
# compare-restic.sh: back up and restore one directory with restic and with mover, several
# rounds in one run, and print median wall time, CPU time, peak memory and repository size
# for each tool with the ratios mover/restic.
#
# Usage: scripts/compare-restic.sh DIR [ROUNDS] [--s3] [--s3-server NAME] [--work WORKDIR] [--keep]
#                                  [--restore-dir RDIR] [--before-restore CMD]
#
#   DIR       tree to back up (copied once into the work directory, see stage_source)
#   ROUNDS    rounds per measurement, default 3; medians are reported
#   --s3      also start a local S3 server, measure it alone, and compare backups to S3
#             with backups to a local directory
#   --s3-server NAME   the S3 server for --s3: moto (moto_server, Python, keeps objects in
#             memory; the default) or s3s-fs (Rust, files on disk; `cargo install
#             s3s-fs@0.14.1 --features binary`, found on PATH or in $S3S_FS), which is
#             several times faster and so further from being the bottleneck
#   --work    work directory, default $TMPDIR/mover-compare (wiped at start)
#   --keep    leave the copies and repositories in the work directory (logs/ and
#             results.txt always stay)
#   --restore-dir      restore into RDIR/restore instead of WORKDIR/restore
#   --before-restore   run CMD (with sh -c) before every timed restore, for example
#             'scripts/fresh-ext4.sh /mnt/restore' with --restore-dir /mnt/restore, so
#             that every restore starts on a new filesystem (ext4 slows down creating
#             inodes for minutes after a large tree was deleted, whichever tool runs next)
#
# Environment: RESTIC_PASSWORD (default: a fixed one), RESTIC (restic binary),
# MOVER (mover binary, default target/release/mover, built when missing).
#
# Every backup goes into a fresh repository. The tools alternate within each round (round 1
# restic first, round 2 mover first, ...) so neither always runs on the warmer machine.
# Page caches are dropped before every timed run when /proc/sys/vm/drop_caches is writable
# (root); the output says whether they were.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GNU_TIME=/usr/bin/time
TOOLS=(restic mover)

die() {
    echo "compare-restic: $*" >&2
    exit 1
}

log() {
    echo "== $*" >&2
}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

# ---------------------------------------------------------------------------------------
# Arguments and tools

DIR=""
ROUNDS=3
WITH_S3=0
KEEP=0
WORK="${TMPDIR:-/tmp}/mover-compare"
RESTORE_DIR=""
BEFORE_RESTORE=""
S3_SERVER=moto

parse_args() {
    local positional=()
    while (($#)); do
        case "$1" in
        --s3) WITH_S3=1 ;;
        --s3-server)
            (($# >= 2)) || die "--s3-server needs moto or s3s-fs"
            S3_SERVER=$2
            shift
            ;;
        --keep) KEEP=1 ;;
        --work)
            (($# >= 2)) || die "--work needs a directory"
            WORK=$2
            shift
            ;;
        --work=*) WORK=${1#--work=} ;;
        --restore-dir)
            (($# >= 2)) || die "--restore-dir needs a directory"
            RESTORE_DIR=$2
            shift
            ;;
        --before-restore)
            (($# >= 2)) || die "--before-restore needs a command"
            BEFORE_RESTORE=$2
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) positional+=("$1") ;;
        esac
        shift
    done
    ((${#positional[@]} >= 1 && ${#positional[@]} <= 2)) || {
        usage >&2
        exit 2
    }
    DIR=${positional[0]}
    ROUNDS=${positional[1]:-3}
    [[ -d $DIR ]] || die "$DIR is not a directory"
    [[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, got $ROUNDS"
    DIR=$(cd "$DIR" && pwd)
    # The work directory is wiped: refuse anything that looks like a real directory.
    case "$WORK" in
    / | /tmp | /usr | /home | /root | "$HOME" | "$ROOT") die "refusing to use $WORK as the work directory" ;;
    esac
}

check_tools() {
    RESTIC=${RESTIC:-$(command -v restic || true)}
    [[ -n $RESTIC && -x $RESTIC ]] ||
        die "restic not found: install it (Debian: apt-get install restic) or set RESTIC=/path/to/restic"
    [[ -x $GNU_TIME ]] && "$GNU_TIME" --version 2>&1 | grep -q 'GNU' ||
        die "$GNU_TIME is not GNU time: install it (Debian: apt-get install time)"
    local t
    for t in diff du cp awk sort sync; do
        command -v "$t" >/dev/null || die "$t not found"
    done
    MOVER=${MOVER:-$ROOT/target/release/mover}
    if [[ ! -x $MOVER ]]; then
        command -v cargo >/dev/null || die "$MOVER is missing and cargo is not installed to build it"
        log "building mover (release): $MOVER is missing"
        (cd "$ROOT" && cargo build --release --bin mover) || die "cargo build --release failed"
        [[ -x $MOVER ]] || die "cargo built no $MOVER"
    fi
    if ((WITH_S3)); then
        case "$S3_SERVER" in
        moto) command -v moto_server >/dev/null || die "--s3 needs moto_server (pip install 'moto[server]')" ;;
        s3s-fs)
            S3S_FS=${S3S_FS:-$(command -v s3s-fs || true)}
            [[ -n $S3S_FS && -x $S3S_FS ]] ||
                die "--s3-server s3s-fs needs s3s-fs (cargo install s3s-fs@0.14.1 --features binary) on PATH or in S3S_FS"
            ;;
        *) die "--s3-server must be moto or s3s-fs, got $S3_SERVER" ;;
        esac
        command -v curl >/dev/null || die "--s3 needs curl"
    fi
}

tool_bin() {
    case "$1" in
    restic) echo "$RESTIC" ;;
    mover) echo "$MOVER" ;;
    *) die "unknown tool $1" ;;
    esac
}

# The tools in round $1's order: odd rounds restic first, even rounds mover first.
round_order() {
    if (($1 % 2)); then echo "${TOOLS[0]} ${TOOLS[1]}"; else echo "${TOOLS[1]} ${TOOLS[0]}"; fi
}

# ---------------------------------------------------------------------------------------
# Measurement

# Cold reads for every timed run, so the second tool of a round does not read from the
# page cache the first one filled. Fails (status 1) where the caches cannot be dropped.
drop_caches() {
    sync
    [[ -w /proc/sys/vm/drop_caches ]] && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null
}

# measure NAME CMD...: runs CMD under GNU time with caches dropped; stdout and stderr go to
# $WORK/logs/NAME.{out,err}. Prints "WALL_S CPU_S RSS_KIB" on stdout. On failure it prints
# the error and returns 1: the caller records it and the run goes on, so one failure does
# not throw away the other measurements of a long run.
measure() {
    local name=$1
    shift
    local out="$WORK/logs/$name"
    drop_caches || true
    if ! "$GNU_TIME" -o "$out.time" -f '%e %U %S %M' "$@" >"$out.out" 2>"$out.err"; then
        echo "compare-restic: FAILURE: $name: $*" >&2
        tail -n 10 "$out.err" >&2
        return 1
    fi
    # GNU time writes its line last; anything before it is the command's own noise.
    tail -n 1 "$out.time" | awk '{ printf "%.2f %.2f %d\n", $1, $2 + $3, $4 }'
}

# fail WHAT: notes a failure; the report lists them and the script exits 1.
fail() {
    echo "$*" >>"$WORK/failures.txt"
}

# Appends one result row: TOOL PHASE ROUND WALL_S CPU_S RSS_KIB REPO_BYTES.
record() {
    echo "$*" >>"$WORK/results.txt"
    printf '   %-7s %-16s round %-2s wall %8ss  cpu %8ss  rss %6d MiB\n' \
        "$1" "$2" "$3" "$4" "$5" "$(($6 / 1024))" >&2
}

# median TOOL PHASE COLUMN: median of a column (4 wall, 5 cpu, 6 rss, 7 repo) over rounds.
median() {
    awk -v t="$1" -v p="$2" -v c="$3" '$1 == t && $2 == p { print $c }' "$WORK/results.txt" |
        sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "nan"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio A B: A/B with two decimals, "n/a" when B is zero or missing.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "nan" || b == "nan") print "n/a"; else printf "%.2f\n", a / b }'
}

# A number for the JSON line: "n/a" and "nan" become null.
jnum() {
    case "$1" in n/a | nan | "") echo null ;; *) echo "$1" ;; esac
}

# Field of the last JSON line a backup printed (its summary), or "n/a".
summary_field() {
    local v
    v=$(tail -n 1 "$WORK/logs/$1.out" | grep -o "\"$2\":[0-9.]*" | head -n 1 | cut -d: -f2 || true)
    echo "${v:-n/a}"
}

# ---------------------------------------------------------------------------------------
# Steps

# Backups read $SRC, a cp -a copy of DIR inside the work directory, never DIR itself: the
# cloned-volume case needs a second copy swapped in at the same path, which we cannot do to
# DIR. $CLONE is that second copy (same contents and mtimes, new inodes).
stage_source() {
    SRC="$WORK/src/vol"
    CLONE="$WORK/src/vol.clone"
    mkdir -p "$WORK/src"
    log "copying $DIR to $SRC and to its clone $CLONE"
    cp -a "$DIR" "$SRC"
    cp -a "$SRC" "$CLONE"
    SRC_BYTES=$(du -sb "$SRC" | cut -f1)
    SRC_FILES=$(find "$SRC" -type f | wc -l)
}

# Exchanges $SRC and $CLONE by rename: same path and contents, other inodes. mover skips
# such files (it ignores inode and ctime by default); restic 0.14 reads them all again.
swap_clone() {
    mv "$SRC" "$SRC.parked"
    mv "$CLONE" "$SRC"
    mv "$SRC.parked" "$CLONE"
}

init_repo() {
    local tool=$1 repo=$2
    "$(tool_bin "$tool")" -r "$repo" init >"$WORK/logs/init-$tool.log" 2>&1 ||
        die "$tool init $repo failed: $(tail -n 5 "$WORK/logs/init-$tool.log")"
}

# restore_and_verify TOOL REPO ROUND PHASE: restores the latest snapshot into a fresh
# directory, times it, and checks the restored tree equals $SRC byte for byte (symlinks
# compared as links, not followed).
restore_and_verify() {
    local tool=$1 repo=$2 round=$3 phase=$4 target="${RESTORE_DIR:-$WORK}/restore"
    if [[ -n $BEFORE_RESTORE ]]; then
        sh -c "$BEFORE_RESTORE" >"$WORK/logs/before-$phase-$tool-$round.log" 2>&1 ||
            die "--before-restore command failed: $(tail -n 3 "$WORK/logs/before-$phase-$tool-$round.log")"
    fi
    rm -rf "$target"
    local m
    if m=$(measure "$phase-$tool-$round" "$(tool_bin "$tool")" -r "$repo" restore latest --target "$target"); then
        if diff -r --no-dereference "$SRC" "$target$SRC" >"$WORK/logs/diff-$phase-$tool-$round.txt" 2>&1; then
            record "$tool" "$phase" "$round" $m 0
        else
            echo "compare-restic: FAILURE: $tool $phase differs from the source (round $round):" >&2
            head -n 20 "$WORK/logs/diff-$phase-$tool-$round.txt" >&2
            fail "$tool $phase round $round: restored tree differs from the source (logs/diff-$phase-$tool-$round.txt)"
        fi
    else
        fail "$tool $phase round $round: $(grep -m 1 -i 'error\|fatal' "$WORK/logs/$phase-$tool-$round.err" || echo "exit status non-zero")"
    fi
    rm -rf "$target"
}

compare_local() {
    local round tool repo m
    declare -A backed_up
    for ((round = 1; round <= ROUNDS; round++)); do
        log "round $round/$ROUNDS: $(round_order "$round")"
        for tool in $(round_order "$round"); do
            repo="$WORK/repo-$tool"
            rm -rf "$repo"
            init_repo "$tool" "$repo"
            backed_up[$tool]=0
            if ! m=$(measure "backup-$tool-$round" "$(tool_bin "$tool")" -r "$repo" backup --json "$SRC"); then
                fail "$tool backup round $round failed (logs/backup-$tool-$round.err)"
                continue
            fi
            backed_up[$tool]=1
            record "$tool" backup "$round" $m "$(du -sb "$repo" | cut -f1)"
            restore_and_verify "$tool" "$repo" "$round" restore
        done
        swap_clone
        for tool in $(round_order "$round"); do
            ((backed_up[$tool])) || continue
            repo="$WORK/repo-$tool"
            if ! m=$(measure "rebackup-$tool-$round" "$(tool_bin "$tool")" -r "$repo" backup --json "$SRC"); then
                fail "$tool clone re-backup round $round failed (logs/rebackup-$tool-$round.err)"
                continue
            fi
            record "$tool" rebackup "$round" $m 0
            echo "   $tool re-backup of the clone: files_unmodified=$(summary_field "rebackup-$tool-$round" files_unmodified)" \
                "files_changed=$(summary_field "rebackup-$tool-$round" files_changed)" \
                "data_added=$(summary_field "rebackup-$tool-$round" data_added)" >&2
        done
    done
    rm -rf "$WORK/repo-restic" "$WORK/repo-mover"
}

# ---------------------------------------------------------------------------------------
# S3 (moto_server or s3s-fs)

SERVER_PID=""
S3_URL=""
S3_SIGN=()

# Stops the S3 server and frees the disk; logs/ and results.txt stay for a look after a failure.
cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if ((KEEP == 0)) && [[ -n ${WORK_CREATED:-} ]]; then
        rm -rf "$WORK/src" "$WORK/restore" "$WORK"/repo-* "$WORK/probe.bin" "$WORK/s3-data"
    fi
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 20000))
    fi
}

start_s3_server() {
    local port
    port=$(free_port)
    S3_URL="http://127.0.0.1:$port"
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=testsecret AWS_DEFAULT_REGION=us-east-1
    # curl signs its requests like the tools sign theirs: both servers refuse anonymous
    # requests to private buckets, and s3s-fs also wants the payload hash header.
    S3_SIGN=(--aws-sigv4 "aws:amz:$AWS_DEFAULT_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"
        -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
    log "starting $S3_SERVER on $S3_URL"
    case "$S3_SERVER" in
    moto) moto_server -H 127.0.0.1 -p "$port" >"$WORK/logs/s3-server.log" 2>&1 & ;;
    s3s-fs)
        mkdir -p "$WORK/s3-data"
        "$S3S_FS" --host 127.0.0.1 --port "$port" --access-key "$AWS_ACCESS_KEY_ID" \
            --secret-key "$AWS_SECRET_ACCESS_KEY" "$WORK/s3-data" >"$WORK/logs/s3-server.log" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        curl -s -o /dev/null "$S3_URL/" 2>/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || die "$S3_SERVER exited: $(tail -n 5 "$WORK/logs/s3-server.log")"
        sleep 0.2
    done
    curl -fsS "${S3_SIGN[@]}" -X PUT "$S3_URL/bucket" >/dev/null || die "could not create the bucket on $S3_URL"
}

# The server alone: a 256 MiB object up and down with curl, the ceiling any S3 backup or
# restore here can reach.
probe_s3_server() {
    local obj="$WORK/probe.bin"
    head -c $((256 << 20)) /dev/urandom >"$obj"
    local up down
    up=$(curl -fsS "${S3_SIGN[@]}" -o /dev/null -w '%{time_total}' -T "$obj" "$S3_URL/bucket/probe.bin") ||
        die "upload to $S3_SERVER failed"
    down=$(curl -fsS "${S3_SIGN[@]}" -o /dev/null -w '%{time_total}' "$S3_URL/bucket/probe.bin") ||
        die "download from $S3_SERVER failed"
    curl -fsS "${S3_SIGN[@]}" -o /dev/null -X DELETE "$S3_URL/bucket/probe.bin" || true
    rm -f "$obj"
    SERVER_UP_MIBS=$(awk -v t="$up" 'BEGIN { printf "%.0f", 256 / t }')
    SERVER_DOWN_MIBS=$(awk -v t="$down" 'BEGIN { printf "%.0f", 256 / t }')
    log "$S3_SERVER alone: upload 256 MiB in ${up}s ($SERVER_UP_MIBS MiB/s), download in ${down}s ($SERVER_DOWN_MIBS MiB/s)"
}

# Per round and tool (alternating): backup to a fresh local repository and to a fresh S3
# prefix (alternating which goes first), then restore mover's S3 snapshot and verify it.
compare_s3() {
    start_s3_server
    probe_s3_server
    local round tool m repo where first
    for ((round = 1; round <= ROUNDS; round++)); do
        log "S3 round $round/$ROUNDS"
        for tool in $(round_order "$round"); do
            # Which target goes first alternates with the round and differs between the
            # two tools of a round (the names have 6 and 5 letters).
            if (((round + ${#tool}) % 2)); then first="local s3"; else first="s3 local"; fi
            for where in $first; do
                if [[ $where == local ]]; then
                    repo="$WORK/repo-$tool-local-$round"
                else
                    repo="s3:$S3_URL/bucket/$tool-$round"
                fi
                init_repo "$tool" "$repo"
                if m=$(measure "s3-backup-$tool-$where-$round" "$(tool_bin "$tool")" -r "$repo" backup --json "$SRC"); then
                    record "$tool" "backup-$where" "$round" $m 0
                else
                    fail "$tool backup to $where round $round failed (logs/s3-backup-$tool-$where-$round.err)"
                fi
                if [[ $where == local ]]; then rm -rf "$repo"; fi
            done
        done
        restore_and_verify mover "s3:$S3_URL/bucket/mover-$round" "$round" restore-s3
    done
}

# ---------------------------------------------------------------------------------------
# Report

# row LABEL RESTIC MOVER RATIO
row() {
    printf '%-36s %12s %12s %14s\n' "$@"
}

mib() {
    awk -v b="$1" 'BEGIN { if (b == "nan") print "nan"; else printf "%.1f\n", b / 1048576 }'
}

report() {
    local t p
    declare -A M
    for t in "${TOOLS[@]}"; do
        for p in backup restore rebackup; do
            M[$t.$p.wall]=$(median "$t" "$p" 4)
            M[$t.$p.cpu]=$(median "$t" "$p" 5)
            M[$t.$p.rss]=$(mib "$(awk -v k="$(median "$t" "$p" 6)" 'BEGIN { print k * 1024 }')")
        done
        M[$t.repo]=$(mib "$(median "$t" backup 7)")
        M[$t.frac]=$(ratio "${M[$t.rebackup.wall]}" "${M[$t.backup.wall]}")
        M[$t.mibs]=$(awk -v b="$SRC_BYTES" -v w="${M[$t.backup.wall]}" 'BEGIN { printf "%.0f", b / 1048576 / w }')
    done

    echo
    echo "Source: $DIR ($(mib "$SRC_BYTES") MiB, $SRC_FILES files), $ROUNDS rounds, medians; page caches $CACHES"
    echo "restic: $("$RESTIC" version | head -n 1)"
    echo "mover:  $("$MOVER" version 2>/dev/null | head -n 1) ($MOVER)"
    echo "Load: start [$LOAD_START]  end [$(uptime | sed 's/.*load average: //')]; $(nproc) CPUs"
    echo
    row "" restic mover "mover/restic"
    local k label
    for k in backup restore rebackup; do
        case $k in
        backup) label="backup" ;;
        restore) label="restore" ;;
        rebackup) label="clone re-backup" ;;
        esac
        row "$label wall (s)" "${M[restic.$k.wall]}" "${M[mover.$k.wall]}" "$(ratio "${M[mover.$k.wall]}" "${M[restic.$k.wall]}")"
        row "$label CPU user+sys (s)" "${M[restic.$k.cpu]}" "${M[mover.$k.cpu]}" "$(ratio "${M[mover.$k.cpu]}" "${M[restic.$k.cpu]}")"
        row "$label peak RSS (MiB)" "${M[restic.$k.rss]}" "${M[mover.$k.rss]}" "$(ratio "${M[mover.$k.rss]}" "${M[restic.$k.rss]}")"
    done
    row "backup throughput (MiB/s)" "${M[restic.mibs]}" "${M[mover.mibs]}" "$(ratio "${M[mover.mibs]}" "${M[restic.mibs]}")"
    row "repository size (MiB)" "${M[restic.repo]}" "${M[mover.repo]}" "$(ratio "${M[mover.repo]}" "${M[restic.repo]}")"
    row "re-backup / first backup (wall)" "${M[restic.frac]}" "${M[mover.frac]}" ""

    local s3json='null'
    if ((WITH_S3)); then
        for t in "${TOOLS[@]}"; do
            M[$t.s3]=$(median "$t" backup-s3 4)
            M[$t.s3local]=$(median "$t" backup-local 4)
            M[$t.s3ratio]=$(ratio "${M[$t.s3]}" "${M[$t.s3local]}")
        done
        M[mover.s3restore]=$(median mover restore-s3 4)
        echo
        echo "S3 ($S3_SERVER at $S3_URL; alone: upload $SERVER_UP_MIBS MiB/s, download $SERVER_DOWN_MIBS MiB/s for a 256 MiB object)"
        row "" restic mover "mover/restic"
        row "backup to local dir wall (s)" "${M[restic.s3local]}" "${M[mover.s3local]}" "$(ratio "${M[mover.s3local]}" "${M[restic.s3local]}")"
        row "backup to S3 wall (s)" "${M[restic.s3]}" "${M[mover.s3]}" "$(ratio "${M[mover.s3]}" "${M[restic.s3]}")"
        row "S3 / local (wall)" "${M[restic.s3ratio]}" "${M[mover.s3ratio]}" ""
        row "restore from S3 wall (s)" "" "${M[mover.s3restore]}" ""
        s3json=$(printf '{"server":"%s","server_upload_mib_s":%s,"server_download_mib_s":%s,"restic":{"local_wall_s":%s,"s3_wall_s":%s,"s3_over_local":%s},"mover":{"local_wall_s":%s,"s3_wall_s":%s,"s3_over_local":%s,"s3_restore_wall_s":%s}}' \
            "$S3_SERVER" "$SERVER_UP_MIBS" "$SERVER_DOWN_MIBS" "${M[restic.s3local]}" "${M[restic.s3]}" "$(jnum "${M[restic.s3ratio]}")" \
            "${M[mover.s3local]}" "${M[mover.s3]}" "$(jnum "${M[mover.s3ratio]}")" "${M[mover.s3restore]}")
    fi

    echo
    local failures='[]'
    if [[ -s $WORK/failures.txt ]]; then
        echo "FAILURES (medians above leave these runs out; logs in $WORK/logs):"
        sed 's/^/  /' "$WORK/failures.txt"
        failures=$(awk '{ gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); printf "%s\"%s\"", (NR > 1 ? "," : "["), $0 } END { print "]" }' "$WORK/failures.txt")
        echo
    fi
    local tj=()
    for t in "${TOOLS[@]}"; do
        tj+=("$(printf '"%s":{"backup":{"wall_s":%s,"cpu_s":%s,"rss_mib":%s},"restore":{"wall_s":%s,"cpu_s":%s,"rss_mib":%s},"rebackup":{"wall_s":%s,"cpu_s":%s,"rss_mib":%s},"repo_mib":%s,"rebackup_over_backup":%s}' \
            "$t" "${M[$t.backup.wall]}" "${M[$t.backup.cpu]}" "${M[$t.backup.rss]}" \
            "${M[$t.restore.wall]}" "${M[$t.restore.cpu]}" "${M[$t.restore.rss]}" \
            "${M[$t.rebackup.wall]}" "${M[$t.rebackup.cpu]}" "${M[$t.rebackup.rss]}" \
            "${M[$t.repo]}" "$(jnum "${M[$t.frac]}")")")
    done
    printf '{"dir":"%s","source_bytes":%s,"source_files":%s,"rounds":%s,"caches_dropped":%s,%s,%s,"ratio_mover_over_restic":{"backup_wall":%s,"backup_cpu":%s,"restore_wall":%s,"restore_cpu":%s,"clone_rebackup_wall":%s,"repo_size":%s},"s3":%s,"failures":%s}\n' \
        "$DIR" "$SRC_BYTES" "$SRC_FILES" "$ROUNDS" \
        "$([[ $CACHES == dropped* ]] && echo true || echo false)" \
        "${tj[0]}" "${tj[1]}" \
        "$(jnum "$(ratio "${M[mover.backup.wall]}" "${M[restic.backup.wall]}")")" \
        "$(jnum "$(ratio "${M[mover.backup.cpu]}" "${M[restic.backup.cpu]}")")" \
        "$(jnum "$(ratio "${M[mover.restore.wall]}" "${M[restic.restore.wall]}")")" \
        "$(jnum "$(ratio "${M[mover.restore.cpu]}" "${M[restic.restore.cpu]}")")" \
        "$(jnum "$(ratio "${M[mover.rebackup.wall]}" "${M[restic.rebackup.wall]}")")" \
        "$(jnum "$(ratio "${M[mover.repo]}" "${M[restic.repo]}")")" \
        "$s3json" "$failures" |
        sed 's/:nan\([,}]\)/:null\1/g' # a phase with no successful run has no median
}

main() {
    parse_args "$@"
    check_tools
    export RESTIC_PASSWORD=${RESTIC_PASSWORD:-mover-compare-password}
    LOAD_START=$(uptime | sed 's/.*load average: //')
    # measure() runs in command substitutions, so whether dropping works is found out here.
    if drop_caches; then
        CACHES="dropped before every timed run"
    else
        CACHES="NOT dropped (no write access to /proc/sys/vm/drop_caches): runs read warm caches"
    fi
    log "page caches: $CACHES"
    rm -rf "$WORK"
    mkdir -p "$WORK/logs"
    WORK_CREATED=1
    trap cleanup EXIT
    : >"$WORK/results.txt"
    : >"$WORK/failures.txt"
    stage_source
    compare_local
    if ((WITH_S3)); then
        compare_s3
    fi
    report
    if ((KEEP)); then log "kept $WORK"; fi
    if [[ -s $WORK/failures.txt ]]; then
        exit 1
    fi
}

main "$@"
