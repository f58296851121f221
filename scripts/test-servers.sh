#!/usr/bin/env bash
# Real object-store servers for the quay-geo test suite, all bound to 127.0.0.1.
#
# usage: scripts/test-servers.sh COMMAND [SERVER...]
#   start   [SERVER...]  start the servers (default: all) in parallel and wait until each answers.
#                        A server that is already running and healthy is left as it is; one that is
#                        half-running or unhealthy is stopped and started again. If any fails, the
#                        ones this call started are stopped again, and the exit status is 1.
#   restart [SERVER...]  stop, then start
#   stop    [SERVER...]  stop (TERM, bounded wait, then KILL); leaves no process behind
#   status  [SERVER...]  one line per process: alive/dead, pid, RSS; exit 1 if any is not alive
#   reset   [SERVER...]  drop all data held by the in-memory servers (moto, gcs); others untouched
#   clean                stop everything and delete all server state (data, logs)
#
# SERVER is one of:
#   moto      moto_server S3 "region A" :5000 and "region B" :5002 (keys testing/testing)
#   gcs       gcp-storage-emulator :9023 and :9024 (in memory, anonymous; through
#             scripts/gcs_emulator.py, which answers X-GUploader-No-308 as GCS does)
#   swift     OpenStack Swift all-in-one, tempauth, proxy :8080 (account/container/object
#             :6202/:6201/:6200, memcached :11211); users test:tester/testing, test2:tester2/testing2
#   ceph      single-node Ceph (mon :3300/:6789, 1 bluestore OSD, no mgr) + radosgw :7480;
#             S3 keys RGWACCESSKEY/RGWSECRETKEY. A fresh, empty cluster on every start.
#   registry  CNCF distribution (docker-registry) :5001, filesystem storage
#   redis     a private Redis :6390 (no persistence), the Celery broker of the integration tests
#
# environment:
#   QUAY_GEO_SERVERS_ROOT     state dir: pids, logs, data (default <repo>/var/test-servers)
#   QUAY_GEO_VENV             virtualenv with moto_server and gcp-storage-emulator (default <repo>/.venv)
#   QUAY_GEO_SERVERS_TIMEOUT  seconds each server may take to answer (default 120)
#
# Swift needs /etc/swift/swift.conf (a path Swift hard-codes): start writes it when its content differs.
# Every server runs in its own session with QUAY_GEO_TEST_SERVERS=<state dir> in its environment, so
# stop also finds processes whose pid file was lost.
set -euo pipefail
QG_LOG_TAG=test-servers
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

abspath() { mkdir -p "$1" && (cd "$1" && pwd); }

SR=$(abspath "${QUAY_GEO_SERVERS_ROOT:-$REPO_ROOT/var/test-servers}")
VENV=${QUAY_GEO_VENV:-$REPO_ROOT/.venv}
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
TIMEOUT=${QUAY_GEO_SERVERS_TIMEOUT:-120}
RUN="$SR/run"
LOG="$SR/log"
ALL_SERVERS=(moto gcs swift ceph registry redis)
# Debian's binaries (Swift, Ceph) run on the system Python; keep a caller's venv out of their way.
SYS_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# processes of each server, in start order (stop goes in reverse)
procs_of() {
    case "$1" in
        moto) echo moto-a moto-b ;;
        gcs) echo gcs-a gcs-b ;;
        swift) echo memcached swift-account swift-container swift-object swift-proxy ;;
        ceph) echo ceph-mon ceph-osd ceph-rgw ;;
        registry) echo registry ;;
        redis) echo redis ;;
    esac
}
ports_of() {
    case "$1" in
        moto) echo 5000 5002 ;;
        gcs) echo 9023 9024 ;;
        swift) echo 8080 6202 6201 6200 11211 ;;
        ceph) echo 7480 3300 6789 ;;
        registry) echo 5001 ;;
        redis) echo 6390 ;;
    esac
}
# health probes: "URL" (any HTTP status) or "tcp:PORT"
probes_of() {
    case "$1" in
        moto) echo http://127.0.0.1:5000/moto-api/ http://127.0.0.1:5002/moto-api/ ;;
        gcs) echo http://127.0.0.1:9023/ http://127.0.0.1:9024/ ;;
        swift) echo tcp:11211 http://127.0.0.1:6202/healthcheck http://127.0.0.1:6201/healthcheck \
                    http://127.0.0.1:6200/healthcheck http://127.0.0.1:8080/healthcheck ;;
        ceph) echo http://127.0.0.1:7480/ ;;
        registry) echo http://127.0.0.1:5001/v2/ ;;
        redis) echo tcp:6390 ;;
    esac
}

# ------------------------------------------------------------------ process bookkeeping
# spawn NAME MATCH DIR CMD...: start CMD in DIR in a new session, log to $LOG/NAME.log, pid file
# "$RUN/NAME.pid" holds "PID MATCH" (MATCH must appear in the command line; checked before a kill).
spawn() {
    local name=$1 match=$2 dir=$3; shift 3
    mkdir -p "$dir"
    # fds 3 (our stdout for "ready" lines) and 9 (the lock) must not leak into a long-lived server:
    # a caller reading our output through a pipe would wait forever, and the lock would stay held.
    (cd "$dir" && exec env QUAY_GEO_TEST_SERVERS="$SR" QUAY_GEO_TEST_SERVER="$SERVER" \
        setsid "$@" </dev/null >"$LOG/$name.log" 2>&1 3>&- 9>&-) &
    echo "$! $match" >"$RUN/$name.pid"
}

pid_of() {  # prints the pid of NAME if its pid file points at a live process running MATCH
    local f="$RUN/$1.pid" pid match
    [ -f "$f" ] || return 1
    read -r pid match <"$f" || true
    [ -n "${pid:-}" ] && qg_alive "$pid" || return 1
    if [ -n "${match:-}" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$match"; then
        return 1
    fi
    echo "$pid"
}

marked_pids() {  # marked_pids SERVER...: live processes this script started for them (by environment)
    local e p srv want=" $* "
    while IFS= read -r e; do
        p=${e#/proc/}; p=${p%/environ}
        [ "$p" = $$ ] && continue
        srv=$(tr '\0' '\n' <"$e" 2>/dev/null | sed -n 's/^QUAY_GEO_TEST_SERVER=//p')
        [[ "$want" == *" $srv "* ]] && qg_alive "$p" && echo "$p"
    done < <(grep -lzxF "QUAY_GEO_TEST_SERVERS=$SR" /proc/[0-9]*/environ 2>/dev/null)
    return 0
}

signal_pid() {  # signal a process and its process group (each server leads its own session)
    kill "-$1" -- "-$2" 2>/dev/null || true
    kill "-$1" "$2" 2>/dev/null || true
}

wait_gone() {  # wait_gone LIMIT PID... ; true when none is alive
    local limit=$1 i p left; shift
    for (( i = 0; i < limit * 10; i++ )); do
        left=0
        for p in "$@"; do qg_alive "$p" && { left=1; break; }; done
        [ "$left" = 0 ] && return 0
        sleep 0.1
    done
    return 1
}

term_and_wait() {  # TERM all given pids, bounded wait, then KILL what is left
    [ $# -gt 0 ] || return 0
    local p
    for p in "$@"; do signal_pid TERM "$p"; done
    wait_gone 10 "$@" && return 0
    for p in "$@"; do qg_alive "$p" && signal_pid KILL "$p"; done
    wait_gone 5 "$@" || qg_log "WARNING: could not kill: $(for p in "$@"; do qg_alive "$p" && printf '%s ' "$p"; done)"
}

# stop_servers SERVER...: all servers at once, but Ceph's daemons in order: radosgw stops in 0.5 s
# while its cluster is up (10 s or more without it), and the OSD in 0.2 s while the monitor is up
# (5 s without it). So: wave 1 everything but OSD and monitor, wave 2 the OSD, wave 3 the monitor.
stop_servers() {
    local s n pid p w1=() w2=() w3=() names=()
    for s in "$@"; do
        for n in $(procs_of "$s"); do
            pid=$(pid_of "$n") || continue
            case "$n" in ceph-osd) w2+=("$pid") ;; ceph-mon) w3+=("$pid") ;; *) w1+=("$pid") ;; esac
            names+=("$n($pid)")
        done
    done
    for p in $(marked_pids "$@"); do
        [[ " ${w1[*]:-} ${w2[*]:-} ${w3[*]:-} " == *" $p "* ]] || { w1+=("$p"); names+=("stray($p)"); }
    done
    term_and_wait "${w1[@]}"
    term_and_wait "${w2[@]}"
    term_and_wait "${w3[@]}"
    [ "${#names[@]}" = 0 ] || qg_log "stopped ${names[*]}"
    for s in "$@"; do
        for n in $(procs_of "$s"); do rm -f "$RUN/$n.pid"; done
    done
    # children that outlived their parent (none expected)
    for p in $(marked_pids "$@"); do signal_pid KILL "$p"; done
}

healthy() {  # healthy SERVER: every process alive and every probe answers at once
    local n u
    for n in $(procs_of "$1"); do pid_of "$n" >/dev/null || return 1; done
    for u in $(probes_of "$1"); do
        case "$u" in
            tcp:*) qg_port_busy "${u#tcp:}" || return 1 ;;
            *) qg_wait_http "$u" 1 >/dev/null || return 1 ;;
        esac
    done
}

# ------------------------------------------------------------------ readiness
# fail PROC MESSAGE: record which process failed (cmd_start reads it), then exit the subshell
fail() { echo "FAILED $1 $2"; exit 1; }

await_http() {  # await_http PROC URL: wait for URL; fail naming PROC
    local rc=0 pid
    pid=$(pid_of "$1") || fail "$1" "exited at start"
    qg_wait_http "$2" "$TIMEOUT" "$pid" || rc=$?
    case "$rc" in
        0) return 0 ;;
        2) fail "$1" "exited before $2 answered" ;;
        *) fail "$1" "$2 did not answer within ${TIMEOUT}s" ;;
    esac
}

ready() {  # ready LABEL URL: one line on the caller's stdout (fd 3)
    printf '  %-9s %-40s ready after %ss\n' "$1" "$2" "$(qg_since "$T0")" >&3
}

# ------------------------------------------------------------------ moto (S3)
start_moto() {
    local bin="$VENV/bin/moto_server"
    [ -x "$bin" ] || fail moto-a "$bin not found (run scripts/install-deps.sh or set QUAY_GEO_VENV)"
    spawn moto-a moto_server "$SR/moto" "$bin" -H 127.0.0.1 -p 5000
    spawn moto-b moto_server "$SR/moto" "$bin" -H 127.0.0.1 -p 5002
    await_http moto-a http://127.0.0.1:5000/moto-api/
    ready s3-a http://127.0.0.1:5000
    await_http moto-b http://127.0.0.1:5002/moto-api/
    ready s3-b http://127.0.0.1:5002
}

# ------------------------------------------------------------------ GCS emulator
start_gcs() {
    local py="$VENV/bin/python" launcher="$REPO_ROOT/scripts/gcs_emulator.py"
    [ -x "$VENV/bin/gcp-storage-emulator" ] || fail gcs-a "gcp-storage-emulator not in $VENV (run scripts/install-deps.sh or set QUAY_GEO_VENV)"
    spawn gcs-a gcs_emulator.py "$SR/gcs" "$py" "$launcher" start -H 127.0.0.1 --port 9023 --in-memory
    spawn gcs-b gcs_emulator.py "$SR/gcs" "$py" "$launcher" start -H 127.0.0.1 --port 9024 --in-memory
    await_http gcs-a http://127.0.0.1:9023/
    ready gcs-a http://127.0.0.1:9023
    await_http gcs-b http://127.0.0.1:9024/
    ready gcs-b http://127.0.0.1:9024
}

# ------------------------------------------------------------------ registry
start_registry() {
    local d="$SR/registry"
    command -v docker-registry >/dev/null || fail registry "docker-registry not installed (scripts/install-deps.sh)"
    mkdir -p "$d/data"
    cat >"$d/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog: {disabled: true}
storage:
  filesystem: {rootdirectory: "$d/data"}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:5001
  secret: quay-geo-test-peer
EOF
    # AWS_CA_BUNDLE makes distribution 2.8's s3 driver panic; unset it for any driver.
    spawn registry docker-registry "$d" env -u AWS_CA_BUNDLE docker-registry serve "$d/config.yml"
    await_http registry http://127.0.0.1:5001/v2/
    ready registry http://127.0.0.1:5001
}

# ------------------------------------------------------------------ redis
start_redis() {
    local d="$SR/redis" deadline pid
    command -v redis-server >/dev/null || fail redis "redis-server not installed (scripts/install-deps.sh)"
    spawn redis redis-server "$d" redis-server --bind 127.0.0.1 --port 6390 --save "" \
        --appendonly no --dir "$d"
    deadline=$((SECONDS + TIMEOUT))
    until qg_port_busy 6390; do
        pid=$(pid_of redis) || fail redis "exited at start"
        [ $SECONDS -lt $deadline ] || fail redis "port 6390 did not open within ${TIMEOUT}s"
        sleep 0.1
    done
    ready redis redis://127.0.0.1:6390
}

# ------------------------------------------------------------------ OpenStack Swift
write_swift_conf() {
    # The only file outside the state dir. These values match the ones commonly used for throw-away
    # Swift test nodes on such machines, so another test node sharing /etc/swift is not disturbed.
    # They must stay constant: Swift hashes object paths with them, and the data dir is kept.
    local want
    want=$(cat <<'EOF'
[swift-hash]
swift_hash_path_suffix = ci-suffix
swift_hash_path_prefix = ci-prefix
[storage-policy:0]
name = Policy-0
default = yes
EOF
)
    if [ "$(cat /etc/swift/swift.conf 2>/dev/null || true)" != "$want" ]; then
        { mkdir -p /etc/swift && printf '%s\n' "$want" >/etc/swift/swift.conf; } 2>/dev/null \
            || fail swift-proxy "cannot write /etc/swift/swift.conf (run as root once)"
    fi
}

swift_server_conf() {  # swift_server_conf KIND PORT
    cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $2
workers = 0
user = $SWIFT_USER
swift_dir = $SWIFT_ETC
devices = $SWIFT_SRV
mount_check = false
log_address = /nonexistent
log_level = INFO

[pipeline:main]
pipeline = healthcheck $1-server

[app:$1-server]
use = egg:swift#$1

[filter:healthcheck]
use = egg:swift#healthcheck
EOF
}

swift_proxy_conf() {
    cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = 8080
workers = 0
user = $SWIFT_USER
swift_dir = $SWIFT_ETC
log_address = /nonexistent
log_level = INFO

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk tempurl tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin http://127.0.0.1:8080/v1/AUTH_test
user_test2_tester2 = testing2 .admin http://127.0.0.1:8080/v1/AUTH_test2

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:11211

[filter:versioned_writes]
use = egg:swift#versioned_writes
allow_versioned_writes = true
EOF
    local f
    # section name (as in the pipeline) = egg entry point, except proxy-logging
    for f in catch_errors gatekeeper healthcheck listing_formats bulk tempurl copy slo dlo symlink; do
        printf '\n[filter:%s]\nuse = egg:swift#%s\n' "$f" "$f"
    done
    printf '\n[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n' 
}

start_swift() {
    export PATH="$SYS_PATH"
    unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
    command -v swift-proxy-server >/dev/null || fail swift-proxy "Swift not installed (scripts/install-deps.sh)"
    command -v memcached >/dev/null || fail memcached "memcached not installed (scripts/install-deps.sh)"
    SWIFT_USER=$(id -un)
    SWIFT_ETC="$SR/swift/etc"
    SWIFT_SRV="$SR/swift/srv"
    mkdir -p "$SWIFT_ETC" "$SWIFT_SRV/d1"
    write_swift_conf
    local kind port
    for kind in account:6202 container:6201 object:6200; do
        port=${kind#*:}; kind=${kind%:*}
        swift_server_conf "$kind" "$port" >"$SWIFT_ETC/$kind-server.conf"
    done
    swift_proxy_conf >"$SWIFT_ETC/proxy-server.conf"
    # rings: built once (256 partitions, 1 replica, one device); kept with the data
    for kind in account:6202 container:6201 object:6200; do
        port=${kind#*:}; kind=${kind%:*}
        [ -f "$SWIFT_ETC/$kind.ring.gz" ] && continue
        rm -f "$SWIFT_ETC/$kind.builder"
        (cd "$SWIFT_ETC" && swift-ring-builder "$kind.builder" create 8 1 1 \
            && swift-ring-builder "$kind.builder" add "r1z1-127.0.0.1:$port/d1" 100 \
            && { swift-ring-builder "$kind.builder" rebalance || [ -f "$kind.ring.gz" ]; }) \
            || fail "swift-$kind" "swift-ring-builder failed for the $kind ring"
    done
    # memcached is required: tempauth keeps its tokens there
    spawn memcached memcached "$SR/swift" memcached -l 127.0.0.1 -p 11211 -U 0 -m 64 -u "$SWIFT_USER"
    for kind in account container object; do
        spawn "swift-$kind" "swift-$kind-server" "$SR/swift" "swift-$kind-server" "$SWIFT_ETC/$kind-server.conf" -v
    done
    spawn swift-proxy swift-proxy-server "$SR/swift" swift-proxy-server "$SWIFT_ETC/proxy-server.conf" -v
    local rc=0 pid
    pid=$(pid_of memcached) || fail memcached "exited at start"
    qg_wait_tcp 11211 "$TIMEOUT" "$pid" || rc=$?
    [ "$rc" = 0 ] || fail memcached "port 11211 did not open"
    await_http swift-account http://127.0.0.1:6202/healthcheck
    await_http swift-container http://127.0.0.1:6201/healthcheck
    await_http swift-object http://127.0.0.1:6200/healthcheck
    await_http swift-proxy http://127.0.0.1:8080/healthcheck
    ready swift http://127.0.0.1:8080/auth/v1.0
}

# ------------------------------------------------------------------ Ceph + radosgw
ceph_conf() {
    cat <<EOF
[global]
fsid = $1
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
mon initial members = a
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $CD/client.admin.keyring
run dir = $CD/run
admin socket = $CD/run/\$name.asok
log file = $CD/log/\$name.log
log to stderr = false
err to stderr = true
; one OSD: one replica, few placement groups, and enough pgs per OSD for radosgw's ~8 pools
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon max pg per osd = 1000
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = bluestore
; the monitor batches map changes for 1 s by default; radosgw's start (~8 pools, one osdmap
; epoch each) then takes ~12 s. Propose sooner.
paxos propose interval = 0.05
paxos min wait = 0.01

[mon.a]
mon data = $CD/mon

[osd.0]
osd data = $CD/osd
keyring = $CD/osd/keyring
osd memory target = 939524096
; not "block": bluestore itself creates a symlink by that name
bluestore block path = $CD/osd/block.file
bluestore block create = true
; sparse: it takes only what is written. Benchmarks write GiBs per run (bench/replication.py)
bluestore block size = 21474836480
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd crush update on start = true

[client.rgw.qg]
keyring = $CD/rgw/keyring
rgw frontends = beast endpoint=127.0.0.1:7480
rgw data = $CD/rgw
rgw dns name = 127.0.0.1
rgw enable usage log = false
; deleted objects' space comes back after seconds, not the default two hours: a full OSD blocks
; every write (and bucket cleanup) of the tests and benchmarks that follow
rgw gc obj min wait = 30
rgw gc processor period = 30
; started before the OSD is up: its client learns of the OSD on the next tick (default 5 s)
objecter tick interval = 0.5
EOF
}

start_ceph() {
    export PATH="$SYS_PATH"
    unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
    local t
    for t in ceph-mon ceph-osd radosgw ceph ceph-authtool monmaptool radosgw-admin; do
        command -v "$t" >/dev/null || fail ceph-mon "$t not installed (scripts/install-deps.sh)"
    done
    CD="$SR/ceph"
    export CEPH_CONF="$CD/ceph.conf"
    rm -rf "$CD"
    mkdir -p "$CD/mon" "$CD/osd" "$CD/rgw" "$CD/run" "$CD/log"
    local fsid osd_uuid osd_key osd_id
    fsid=$(cat /proc/sys/kernel/random/uuid)
    ceph_conf "$fsid" >"$CEPH_CONF"

    # monitor
    ceph-authtool --create-keyring "$CD/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$CD/client.admin.keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$CD/mon.keyring" --import-keyring "$CD/client.admin.keyring" >/dev/null
    monmaptool --create --fsid "$fsid" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$CD/monmap" >/dev/null
    timeout "$TIMEOUT" ceph-mon --mkfs -i a --monmap "$CD/monmap" --keyring "$CD/mon.keyring" \
        || fail ceph-mon "ceph-mon --mkfs failed"
    spawn ceph-mon ceph-mon "$CD" ceph-mon -i a -f
    echo "$(qg_since "$T0")s monitor started"

    # OSD: registering it needs the monitor (the ceph CLI waits for it, bounded)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    osd_key=$(ceph-authtool --gen-print-key)
    printf '{"cephx_secret": "%s"}\n' "$osd_key" >"$CD/osd/secret.json"
    osd_id=$(timeout "$TIMEOUT" ceph --connect-timeout "$TIMEOUT" osd new "$osd_uuid" -i "$CD/osd/secret.json") \
        || fail ceph-mon "monitor did not accept 'ceph osd new'"
    [ "$osd_id" = 0 ] || fail ceph-osd "unexpected OSD id '$osd_id'"
    echo "$(qg_since "$T0")s OSD registered"
    ceph-authtool --create-keyring "$CD/osd/keyring" --name osd.0 --add-key "$osd_key" >/dev/null
    timeout "$TIMEOUT" ceph-osd -i 0 --mkfs --osd-uuid "$osd_uuid" >"$LOG/ceph-osd-mkfs.log" 2>&1 \
        || fail ceph-osd-mkfs "ceph-osd --mkfs failed"
    spawn ceph-osd ceph-osd "$CD" ceph-osd -i 0 -f
    echo "$(qg_since "$T0")s OSD created and started"

    # gateway: it waits for the OSD by itself while it creates its pools
    timeout "$TIMEOUT" ceph auth get-or-create client.rgw.qg mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
        -o "$CD/rgw/keyring" >/dev/null || fail ceph-mon "could not create the radosgw key"
    spawn ceph-rgw radosgw "$CD" radosgw -n client.rgw.qg -f
    echo "$(qg_since "$T0")s radosgw started"
    await_http ceph-rgw http://127.0.0.1:7480/
    echo "$(qg_since "$T0")s radosgw answers"
    timeout "$TIMEOUT" radosgw-admin user create --uid=quay-geo --display-name=quay-geo \
        --access-key=RGWACCESSKEY --secret-key=RGWSECRETKEY >/dev/null \
        || fail ceph-rgw "radosgw-admin user create failed"
    ready ceph-rgw http://127.0.0.1:7480
}

# ------------------------------------------------------------------ commands
parse_servers() {  # sets SERVERS from the arguments (default: all)
    SERVERS=()
    local a s ok
    for a in "$@"; do
        case "$a" in
            s3) a=moto ;; rgw|radosgw) a=ceph ;; gcp) a=gcs ;; all) SERVERS=("${ALL_SERVERS[@]}"); continue ;;
        esac
        ok=0
        for s in "${ALL_SERVERS[@]}"; do [ "$s" = "$a" ] && ok=1; done
        [ "$ok" = 1 ] || { usage >&2; qg_die "unknown server '$a' (one of: ${ALL_SERVERS[*]})"; }
        [[ " ${SERVERS[*]:-} " == *" $a "* ]] || SERVERS+=("$a")
    done
    [ "${#SERVERS[@]}" -gt 0 ] || SERVERS=("${ALL_SERVERS[@]}")
}

lock() {  # one start/stop at a time per state dir
    exec 9>"$SR/.lock"
    flock -w 300 9 || qg_die "another test-servers.sh holds $SR/.lock"
}

cmd_start() {
    local s p rc failed=() todo=() line proc why
    declare -A job
    T0=$(qg_now)
    for s in "${SERVERS[@]}"; do
        if healthy "$s"; then
            qg_log "$s already running and healthy; left as it is"
        else
            todo+=("$s")
        fi
    done
    [ "${#todo[@]}" -gt 0 ] && stop_servers "${todo[@]}" 2>/dev/null
    for s in "${todo[@]}"; do
        for p in $(ports_of "$s"); do
            qg_port_busy "$p" && qg_die "port $p (needed by $s) is used by another program; stop it first (ss -ltnp 'sport = :$p')"
        done
    done
    echo "starting ${todo[*]:-nothing} (state in $SR)"
    for s in "${todo[@]}"; do
        SERVER=$s
        for p in $(procs_of "$s") "$s.start" "${s/#ceph/ceph-osd-mkfs}"; do   # previous run's logs -> *.log.1
            [ -f "$LOG/$p.log" ] && mv -f "$LOG/$p.log" "$LOG/$p.log.1"
        done
        ( set -euo pipefail; "start_$s" ) 3>&1 >"$LOG/$s.start.log" 2>&1 &
        job[$s]=$!
    done
    for s in "${todo[@]}"; do
        rc=0; wait "${job[$s]}" || rc=$?
        [ "$rc" = 0 ] || failed+=("$s")
    done
    if [ "${#failed[@]}" -gt 0 ]; then
        for s in "${failed[@]}"; do
            line=$(grep '^FAILED ' "$LOG/$s.start.log" | tail -n 1 || true)
            proc=$(awk '{print $2}' <<<"$line"); why=${line#FAILED "$proc" }
            echo "ERROR: $s did not come up: ${why:-see $LOG/$s.start.log}" >&2
            echo "---- tail of $LOG/$s.start.log" >&2
            grep -v '^FAILED ' "$LOG/$s.start.log" | tail -n 15 >&2 || true
            if [ -n "$proc" ] && [ -f "$LOG/$proc.log" ]; then
                echo "---- tail of $LOG/$proc.log" >&2
                tail -n 25 "$LOG/$proc.log" >&2
            fi
            if [ "$s" = ceph ] && [ -n "$proc" ]; then
                local cl="$SR/ceph/log/${proc/ceph-rgw/client.rgw.qg}.log"
                cl=${cl/ceph-mon/mon.a}; cl=${cl/ceph-osd/osd.0}
                [ -f "$cl" ] && { echo "---- tail of $cl" >&2; tail -n 25 "$cl" >&2; }
            fi
        done
        # all or nothing: stop what this call started (servers found healthy are left running)
        stop_servers "${todo[@]}" 2>/dev/null
        echo "FAILED: ${failed[*]} did not start; stopped ${todo[*]} again ($(qg_since "$T0")s)" >&2
        return 1
    fi
    echo "all requested servers ready in $(qg_since "$T0")s"
}

cmd_stop() {
    local t0; t0=$(qg_now)
    stop_servers "${SERVERS[@]}"
    echo "stopped ${SERVERS[*]} in $(qg_since "$t0")s"
}

cmd_status() {
    local s n pid rss rc=0 total=0
    for s in "${SERVERS[@]}"; do
        for n in $(procs_of "$s"); do
            if pid=$(pid_of "$n"); then
                rss=$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ')
                total=$(( total + ${rss:-0} ))
                printf '%-16s alive  pid %-7s rss %5s MiB\n' "$n" "$pid" "$(( ${rss:-0} / 1024 ))"
            else
                printf '%-16s dead\n' "$n"; rc=1
            fi
        done
    done
    printf '%-16s %s  rss %5s MiB\n' total "$([ "$rc" = 0 ] && echo 'all alive' || echo 'NOT all alive')" "$(( total / 1024 ))"
    return "$rc"
}

cmd_reset() {
    local s
    for s in "${SERVERS[@]}"; do
        case "$s" in
            moto) curl --noproxy '*' -fsS -X POST http://127.0.0.1:5000/moto-api/reset >/dev/null
                  curl --noproxy '*' -fsS -X POST http://127.0.0.1:5002/moto-api/reset >/dev/null
                  echo "reset moto" ;;
            gcs) curl --noproxy '*' -fsS http://127.0.0.1:9023/wipe >/dev/null
                 curl --noproxy '*' -fsS http://127.0.0.1:9024/wipe >/dev/null
                 echo "reset gcs" ;;
            *) ;;
        esac
    done
}

cmd_clean() {
    stop_servers "${ALL_SERVERS[@]}"
    rm -rf "${SR:?}/run" "$SR/log" "$SR/moto" "$SR/gcs" "$SR/swift" "$SR/ceph" "$SR/registry" \
        "$SR/redis"
    echo "removed server state under $SR"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
        start|stop|restart|status|reset|clean) ;;
        -h|--help|help) usage; return 0 ;;
        *) usage >&2; return 2 ;;
    esac
    parse_servers "$@"
    mkdir -p "$RUN" "$LOG"
    SERVER=""
    case "$cmd" in
        start) lock; cmd_start ;;
        restart) lock; stop_servers "${SERVERS[@]}"; cmd_start ;;
        stop) lock; cmd_stop ;;
        status) cmd_status ;;
        reset) cmd_reset ;;
        clean) lock; cmd_clean ;;
    esac
}

main "$@"
