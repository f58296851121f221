#!/usr/bin/env bash
# `make run`: a complete two-region quay-geo on 127.0.0.1, with no external service.
#
#   region us: S3 (moto) :9000 as location us_s3, registry :8000 (prefers us_s3)
#   region eu: S3 (moto) :9001 as location eu_s3, registry :8001 (prefers eu_s3)
#   a Celery worker and beat on the embedded filesystem broker; SQLite under ./var/
#
# Each process runs in its own session, with a pid file in var/run/pids/. The launcher
# supervises them: a process that dies is reported and restarted with backoff (1, 2, 4 ... 30 s;
# it gives up after 5 quick deaths in a row) while the others keep serving.
# Ctrl-C (or SIGTERM) stops everything within 15 s: web and Celery get 7 s, then SIGKILL.
# moto keeps objects in memory, so they are saved to var/run/s3-<region>/ on the way out and
# loaded again on the next start (and when a store is restarted).
# A launcher that was killed (kill -9) leaves its processes behind: the next start ends them.
#
#   scripts/run.sh stop s3-eu    stop one process (say region eu's store) and keep it stopped
#   scripts/run.sh start s3-eu   let the launcher start it again
#
# environment (all optional):
#   DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD   the superuser (else admin + a
#                                generated password, printed once)
#   DATABASE_URL, CELERY_BROKER_URL   switch to PostgreSQL / Redis / RabbitMQ
#   QUAY_GEO_RUN_DIR (var/run)  QUAY_GEO_US_PORT (8000)  QUAY_GEO_EU_PORT (8001)
#   QUAY_GEO_S3_US_PORT (9000)  QUAY_GEO_S3_EU_PORT (9001)  QUAY_GEO_WEB_WORKERS (2)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
BIN=${QUAY_GEO_VENV:-$ROOT/.venv}/bin
STATE=${QUAY_GEO_RUN_DIR:-$ROOT/var/run}
PIDDIR=$STATE/pids
HOLD=$STATE/hold
US_PORT=${QUAY_GEO_US_PORT:-8000}
EU_PORT=${QUAY_GEO_EU_PORT:-8001}
S3_US_PORT=${QUAY_GEO_S3_US_PORT:-9000}
S3_EU_PORT=${QUAY_GEO_S3_EU_PORT:-9001}
WORKERS=${QUAY_GEO_WEB_WORKERS:-2}
NAMES=(s3-us s3-eu web-us web-eu worker beat)
STOP_WAIT=7       # seconds web and Celery get to stop before SIGKILL
RESTART_MAX=5     # quick deaths in a row before the launcher gives up on a process
STABLE_AFTER=60   # seconds up after which a process counts as healthy again
mkdir -p "$STATE/logs" "$PIDDIR" "$HOLD"

log() { printf '[run] %s\n' "$*"; }
die() { printf '[run] error: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
    stop|start)
        [ -n "${2:-}" ] && [[ " ${NAMES[*]} " == *" $2 "* ]] \
            || die "usage: $0 stop|start NAME (NAME: ${NAMES[*]})"
        if [ "$1" = stop ]; then touch "$HOLD/$2"; else rm -f "$HOLD/$2"; fi
        log "$2: asked the launcher to $1 it (it acts within a few seconds)"
        exit 0 ;;
    "") ;;
    *) die "usage: $0 [stop|start NAME]" ;;
esac

# The start time of a process (clock ticks since boot): with the pid it names one process, so
# a pid reused by an unrelated process is never signalled.
start_time() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
pidfile_alive() { # file: true if the process it names still runs
    local pid started
    read -r pid started < "$1" 2>/dev/null || return 1
    [ -n "$pid" ] && [ "$(start_time "$pid")" = "$started" ] && qg_alive "$pid"
}
group_alive() { kill -0 -- "-$1" 2>/dev/null; }
stop_groups() { # seconds pid...: TERM each process group, wait at most that long, then KILL
    local wait=$1 pid deadline left=(); shift
    for pid in "$@"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + wait))
    while :; do
        left=()
        for pid in "$@"; do group_alive "$pid" && left+=("$pid"); done
        [ ${#left[@]} -gt 0 ] && [ $SECONDS -lt $deadline ] || break
        sleep 0.2
    done
    for pid in "${left[@]}"; do
        log "process group $pid did not stop within ${wait}s: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
}

# What an earlier launcher left: refuse if it still runs, end its processes if it was killed.
if pidfile_alive "$PIDDIR/launcher.pid"; then
    die "make run is already running (pid $(cut -d' ' -f1 "$PIDDIR/launcher.pid")): stop it first"
fi
leftovers=()
for file in "$PIDDIR"/*.pid; do
    [ -e "$file" ] || continue
    if [ "$file" != "$PIDDIR/launcher.pid" ] && pidfile_alive "$file"; then
        log "ending $(basename "$file" .pid) (pid $(cut -d' ' -f1 "$file")), left by a killed make run"
        leftovers+=("$(cut -d' ' -f1 "$file")")
    fi
    rm -f "$file"
done
[ ${#leftovers[@]} -eq 0 ] || stop_groups 5 "${leftovers[@]}"
rm -f "$HOLD"/*

for port in "$US_PORT" "$EU_PORT" "$S3_US_PORT" "$S3_EU_PORT"; do
    if qg_port_busy "$port"; then
        die "port $port on 127.0.0.1 is already in use (by something make run did not start)"
    fi
done
printf '%s %s\n' "$$" "$(start_time $$)" > "$PIDDIR/launcher.pid"

if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
    [ -s "$STATE/secret-key" ] || (umask 077; "$BIN/python" -c \
        'import secrets; print(secrets.token_urlsafe(50))' > "$STATE/secret-key")
    DJANGO_SECRET_KEY=$(cat "$STATE/secret-key")
    export DJANGO_SECRET_KEY
fi
# Plain HTTP on the loopback: cookies cannot be "Secure" here. Behind TLS, leave this unset.
export DJANGO_SECURE_COOKIES=${DJANGO_SECURE_COOKIES:-0}
export QUAY_GEO_VAR_DIR=${QUAY_GEO_VAR_DIR:-$ROOT/var}

declare -A PID=() STARTED=() DEATHS=() NEXT_TRY=() GAVE_UP=()

s3_port() { if [ "$1" = s3-us ]; then echo "$S3_US_PORT"; else echo "$S3_EU_PORT"; fi; }

spawn() { # name command...: start in its own session, so a Ctrl-C reaches the launcher only
    local name=$1; shift
    setsid "$@" >> "$STATE/logs/$name.log" 2>&1 &
    PID[$name]=$!
    STARTED[$name]=$SECONDS
    printf '%s %s\n' "$!" "$(start_time $!)" > "$PIDDIR/$name.pid"
}

s3_ready() { # name: wait for a store, load its saved objects, make sure its bucket exists
    local name=$1 port region
    port=$(s3_port "$name"); region=${name#s3-}
    qg_wait_http "http://127.0.0.1:$port/moto-api/" 30 "${PID[$name]}" \
        || { log "$name did not start (see $STATE/logs/$name.log)"; return 1; }
    "$BIN/python" scripts/s3_snapshot.py restore "http://127.0.0.1:$port" "$STATE/$name"
    "$BIN/python" - "$port" "quay-geo-$region" <<'PY'
import sys, boto3
port, bucket = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="demo", aws_secret_access_key="demo")
if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
    s3.create_bucket(Bucket=bucket)
PY
}

s3_save() { # name: save a store's objects; bounded, so a hung store cannot hold up a stop
    local port; port=$(s3_port "$1")
    timeout 4 "$BIN/python" scripts/s3_snapshot.py save "http://127.0.0.1:$port" "$STATE/$1" \
        || log "could not save the S3 data of $1"
}

launch() { # name: start one of NAMES
    local name=$1 region port
    case $name in
        s3-us|s3-eu)
            spawn "$name" "$BIN/moto_server" -H 127.0.0.1 -p "$(s3_port "$name")" ;;
        web-us|web-eu)
            region=${name#web-}; port=$US_PORT
            [ "$region" = eu ] && port=$EU_PORT
            spawn "$name" env QUAY_DISTRIBUTED_STORAGE_PREFERENCE="${region}_s3" "$BIN/gunicorn" \
                quay_geo.wsgi:application -c python:quay_geo.gunicorn_config --bind "127.0.0.1:$port" --workers "$WORKERS" \
                --worker-class gthread --threads 8 --timeout 600 --graceful-timeout 5 \
                --access-logfile - --logger-class quay_geo.gunicorn_logging.AccessLogger \
                --name "quay-geo-$region" ;;
        worker)
            # No mingle or gossip: one machine has nothing to sync, and the worker stops faster.
            spawn worker "$BIN/celery" -A quay_geo worker --loglevel INFO --concurrency 2 \
                --without-mingle --without-gossip --hostname "worker@%h" ;;
        beat)
            spawn beat "$BIN/celery" -A quay_geo beat --loglevel INFO \
                --schedule "$STATE/celerybeat-schedule" ;;
    esac
}

forget() { # name: the process and its pid file are gone
    PID[$1]=""
    rm -f "$PIDDIR/$1.pid"
}

stop_one() { # name
    local name=$1 pid=${PID[$1]:-}
    [ -n "$pid" ] || return 0
    case $name in s3-*) group_alive "$pid" && s3_save "$name" ;; esac
    stop_groups "$STOP_WAIT" "$pid"
    wait "$pid" 2>/dev/null || true
    forget "$name"
}

STOPPING=0
stop_all() {
    [ $STOPPING = 0 ] || return 0
    STOPPING=1
    # make passes a SIGTERM on to this script, a second signal: the stop is bounded, finish it.
    trap '' INT TERM
    log "stopping..."
    local name running=() saves=()
    for name in web-us web-eu worker beat; do
        [ -z "${PID[$name]:-}" ] || running+=("${PID[$name]}")
    done
    [ ${#running[@]} -eq 0 ] || stop_groups "$STOP_WAIT" "${running[@]}"
    running=()
    for name in s3-us s3-eu; do
        if [ -n "${PID[$name]:-}" ] && group_alive "${PID[$name]}"; then
            s3_save "$name" &
            saves+=($!)
            running+=("${PID[$name]}")
        fi
    done
    [ ${#saves[@]} -eq 0 ] || wait "${saves[@]}" 2>/dev/null || true
    [ ${#running[@]} -eq 0 ] || stop_groups 2 "${running[@]}"
    rm -f "$PIDDIR"/*.pid
    log "stopped"
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

log "starting S3 (moto) for region us on :$S3_US_PORT and eu on :$S3_EU_PORT"
for name in "${NAMES[@]}"; do : > "$STATE/logs/$name.log"; done
launch s3-us
launch s3-eu
s3_ready s3-us || die "moto did not start (see $STATE/logs/s3-us.log)"
s3_ready s3-eu || die "moto did not start (see $STATE/logs/s3-eu.log)"

log "migrating the database"
"$BIN/python" manage.py migrate --noinput > "$STATE/logs/migrate.log" 2>&1 \
    || die "migrate failed (see $STATE/logs/migrate.log)"
"$BIN/python" manage.py collectstatic --noinput > "$STATE/logs/collectstatic.log" 2>&1
"$BIN/python" manage.py ensuresuperuser | tee "$STATE/logs/superuser.log"
for region in us eu; do
    port=$S3_US_PORT; [ $region = eu ] && port=$S3_EU_PORT
    "$BIN/python" manage.py addlocation "${region}_s3" --kind s3 --default --if-missing \
        --option "s3_bucket=quay-geo-$region" --option "endpoint_url=http://127.0.0.1:$port" \
        --option s3_access_key=demo --option s3_secret_key=demo --option addressing_style=path
done
# Only on the first start: later, the panel's choice (replication on or off) is kept.
if [ ! -e "$STATE/configured" ]; then
    "$BIN/python" manage.py setreplication on
    touch "$STATE/configured"
fi

for name in web-us web-eu worker beat; do launch "$name"; done
qg_wait_http "http://127.0.0.1:$US_PORT/v2/" 60 || die "region us did not start (see $STATE/logs/web-us.log)"
qg_wait_http "http://127.0.0.1:$EU_PORT/v2/" 60 || die "region eu did not start (see $STATE/logs/web-eu.log)"

user=${DJANGO_SUPERUSER_USERNAME:-admin}
cat <<EOF

quay-geo is running: two regions, replication on (us_s3 <-> eu_s3).
  region us  http://127.0.0.1:$US_PORT   (writes to us_s3)
  region eu  http://127.0.0.1:$EU_PORT   (writes to eu_s3)
  panel      http://127.0.0.1:$US_PORT/superuser/   user: $user (password: DJANGO_SUPERUSER_PASSWORD, or printed above on first run)
  logs       $STATE/logs/   pid files  $PIDDIR/
  manage.py  DJANGO_SECRET_KEY=\$(cat $STATE/secret-key) .venv/bin/python manage.py replicationstatus

Try it (in another terminal):
  .venv/bin/python scripts/demo_image.py var/demo-image          # a small OCI image, no internet needed
  skopeo copy --dest-tls-verify=false --dest-creds $user:PASSWORD oci:var/demo-image:v1 docker://127.0.0.1:$US_PORT/$user/demo:v1
  skopeo copy --src-tls-verify=false --src-creds $user:PASSWORD docker://127.0.0.1:$EU_PORT/$user/demo:v1 oci:var/pulled:v1
  open http://127.0.0.1:$US_PORT/superuser/ in a browser

Watch a pull fall back to the other region:
  scripts/run.sh stop s3-eu      # region eu's store stops (its objects are saved first)
  (pull from region eu again, as above: the layers now come from us_s3)
  scripts/run.sh start s3-eu     # the store comes back, with its objects

A process that dies is reported and restarted; the others keep serving. Ctrl-C stops everything.
EOF

supervise() { # name: stop it if held; if it died, report it and restart it with backoff
    local name=$1 pid=${PID[$1]:-} status delay
    if [ -e "$HOLD/$name" ]; then
        if [ -n "$pid" ]; then
            log "$name: stopping, as asked (scripts/run.sh start $name starts it again)"
            stop_one "$name"
        fi
        return 0
    fi
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        [ $((SECONDS - STARTED[$name])) -lt $STABLE_AFTER ] || DEATHS[$name]=0
        return 0
    fi
    [ -z "${GAVE_UP[$name]:-}" ] || return 0
    if [ -n "$pid" ]; then
        status=0; wait "$pid" 2>/dev/null || status=$?
        kill -KILL -- "-$pid" 2>/dev/null || true  # what is left of its group (pool children)
        forget "$name"
        DEATHS[$name]=$(( ${DEATHS[$name]:-0} + 1 ))
        if [ "${DEATHS[$name]}" -gt $RESTART_MAX ]; then
            GAVE_UP[$name]=1
            log "$name exited (status $status) ${DEATHS[$name]} times in a row: not restarting it (see $STATE/logs/$name.log); the others keep serving"
            return 0
        fi
        delay=$(( 1 << (DEATHS[$name] - 1) )); [ $delay -le 30 ] || delay=30
        NEXT_TRY[$name]=$((SECONDS + delay))
        log "$name exited (status $status; see $STATE/logs/$name.log): restarting it in ${delay}s; the others keep serving"
        return 0
    fi
    [ $SECONDS -ge "${NEXT_TRY[$name]:-0}" ] || return 0
    log "$name: starting"
    launch "$name"
    case $name in s3-*) s3_ready "$name" || true ;; esac
}

while true; do
    for name in "${NAMES[@]}"; do supervise "$name"; done
    sleep 1
done
