#!/usr/bin/env bash
# Make podman, buildah and podman-compose usable on this machine, offline. Idempotent; cached.
#
# usage: scripts/podman-setup.sh [--python]
#   (default)  write $QUAY_GEO_PODMAN_DIR/containers.conf and make the base image
#              localhost/debian:bookworm (debootstrap --variant=minbase from the Debian mirror
#              apt is configured with; the root file system is cached as a tarball)
#   --python   also localhost/quay-geo-python:bookworm: the base image with python3, python3-venv
#              and curl (apt inside `podman build --network host`), for the project's Dockerfile
#
# Prints `export CONTAINERS_CONF=...` on stdout: every podman, buildah and podman-compose
# command of the project runs with it (../shared/CONTAINERS.md says why each setting is needed):
#   runtime runc + cgroupfs   crun refuses this machine's hybrid cgroup layout
#   default_ulimits = []      containers may not raise RLIMIT_NOFILE / RLIMIT_NPROC here
#
# environment:
#   QUAY_GEO_PODMAN_DIR   where the settings and the cached root file system live
#                         (default <repo>/var/podman)
set -euo pipefail
QG_LOG_TAG=podman-setup
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

WITH_PYTHON=0
for arg in "$@"; do
    case "$arg" in
        --python) WITH_PYTHON=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; qg_die "unknown option: $arg" ;;
    esac
done

DIR=${QUAY_GEO_PODMAN_DIR:-$REPO_ROOT/var/podman}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
BASE=localhost/debian:bookworm
PYTHON_BASE=localhost/quay-geo-python:bookworm
ROOTFS_TAR=$DIR/debian-bookworm-minbase.tar

for tool in podman buildah debootstrap; do
    command -v "$tool" >/dev/null 2>&1 \
        || qg_die "$tool is missing: run scripts/install-deps.sh (as root)"
done
[ "$(id -u)" = 0 ] || qg_die "podman runs as root here (debootstrap and rootful storage): run as root"

# ---------------------------------------------------------------- settings
CONF=$DIR/containers.conf
printf '%s\n' \
    '# Written by scripts/podman-setup.sh (see ../shared/CONTAINERS.md for each setting).' \
    '[containers]' 'default_ulimits = []' \
    '[engine]' 'cgroup_manager = "cgroupfs"' 'runtime = "runc"' > "$CONF.new"
if cmp -s "$CONF.new" "$CONF"; then rm -f "$CONF.new"; else mv -f "$CONF.new" "$CONF"; fi
export CONTAINERS_CONF=$CONF

# ---------------------------------------------------------------- base image
debian_mirror() {
    # The http(s) URI of the Debian (not security) source apt uses: deb822 or one-line format.
    local uri
    uri=$(awk '
        /^URIs:/ { uris = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") ok = 1 }
        /^$/ { if (ok && uris != "") { print uris; exit } ok = 0; uris = "" }
        END { if (ok && uris != "") print uris }
    ' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    if [ -z "$uri" ]; then
        uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
            /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1)
    fi
    [ -n "$uri" ] || qg_die "no Debian bookworm source in /etc/apt/sources.list*"
    printf '%s\n' "$uri"
}

make_rootfs_tar() {
    local rootfs=$DIR/rootfs.tmp t0
    t0=$(qg_now)
    rm -rf "$rootfs"
    qg_log "debootstrap --variant=minbase bookworm (about a minute)"
    debootstrap --variant=minbase bookworm "$rootfs" "$(debian_mirror)" 2>&1 \
        | qg_redact | grep -E '^(E:|W:)' >&2 || true
    [ -x "$rootfs/bin/sh" ] || qg_die "debootstrap failed (no /bin/sh in the root file system)"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$ROOTFS_TAR.new" .
    rm -rf "$rootfs"
    mv -f "$ROOTFS_TAR.new" "$ROOTFS_TAR"
    qg_log "root file system cached in $(qg_since "$t0")s"
}

if ! podman image exists "$BASE"; then
    [ -s "$ROOTFS_TAR" ] || make_rootfs_tar
    podman import --quiet "$ROOTFS_TAR" "$BASE" >/dev/null
    qg_log "imported $BASE"
fi

if [ "$WITH_PYTHON" = 1 ] && ! podman image exists "$PYTHON_BASE"; then
    t0=$(qg_now)
    # debootstrap left the mirror it used in the image's /etc/apt/sources.list: apt inside the
    # build reaches it through the host's network.
    ctx=$(mktemp -d)
    printf '%s\n' "FROM $BASE" \
        'RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates && rm -rf /var/lib/apt/lists/*' \
        > "$ctx/Containerfile"
    podman build --quiet --network host -t "$PYTHON_BASE" "$ctx" 2>&1 | qg_redact >&2
    rm -rf "$ctx"
    podman image exists "$PYTHON_BASE" || qg_die "building $PYTHON_BASE failed"
    qg_log "built $PYTHON_BASE in $(qg_since "$t0")s"
fi

printf 'export CONTAINERS_CONF=%q\n' "$CONF"
