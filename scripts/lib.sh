# shellcheck shell=bash
# Shared helpers for scripts/*.sh. Source it; it defines functions only (plus REPO_ROOT).
#
#   qg_log MSG...            print "[test-servers] MSG" to stderr
#   qg_die MSG...            print an error and exit 1
#   qg_now                   wall-clock seconds with microseconds (bash's EPOCHREALTIME)
#   qg_since T0              seconds elapsed since T0, two decimals
#   qg_alive PID             true if PID runs and is not a zombie (a zombie counts as stopped:
#                            PID 1 of a container may reap orphans seconds late)
#   qg_port_busy PORT        true if something accepts TCP connections on 127.0.0.1:PORT
#   qg_wait_http URL LIMIT [PID]
#                            poll URL with curl every 0.1 s for at most LIMIT seconds; any HTTP
#                            status counts as ready. Gives up early if PID is given and dies.
#   qg_wait_tcp PORT LIMIT [PID]   same for a bare TCP port
#   qg_apt_missing PKG...    print the packages of the list that dpkg does not have installed
#   qg_redact                filter: hides URL hosts (stdin -> stdout)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

qg_log() { printf '[%s] %s\n' "${QG_LOG_TAG:-quay-geo}" "$*" >&2; }
qg_die() { printf '[%s] ERROR: %s\n' "${QG_LOG_TAG:-quay-geo}" "$*" >&2; exit 1; }

qg_now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
qg_since() {
    local now us0 us1
    now=$(qg_now)
    # integer microseconds, so no dependency on bc
    us0=$(( 10#${1%.*} * 1000000 + 10#${1#*.} ))
    us1=$(( 10#${now%.*} * 1000000 + 10#${now#*.} ))
    printf '%d.%02d' $(( (us1 - us0) / 1000000 )) $(( (us1 - us0) % 1000000 / 10000 ))
}

qg_alive() {
    local st
    [ -n "${1:-}" ] || return 1
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    st=${st// /}
    [ -n "$st" ] && [ "${st:0:1}" != Z ]
}

qg_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

qg_wait_http() {
    local url=$1 limit=$2 pid=${3:-} code i n
    n=$(( limit * 10 ))
    for (( i = 0; i < n; i++ )); do
        code=$(curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null) || true
        if [ -n "$code" ] && [ "$code" != 000 ]; then return 0; fi
        if [ -n "$pid" ] && ! qg_alive "$pid"; then return 2; fi
        sleep 0.1
    done
    return 1
}

qg_wait_tcp() {
    local port=$1 limit=$2 pid=${3:-} i n
    n=$(( limit * 10 ))
    for (( i = 0; i < n; i++ )); do
        qg_port_busy "$port" && return 0
        if [ -n "$pid" ] && ! qg_alive "$pid"; then return 2; fi
        sleep 0.1
    done
    return 1
}

qg_apt_missing() {  # one dpkg-query call; a package dpkg has never heard of counts as missing
    local p installed
    # dpkg-query exits 1 when it has never heard of one of them: under `set -eo pipefail` that
    # must not end the function before it prints (it did: missing packages were reported present).
    installed=" $( { dpkg-query -W -f='${Package}:${Status}\n' "$@" 2>/dev/null || true; } \
        | awk -F: '$2 == "install ok installed" { printf "%s ", $1 }') "
    for p in "$@"; do
        [[ "$installed" == *" ${p%%:*} "* ]] || printf '%s\n' "$p"
    done
}

qg_redact() { sed -E 's#([a-zA-Z][a-zA-Z0-9+.-]*)://[^/[:space:]]+#\1://<host>#g'; }
