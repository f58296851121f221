"""Case 9: the inventory audit at scale, and the scrub's byte budget (issue 14; no peer).

Audit: a location on a private moto holds ``objects`` small objects, each with its blob and its
present placement in the bench's PostgreSQL (inserted set-wise, ``INSERT ... SELECT
generate_series``; the objects are PUT by a thread pool, their body ``str(n)`` and their digest
its SHA-256, as PostgreSQL's ``sha256(n::text)`` computes it). The location's endpoint is a
``DelayProxy`` with no delay in front of moto: its round trips are the audit's requests (a
clean audit sends only list requests). ``manage.py auditlocation --json`` runs under
``/usr/bin/time -v`` (wall time, its CPU time, peak RSS). A bare boto3 listing of the same
bucket, timed alone, is what moto costs: moto sorts the whole bucket on every ListObjectsV2
page, so its time grows with the square of the object count and dominates the wall time. What
the audit itself costs is its CPU time (wall minus moto's listing is too noisy to say it: two
listings of one bucket differ by more than the audit's work).

``audit-local``: moto cannot hold and list a million objects in reasonable time (above), so the
million is audited on a local-disk location instead: as many empty files at their content keys
(blob sizes 0), the same placements, the same command. It measures what the audit itself costs
at that size (its CPU, its memory, the placements read by keyset from PostgreSQL) with a
listing that costs little; the S3 listing's cost per object comes from the moto sizes.

Scrub: ``SCRUB_OBJECTS`` objects of random sizes (64 KiB to 1 MiB) in a second location, and a
day of ``SCRUB_SLICES`` slices run back to back in one process; the bytes read against the
day's budget (issue 14: within 10 %).
"""

import hashlib
import json
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.delayproxy import DelayProxy

from . import servers
from .backfill import psql, time_v
from .procs import STATE, fresh_dir
from .report import save, summary
from .servers import S3, S3_KEY, manage, quay_env, reset_database

DATABASE = "quay_geo_bench_audit"
LOCATION, SCRUB_LOCATION = "bench_audit", "bench_scrub"
#: The issue's budgets for a million objects: list requests, peak RSS, wall time.
BUDGET_REQUESTS, BUDGET_MB, BUDGET_S = 1000, 200.0, 120.0
SCRUB_OBJECTS, SCRUB_DAY_BYTES, SCRUB_SLICES = 240, 48 * 1024**2, 8

SEED_BLOBS = """
INSERT INTO replication_blob (digest, size, sha256, created_at)
SELECT 'sha256:' || h, CASE WHEN :'empty' = 'yes' THEN 0 ELSE length(g::text) END, h, now()
FROM (SELECT g, encode(sha256(g::text::bytea), 'hex') AS h
      FROM generate_series(1, :n) AS g) AS s;
"""
#: Bytes of blobs given on the standard input, after it.
COPY_BLOBS = """
CREATE TEMP TABLE seed (digest text, size bigint, sha256 text);
INSERT INTO replication_blob (digest, size, sha256, created_at)
SELECT digest, size, sha256, now() FROM seed;
"""
SEED_PLACEMENTS = """
INSERT INTO replication_placement (blob_id, location_id, state, attempts, last_error,
    error_permanent, copy_method, verified_at, created_at, updated_at)
SELECT b.id, l.id, 'present', 0, '', false, '', now() - interval '1 day', now(), now()
FROM replication_blob b CROSS JOIN replication_storagelocation l
WHERE l.location_id = :'location';
"""


def key_of(body: bytes) -> str:
    """Return the content key of ``body`` (storage_engines.keys.content_key of its digest)."""
    hexdigest = hashlib.sha256(body).hexdigest()
    return f"sha256/{hexdigest[:2]}/{hexdigest}"


def put_all(s3: S3, bucket: str, bodies: Any, threads: int = 16) -> float:
    """PUT every body at its content key with a thread pool; return the objects per second."""
    client = s3.client()  # boto3 clients are thread-safe
    started = time.perf_counter()
    count = 0

    def put(body: bytes) -> None:
        client.put_object(Bucket=bucket, Key=key_of(body), Body=body)

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(put, bodies):
            count += 1
    return count / (time.perf_counter() - started)


def add_location(env: dict[str, str], location_id: str, endpoint: str, bucket: str) -> None:
    """Add an S3 location on ``endpoint`` (no probe: nothing is written to it)."""
    options = {
        "s3_bucket": bucket,
        "endpoint_url": endpoint,
        "s3_access_key": S3_KEY,
        "s3_secret_key": S3_KEY,
        "addressing_style": "path",
    }
    args = [arg for name, value in options.items() for arg in ("--option", f"{name}={value}")]
    manage(env, "addlocation", location_id, "--kind", "s3", "--no-probe", *args)


def bare_listing_seconds(s3: S3, bucket: str) -> tuple[float, int]:
    """List the bucket page by page with boto3 alone; return the seconds and the pages."""
    client, pages = s3.client(), 0
    started = time.perf_counter()
    for _ in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="sha256/", PaginationConfig={"PageSize": 1000}
    ):
        pages += 1
    return time.perf_counter() - started, pages


def audit_size(objects: int, runs: int) -> dict[str, Any]:
    """Load ``objects`` objects and their placements; audit ``runs`` times; return the samples."""
    env = quay_env(reset_database(DATABASE))
    manage(env, "setreplication", "on")
    with servers.moto() as s3:
        bucket = s3.fresh_bucket("audit")
        rate = put_all(s3, bucket, (str(n).encode() for n in range(1, objects + 1)))
        print(f"  {objects} objects PUT at {rate:.0f}/s", flush=True)
        port = int(s3.url.rsplit(":", 1)[1])
        with DelayProxy(port, handshake=False) as proxy:
            add_location(env, LOCATION, f"http://{proxy.url_host}", bucket)
            started = time.perf_counter()
            psql(
                SEED_BLOBS + SEED_PLACEMENTS,
                database=DATABASE,
                n=str(objects),
                location=LOCATION,
                empty="no",
            )
            psql("VACUUM ANALYZE", database=DATABASE)
            print(f"  seeded {objects} placements in {time.perf_counter() - started:.1f}s")
            samples: dict[str, list[float]] = {}
            for index in range(runs):
                before = proxy.snapshot()
                audit = time_v(env, "auditlocation", LOCATION, "--json")
                requests = (proxy.snapshot() - before).round_trips
                found = json.loads(audit["stdout"].splitlines()[-1])
                if (found["objects_seen"], found["lost"], found["orphans"]) != (objects, 0, 0):
                    raise RuntimeError(f"the audit found something else: {found}")
                moto_s, pages = bare_listing_seconds(s3, bucket)
                for key, value in (
                    ("audit_s", audit["seconds"]),
                    ("audit_cpu_s", audit["cpu_s"]),
                    ("audit_rss_mb", audit["max_rss_mb"]),
                    ("list_requests", float(requests)),
                    ("moto_listing_s", moto_s),
                ):
                    samples.setdefault(key, []).append(value)
                print(
                    f"  run {index + 1}/{runs}: {audit['seconds']:.1f}s "
                    f"({audit['cpu_s']:.1f}s CPU), {audit['max_rss_mb']:.0f} MB, "
                    f"{requests} requests; moto alone lists "
                    f"the {pages} pages in {moto_s:.1f}s",
                    flush=True,
                )
    return {"put_per_s": rate, "samples": samples}


def audit_local(objects: int, runs: int) -> dict[str, list[float]]:
    """Audit a local-disk location of ``objects`` empty files ``runs`` times; return samples."""
    env = quay_env(reset_database(DATABASE))
    root = fresh_dir(STATE / "audit-local")
    started = time.perf_counter()
    for n in range(1, objects + 1):
        path = root / key_of(str(n).encode())
        path.parent.mkdir(exist_ok=True, parents=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
    print(f"  {objects} empty files in {time.perf_counter() - started:.0f}s", flush=True)
    manage(
        env,
        "addlocation",
        LOCATION,
        "--kind",
        "local",
        "--no-probe",
        "--option",
        f"storage_path={root}",
    )
    psql(
        SEED_BLOBS + SEED_PLACEMENTS,
        database=DATABASE,
        n=str(objects),
        location=LOCATION,
        empty="yes",
    )
    psql("VACUUM ANALYZE", database=DATABASE)
    samples: dict[str, list[float]] = {}
    try:
        for index in range(runs):
            audit = time_v(env, "auditlocation", LOCATION, "--json")
            found = json.loads(audit["stdout"].splitlines()[-1])
            if (found["objects_seen"], found["lost"], found["orphans"]) != (objects, 0, 0):
                raise RuntimeError(f"the audit found something else: {found}")
            for key, value in (
                ("audit_s", audit["seconds"]),
                ("audit_cpu_s", audit["cpu_s"]),
                ("audit_rss_mb", audit["max_rss_mb"]),
            ):
                samples.setdefault(key, []).append(value)
            print(
                f"  run {index + 1}/{runs}: {audit['seconds']:.1f}s ({audit['cpu_s']:.1f}s CPU), "
                f"{audit['max_rss_mb']:.0f} MB",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return samples


def run_local(*, quick: bool, runs: int) -> dict[str, Any]:
    """Audit a local-disk location of a million objects (quick: 1,000)."""
    objects = 1000 if quick else 1_000_000
    summaries = {
        f"{objects} objects": {k: summary(v) for k, v in audit_local(objects, runs).items()}
    }
    result = {
        "params": {
            "objects": objects,
            "engine": "local",
            "runs": runs,
            "quick": quick,
            "budget": {"rss_mb": BUDGET_MB, "seconds": BUDGET_S},
        },
        "summary": summaries,
    }
    path = save("audit-local", result)
    print(
        f"  {objects} objects: "
        + ", ".join(f"{k} {v['median']:.3g}" for k, v in summaries[f"{objects} objects"].items())
    )
    print(f"results: {path}")
    return result


SCRUB = """
import json
from replication.models import StorageLocation
from replication.scrub import location_scrub
location = StorageLocation.objects.get(location_id={location!r})
slices = [location_scrub(location=location).bytes_read for _ in range({slices})]
print(json.dumps(slices))
"""


def scrub_day(runs: int, objects: int) -> dict[str, list[float]]:
    """Run ``runs`` days of scrub slices over ``objects`` random objects; return the samples."""
    env = quay_env(reset_database(DATABASE))
    manage(env, "setreplication", "on")
    rng = random.Random(14)
    bodies = [rng.randbytes(rng.randint(64 * 1024, 1024 * 1024)) for _ in range(objects)]
    samples: dict[str, list[float]] = {}
    with servers.moto() as s3:
        bucket = s3.fresh_bucket("scrub")
        put_all(s3, bucket, bodies, threads=4)
        add_location(env, SCRUB_LOCATION, s3.url, bucket)
        rows = "\n".join(
            f"sha256:{hashlib.sha256(b).hexdigest()}\t{len(b)}\t{hashlib.sha256(b).hexdigest()}"
            for b in bodies
        )
        create, insert = COPY_BLOBS.strip().split("\n", 1)
        copy = f"{create}\nCOPY seed FROM STDIN;\n{rows}\n\\.\n{insert}\n"
        psql(copy + SEED_PLACEMENTS, database=DATABASE, location=SCRUB_LOCATION)
        slice_env = dict(
            env,
            QUAY_GEO_SCRUB_BYTES_PER_DAY=str(SCRUB_DAY_BYTES),
            QUAY_GEO_SCRUB_SECONDS=str(86400 / SCRUB_SLICES),
        )
        for index in range(runs):
            code = SCRUB.format(location=SCRUB_LOCATION, slices=SCRUB_SLICES)
            read = json.loads(manage(slice_env, "shell", "-c", code).strip().splitlines()[-1])
            share = SCRUB_DAY_BYTES / SCRUB_SLICES
            ratio = sum(read) / SCRUB_DAY_BYTES
            worst = max(abs(r - share) / share for r in read)
            for key, value in (("scrub_day_ratio", ratio), ("scrub_worst_slice_ratio", worst)):
                samples.setdefault(key, []).append(value)
            print(
                f"  scrub day {index + 1}/{runs}: read {sum(read) / 2**20:.1f} MiB of a "
                f"{SCRUB_DAY_BYTES / 2**20:.0f} MiB budget ({ratio:.3f}); the farthest slice "
                f"{worst:.1%} from its share",
                flush=True,
            )
    return samples


def run(*, quick: bool, runs: int, blobs: int, engine: str = "s3") -> dict[str, Any]:
    """Audit locations of 1,000 and ``blobs`` objects; run days of scrub slices."""
    if engine == "local":
        return run_local(quick=quick, runs=runs)
    sizes = sorted({1000, blobs})
    summaries: dict[str, dict[str, dict[str, float]]] = {}
    rates: dict[str, float] = {}
    for objects in sizes:
        measured = audit_size(objects, runs)
        summaries[f"{objects} objects"] = {k: summary(v) for k, v in measured["samples"].items()}
        rates[f"{objects} objects"] = measured["put_per_s"]
    scrub = scrub_day(runs, SCRUB_OBJECTS // 4 if quick else SCRUB_OBJECTS)
    summaries["scrub"] = {k: summary(v) for k, v in scrub.items()}
    result = {
        "params": {
            "sizes": sizes,
            "runs": runs,
            "quick": quick,
            "list_page": 1000,
            "put_per_s": rates,
            "scrub": {
                "objects": SCRUB_OBJECTS // 4 if quick else SCRUB_OBJECTS,
                "day_bytes": SCRUB_DAY_BYTES,
                "slices": SCRUB_SLICES,
            },
            "budget_at_1m": {
                "list_requests": BUDGET_REQUESTS,
                "rss_mb": BUDGET_MB,
                "seconds": BUDGET_S,
            },
            "cpus": os.cpu_count(),
        },
        "summary": summaries,
    }
    path = save("audit", result)
    for side, stats in summaries.items():
        line = ", ".join(f"{k} {v['median']:.3g}" for k, v in stats.items())
        print(f"  {side}: {line}")
    print(f"results: {path}")
    return result
