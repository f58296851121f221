#!/usr/bin/env bash
# `make run`: a complete two-region quay-geo on 127.0.0.1, with no external service.
#
#   region us: S3 (moto) :9000 as location us_s3, registry :8000 (prefers us_s3)
#   region eu: S3 (moto) :9001 as location eu_s3, registry :8001 (prefers eu_s3)
#   a Celery worker and beat on the embedded filesystem broker; SQLite under ./var/
#
# Ctrl-C stops every process it started. moto keeps objects in memory, so they are saved to
# var/run/s3-<region>/ on the way out and loaded again on the next start.
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
BIN=${QUAY_GEO_VENV:-$ROOT/.venv}/bin
STATE=${QUAY_GEO_RUN_DIR:-$ROOT/var/run}
US_PORT=${QUAY_GEO_US_PORT:-8000}
EU_PORT=${QUAY_GEO_EU_PORT:-8001}
S3_US_PORT=${QUAY_GEO_S3_US_PORT:-9000}
S3_EU_PORT=${QUAY_GEO_S3_EU_PORT:-9001}
WORKERS=${QUAY_GEO_WEB_WORKERS:-2}
mkdir -p "$STATE/logs"

log() { printf '[run] %s\n' "$*"; }
die() { printf '[run] error: %s\n' "$*" >&2; exit 1; }

for port in "$US_PORT" "$EU_PORT" "$S3_US_PORT" "$S3_EU_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is already in use (another make run?)"
    fi
done

if [ -z "${DJANGO_SECRET_KEY:-}" ]; then
    [ -s "$STATE/secret-key" ] || (umask 077; "$BIN/python" -c \
        'import secrets; print(secrets.token_urlsafe(50))' > "$STATE/secret-key")
    DJANGO_SECRET_KEY=$(cat "$STATE/secret-key")
    export DJANGO_SECRET_KEY
fi
# Plain HTTP on the loopback: cookies cannot be "Secure" here. Behind TLS, leave this unset.
export DJANGO_SECURE_COOKIES=${DJANGO_SECURE_COOKIES:-0}
export QUAY_GEO_VAR_DIR=${QUAY_GEO_VAR_DIR:-$ROOT/var}

PIDS=()
NAMES=()
start() { # name, command...
    local name=$1; shift
    "$@" > "$STATE/logs/$name.log" 2>&1 &
    PIDS+=($!)
    NAMES+=("$name")
}

wait_http() { # url, seconds
    local deadline=$((SECONDS + $2))
    until curl -s -o /dev/null --max-time 1 "$1"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

STOPPING=0
stop_all() {
    [ $STOPPING = 0 ] || return 0
    STOPPING=1
    log "stopping..."
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        case "${NAMES[$i]}" in s3-*) continue ;; esac
        kill "${PIDS[$i]}" 2>/dev/null || true
    done
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        case "${NAMES[$i]}" in s3-*) continue ;; esac
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    for region in us eu; do
        port=$S3_US_PORT; [ $region = eu ] && port=$S3_EU_PORT
        "$BIN/python" scripts/s3_snapshot.py save "http://127.0.0.1:$port" "$STATE/s3-$region" \
            || log "could not save the S3 data of region $region"
    done
    for ((i = 0; i < ${#PIDS[@]}; i++)); do
        kill "${PIDS[$i]}" 2>/dev/null || true
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    log "stopped"
}
trap 'stop_all' EXIT
trap 'exit 130' INT TERM

log "starting S3 (moto) for region us on :$S3_US_PORT and eu on :$S3_EU_PORT"
# Their own session: a Ctrl-C in the terminal must not reach moto before its data is saved.
start s3-us setsid "$BIN/moto_server" -H 127.0.0.1 -p "$S3_US_PORT"
start s3-eu setsid "$BIN/moto_server" -H 127.0.0.1 -p "$S3_EU_PORT"
wait_http "http://127.0.0.1:$S3_US_PORT/moto-api/" 30 || die "moto did not start (see $STATE/logs/s3-us.log)"
wait_http "http://127.0.0.1:$S3_EU_PORT/moto-api/" 30 || die "moto did not start (see $STATE/logs/s3-eu.log)"
"$BIN/python" scripts/s3_snapshot.py restore "http://127.0.0.1:$S3_US_PORT" "$STATE/s3-us"
"$BIN/python" scripts/s3_snapshot.py restore "http://127.0.0.1:$S3_EU_PORT" "$STATE/s3-eu"
"$BIN/python" - "$S3_US_PORT" "$S3_EU_PORT" <<'PY'
import sys, boto3
for port, bucket in zip(sys.argv[1:], ("quay-geo-us", "quay-geo-eu")):
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                      aws_access_key_id="demo", aws_secret_access_key="demo")
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
PY

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

gunicorn_for() { # region port preference
    start "web-$1" env QUAY_DISTRIBUTED_STORAGE_PREFERENCE="$3" "$BIN/gunicorn" \
        quay_geo.wsgi:application --bind "127.0.0.1:$2" --workers "$WORKERS" \
        --worker-class gthread --threads 8 --timeout 600 --graceful-timeout 10 \
        --access-logfile - --logger-class quay_geo.gunicorn_logging.AccessLogger \
        --name "quay-geo-$1"
}
gunicorn_for us "$US_PORT" us_s3
gunicorn_for eu "$EU_PORT" eu_s3
start worker "$BIN/celery" -A quay_geo worker --loglevel INFO --concurrency 2 \
    --hostname "worker@%h"
start beat "$BIN/celery" -A quay_geo beat --loglevel INFO \
    --schedule "$STATE/celerybeat-schedule"
wait_http "http://127.0.0.1:$US_PORT/v2/" 60 || die "region us did not start (see $STATE/logs/web-us.log)"
wait_http "http://127.0.0.1:$EU_PORT/v2/" 60 || die "region eu did not start (see $STATE/logs/web-eu.log)"

user=${DJANGO_SUPERUSER_USERNAME:-admin}
cat <<EOF

quay-geo is running: two regions, replication on (us_s3 <-> eu_s3).
  region us  http://127.0.0.1:$US_PORT   (writes to us_s3)
  region eu  http://127.0.0.1:$EU_PORT   (writes to eu_s3)
  panel      http://127.0.0.1:$US_PORT/superuser/   user: $user (password: DJANGO_SUPERUSER_PASSWORD, or printed above on first run)
  logs       $STATE/logs/
  manage.py  DJANGO_SECRET_KEY=\$(cat $STATE/secret-key) .venv/bin/python manage.py replicationstatus

Try it (in another terminal):
  .venv/bin/python scripts/demo_image.py var/demo-image          # a small OCI image, no internet needed
  skopeo copy --dest-tls-verify=false --dest-creds $user:PASSWORD oci:var/demo-image:v1 docker://127.0.0.1:$US_PORT/$user/demo:v1
  skopeo copy --src-tls-verify=false --src-creds $user:PASSWORD docker://127.0.0.1:$EU_PORT/$user/demo:v1 oci:var/pulled:v1
  open http://127.0.0.1:$US_PORT/superuser/ in a browser

Ctrl-C stops everything.
EOF

# Stay up until Ctrl-C; if a process dies, say which and stop the rest.
while true; do
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            die "${NAMES[$i]} exited (see $STATE/logs/${NAMES[$i]}.log)"
        fi
    done
    sleep 1
done
