#!/usr/bin/env bash
# Install what quay-geo needs on a Debian 12 (bookworm) machine. Idempotent: safe to run often.
#
# usage: scripts/install-deps.sh [--no-apt] [--run-only]
#   (default)   Debian packages for the full test suite (object-store servers, registry tools,
#               podman and buildah, browser, load tool) + ./.venv with `pip install -e '.[dev,run]'`
#   --run-only  only what `make run` needs: python3-venv and curl + the venv with `.[run]`
#   --no-apt    skip the Debian part (only the virtualenv)
#
# environment:
#   PYTHON                        interpreter that creates the venv (default python3)
#   QUAY_GEO_VENV                 virtualenv directory (default ./.venv)
#   QUAY_GEO_APT_PACKAGES_EXTRA   more Debian packages to install (space or comma separated)
#   QUAY_GEO_APT_LOCK_WAIT        seconds to wait for another apt/dpkg to finish (default 600)
#
# Debian part: packages missing according to dpkg-query are installed with apt-get when running
# as root; otherwise the missing ones are listed and the script exits 1.
# Python part: the editable install runs only when pyproject.toml is newer than the stamp file
# $QUAY_GEO_VENV/.installed-stamp (or .installed-stamp-run for --run-only).
set -euo pipefail
QG_LOG_TAG=install-deps
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

WITH_APT=1
RUN_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --no-apt) WITH_APT=0 ;;
        --run-only) RUN_ONLY=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; qg_die "unknown option: $arg" ;;
    esac
done

RUN_PACKAGES=(python3-venv curl)
FULL_PACKAGES=(
    curl bc python3-venv python3-dev gcc
    memcached swift swift-proxy swift-account swift-container swift-object
    ceph-mon ceph-osd radosgw ceph-common
    docker-registry skopeo umoci docker-compose
    chromium chromium-driver wrk redis-server
    apache2-utils rclone postgresql
    podman buildah podman-compose runc golang-github-containernetworking-plugin-dnsname
    fuse-overlayfs slirp4netns uidmap debootstrap
)
LOCK_WAIT=${QUAY_GEO_APT_LOCK_WAIT:-600}

# ---------------------------------------------------------------- Debian packages
wait_for_dpkg_lock() {
    # Another apt/dpkg (e.g. an install started in the background) holds the locks: wait, bounded.
    local locks=(/var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock
                 /var/cache/apt/archives/lock)
    local t0 said=0
    command -v fuser >/dev/null 2>&1 || return 0   # no psmisc: apt's own lock timeout covers it
    t0=$SECONDS
    while fuser "${locks[@]}" >/dev/null 2>&1; do
        if [ "$said" = 0 ]; then qg_log "another apt/dpkg is running; waiting up to ${LOCK_WAIT}s"; said=1; fi
        (( SECONDS - t0 < LOCK_WAIT )) || qg_die "apt/dpkg still locked after ${LOCK_WAIT}s"
        sleep 2
    done
}

apt_run() {
    # apt-get with lock waiting and retry. Output is streamed with URL hosts masked (no repository
    # host is printed or written) and without dpkg's per-file progress chatter.
    local t0=$SECONDS rc tmp
    tmp=$(mktemp)
    while :; do
        wait_for_dpkg_lock
        rc=0
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$LOCK_WAIT" "$@" 2>&1 \
            | qg_redact | tee "$tmp" \
            | grep -vE '^(\(Reading database|Selecting previously|Preparing to unpack|Unpacking |debconf: delaying)' >&2 \
            || rc=${PIPESTATUS[0]}
        if [ "$rc" = 0 ]; then rm -f "$tmp"; return 0; fi
        if grep -qiE 'could not get lock|unable to acquire|is another process using it' "$tmp" \
                && (( SECONDS - t0 < LOCK_WAIT )); then
            qg_log "apt is locked by another process; retrying"
            sleep 5
            continue
        fi
        rm -f "$tmp"
        return "$rc"
    done
}

install_debian() {
    local wanted=() extra=() missing=()
    if [ "$RUN_ONLY" = 1 ]; then wanted=("${RUN_PACKAGES[@]}"); else wanted=("${FULL_PACKAGES[@]}"); fi
    if [ -n "${QUAY_GEO_APT_PACKAGES_EXTRA:-}" ]; then
        read -r -a extra <<<"${QUAY_GEO_APT_PACKAGES_EXTRA//,/ }"
        wanted+=("${extra[@]}")
    fi
    command -v dpkg-query >/dev/null 2>&1 || qg_die "dpkg-query not found: this script supports Debian 12 only (or use --no-apt)"
    mapfile -t missing < <(qg_apt_missing "${wanted[@]}")
    if [ "${#missing[@]}" = 0 ]; then
        qg_log "Debian packages: all ${#wanted[@]} present"
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        qg_log "missing Debian packages: ${missing[*]}"
        qg_die "run this script as root (sudo $0${*:+ $*}), or install them with: apt-get install --no-install-recommends ${missing[*]}"
    fi
    qg_log "installing Debian packages: ${missing[*]}"
    local t0; t0=$(qg_now)
    apt_run -qq update || qg_die "apt-get update failed"
    apt_run -qq install -y --no-install-recommends "${missing[@]}" || qg_die "apt-get install failed"
    mapfile -t missing < <(qg_apt_missing "${wanted[@]}")
    [ "${#missing[@]}" = 0 ] || qg_die "still missing after apt-get install: ${missing[*]}"
    qg_log "Debian packages installed in $(qg_since "$t0")s"
}

# ---------------------------------------------------------------- Python virtualenv
install_venv() {
    local venv=${QUAY_GEO_VENV:-.venv} extras stamp s
    local stamps=()
    if [ "$RUN_ONLY" = 1 ]; then
        # the full (dev) install also satisfies --run-only
        extras=run; stamp="$venv/.installed-stamp-run"; stamps=("$stamp" "$venv/.installed-stamp")
    else
        extras=dev,run; stamp="$venv/.installed-stamp"; stamps=("$stamp")
    fi
    [ -f pyproject.toml ] || qg_die "pyproject.toml not found in $REPO_ROOT"
    if [ ! -x "$venv/bin/python" ]; then
        qg_log "creating virtualenv $venv with ${PYTHON:-python3}"
        "${PYTHON:-python3}" -m venv "$venv" \
            || qg_die "could not create $venv (on Debian: apt-get install python3-venv)"
    fi
    "$venv/bin/python" -c 'import sys' 2>/dev/null \
        || qg_die "$venv/bin/python does not run; remove $venv and run this script again"
    for s in "${stamps[@]}"; do
        if [ -f "$s" ] && [ ! pyproject.toml -nt "$s" ]; then
            qg_log "virtualenv $venv is up to date (pyproject.toml not newer than $(basename "$s"))"
            return 0
        fi
    done
    qg_log "pip install -e '.[$extras]' into $venv"
    local t0; t0=$(qg_now)
    touch "$stamp.new"   # taken before pip runs: an edit of pyproject.toml during the install still counts
    # (hosts masked; local find-links warnings about absent directories dropped)
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -e ".[$extras]" 2>&1 \
        | qg_redact | { grep -v "^WARNING: Location '.*' is ignored" >&2 || true; }
    mv -f "$stamp.new" "$stamp"
    qg_log "virtualenv ready in $(qg_since "$t0")s"
}

if [ "$WITH_APT" = 1 ]; then install_debian "$@"; else qg_log "skipping Debian packages (--no-apt)"; fi
install_venv
