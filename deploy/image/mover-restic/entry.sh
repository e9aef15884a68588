#!/bin/sh
# VolSync's restic mover entry point, answered by mover instead of restic: VolSync runs this
# file with `[unlock] backup [prune]` or `restore` and its usual environment (DATA_DIR,
# RESTIC_REPOSITORY, RESTIC_PASSWORD, FORGET_OPTIONS, ...); `mover volsync` does the rest.
# MOVER names another mover binary (default: `mover` on PATH).
exec "${MOVER:-mover}" volsync "$@"
