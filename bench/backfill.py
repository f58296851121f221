"""Case 4: backfill planning at scale on PostgreSQL (time and peak RSS; no peer)."""

import re
import subprocess
import time
from typing import Any

import redis

from . import servers
from .procs import BIN, ROOT
from .report import save, summary
from .servers import manage, quay_env, reset_database

DATABASE = "quay_geo_bench_backfill"
OLD_LOCATIONS = ("bench_a", "bench_b", "bench_c")
NEW_LOCATION = "bench_new"
BROKER_DB = 15
BUDGET_S, BUDGET_MB = 60.0, 300.0

SEED = """
INSERT INTO replication_blob (digest, size, sha256, created_at)
SELECT 'sha256:' || h, 1048576 + g, h, now()
FROM (SELECT g, lpad(to_hex(g), 64, '0') AS h FROM generate_series(1, {n}) AS g) AS s;
INSERT INTO replication_placement (blob_id, location_id, state, attempts, last_error,
    error_permanent, copy_method, created_at, updated_at)
SELECT b.id, l.id, 'present', 0, '', false, '', now(), now()
FROM replication_blob b CROSS JOIN replication_storagelocation l
WHERE l.location_id IN ({old});
"""


def psql(sql: str, *, database: str = DATABASE, **variables: str) -> str:
    """Run ``sql`` on a benchmark database (``:'name'`` takes a value from ``variables``)."""
    args = ["psql", *servers.pg_args(), "-d", database, "-qAt"]
    for name, value in {"ON_ERROR_STOP": "1", **variables}.items():
        args += ["-v", f"{name}={value}"]
    result = subprocess.run(args, input=sql, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"psql failed: {result.stderr[-2000:]}")
    return result.stdout.strip()


def add_location(env: dict[str, str], location_id: str) -> None:
    """Add a default S3 location; nothing talks to it (no probe, no worker runs)."""
    manage(
        env,
        "addlocation",
        location_id,
        "--kind",
        "s3",
        "--default",
        "--no-probe",
        "--option",
        f"s3_bucket={location_id.replace('_', '-')}",
        "--option",
        "endpoint_url=http://127.0.0.1:9",
        "--option",
        "s3_access_key=k",
        "--option",
        "s3_secret_key=s",
        "--option",
        "addressing_style=path",
    )


def time_v(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run ``manage.py args`` under ``/usr/bin/time -v``; return wall and CPU seconds, max RSS,
    stdout."""
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", str(BIN / "python"), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")

    def figure(pattern: str) -> float:
        found = re.search(pattern, result.stderr)
        if found is None:
            raise RuntimeError(f"/usr/bin/time -v printed no {pattern!r}")
        return float(found.group(1))

    kib = figure(r"Maximum resident set size \(kbytes\): (\d+)")
    cpu = figure(r"User time \(seconds\): ([\d.]+)") + figure(r"System time \(seconds\): ([\d.]+)")
    return {
        "seconds": elapsed,
        "cpu_s": cpu,
        "max_rss_mb": kib * 1024 / 1e6,
        "stdout": result.stdout.strip(),
    }


def prepare(blobs: int) -> tuple[dict[str, str], "redis.Redis", float]:
    """Seed ``blobs`` blobs present at three locations, add a fourth default one.

    Return the environment, the broker and the seconds the seeding took.
    """
    env = quay_env(reset_database(DATABASE))
    broker: redis.Redis = redis.Redis.from_url(env["CELERY_BROKER_URL"])
    manage(env, "setreplication", "on")
    for location_id in OLD_LOCATIONS:
        add_location(env, location_id)
    started = time.perf_counter()
    psql(SEED.format(n=blobs, old=", ".join(f"'{x}'" for x in OLD_LOCATIONS)))
    psql("VACUUM ANALYZE")
    seed_s = time.perf_counter() - started
    print(f"  seeded {blobs} blobs and {3 * blobs} placements in {seed_s:.1f}s", flush=True)
    add_location(env, NEW_LOCATION)
    return env, broker, seed_s


def run(*, quick: bool, runs: int, blobs: int) -> dict[str, Any]:
    """Seed ``blobs`` blobs at three locations, add a fourth; time the backfill planning."""
    env, broker, seed_s = prepare(blobs)
    samples: dict[str, list[float]] = {}
    outputs: dict[str, str] = {}
    for index in range(runs):
        dry = time_v(env, "backfillreplication", "--dry-run")
        if f"{blobs} placements missing" not in dry["stdout"]:
            raise RuntimeError(f"dry run counted something else: {dry['stdout']}")
        broker.flushdb()
        real = time_v(env, "backfillreplication")
        created = int(
            psql(
                "SELECT count(*) FROM replication_placement p JOIN replication_storagelocation l "
                "ON l.id = p.location_id WHERE l.location_id = :'location' "
                "AND p.enqueued_at IS NOT NULL",
                location=NEW_LOCATION,
            )
        )
        queued = sum(broker.llen(key) for key in broker.scan_iter() if broker.type(key) == b"list")
        if created != blobs:
            raise RuntimeError(f"backfill enqueued {created} placements, expected {blobs}")
        for key, value in (
            ("dry_run_s", dry["seconds"]),
            ("dry_run_rss_mb", dry["max_rss_mb"]),
            ("enqueue_s", real["seconds"]),
            ("enqueue_rss_mb", real["max_rss_mb"]),
            ("broker_messages", float(queued)),
        ):
            samples.setdefault(key, []).append(value)
        outputs = {"dry_run": dry["stdout"], "enqueue": real["stdout"]}
        print(
            f"  run {index + 1}/{runs}: dry run {dry['seconds']:.2f}s {dry['max_rss_mb']:.0f} MB; "
            f"plan+enqueue {real['seconds']:.2f}s {real['max_rss_mb']:.0f} MB, "
            f"{queued} messages on the broker",
            flush=True,
        )
        psql(
            "DELETE FROM replication_placement WHERE location_id = (SELECT id FROM "
            "replication_storagelocation WHERE location_id = :'location'); "
            "DELETE FROM replication_backfillrun",
            location=NEW_LOCATION,
        )
        psql("VACUUM ANALYZE")
        broker.flushdb()
    summaries = {k: summary(v) for k, v in samples.items()}
    result = {
        "params": {
            "blobs": blobs,
            "old_locations": 3,
            "placements_seeded": 3 * blobs,
            "runs": runs,
            "quick": quick,
            "seed_s": seed_s,
            "broker": "redis",
            "budget": {"seconds": BUDGET_S, "rss_mb": BUDGET_MB},
        },
        "samples": samples,
        "summary": summaries,
        "last_output": outputs,
    }
    path = save("backfill", result)
    for key in ("dry_run", "enqueue"):
        s, m = summaries[f"{key}_s"], summaries[f"{key}_rss_mb"]
        print(
            f"  {key}: median {s['median']:.2f}s (budget {BUDGET_S:.0f}s), peak RSS median "
            f"{m['median']:.0f} MB (budget {BUDGET_MB:.0f} MB)"
        )
    print(f"results: {path}")
    return result
