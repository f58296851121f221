"""Case 2: replication throughput, quay-geo's Celery workers against ``rclone copy``.

Workload: 200 blobs of 4 MiB and 2 of 256 MiB of random bytes (1.29 GiB), written into a source
bucket at the content keys quay-geo's engines use (``sha256/<2 hex>/<hex>``, boto3 with its
default transfer settings, so the 256 MiB blobs are multipart objects as a push makes them).
Each run makes a fresh source bucket; each side copies it into a fresh target bucket (the target
never holds the objects beforehand), which is checked (every key, every size) and deleted.

quay-geo: a fresh database, replication on, the source location (default) with a ``present``
placement per blob (rows written the way ``blob_commit`` leaves them, without its enqueue), then
the target added as a default location; one ``celery -A quay_geo worker`` with
``--concurrency 4`` (prefork, as ``scripts/run.sh``) is started and answers a ping; then, timed
inside one Django process, ``manage.py backfillreplication`` (``call_command``: batched
``replicate_batch`` messages, cut by placement count and bytes in ``replication/services.py``;
each message is copied by one worker process, one placement after another) and a 0.1 s poll of
the database until every target placement is ``present``. Copies are verified as configured by
default (``QUAY_GEO_REPLICATION_VERIFY=stream``: the SHA-256 of a streamed copy's source bytes,
and the target's size); rclone compares sizes and, where both backends have one, MD5 (the ETag).

rclone: ``rclone copy -v src:<bucket> dst:<bucket>`` with default settings (``--transfers 4``,
``--checkers 8``; hence the worker's concurrency of 4), remotes from ``RCLONE_CONFIG_<NAME>_*``
environment variables (no config file). ``-v`` only logs each file, so that server-side copies
can be counted. On one endpoint both buckets go through one remote: that is how rclone copies
server-side by default (two remote names would need ``--server-side-across-configs``).

Pairs: S3->S3 on one moto (two buckets), S3->S3 across the two moto servers, S3->GCS
(gcp-storage-emulator), S3->Swift and Ceph RGW->S3, all from ``scripts/test-servers.sh``.
The sides alternate A B / B A across runs. ``--quick``: 6 x 256 KiB + 1 x 2 MiB, the same-endpoint
and GCS pairs, checks that every copy landed and measures nothing. ``rss_mb`` is the peak of the
sum over the process tree (the Celery master and its 4 prefork children; rclone is one process).
For diagnosis, ``QUAY_GEO_BENCH_PAIRS=s3-s3-same,...`` runs only those pairs and
``QUAY_GEO_BENCH_SPY=PREFIX`` records the worker with py-spy into ``PREFIX-<pair>.txt``.

Known limits of the peers here:
- rclone's GCS client sends its upload chunks (objects over 16 MiB) with ``X-GUploader-No-308``;
  the emulator alone answers a real 308, which rclone refuses. ``scripts/gcs_emulator.py`` (how
  ``scripts/test-servers.sh`` runs the emulator) answers as GCS does.
- moto answers CompleteMultipartUpload on an unversioned bucket with ``x-amz-version-id: null``;
  rclone then HEADs ``?versionId=null``, gets a 400 and runs the whole copy again (the second
  attempt finds every object in place). With a moto target and the 256 MiB blobs (above rclone's
  200 MiB multipart cutoff) rclone's time includes that second pass: ``retries`` shows it.
"""

import hashlib
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from storage_engines.keys import content_key

from .procs import BIN, ROOT, STATE, PeakRss, base_env
from .report import compare_table, save, summary
from .servers import manage, quay_env, reset_database
from .stores import GCS, MOTO_A, MOTO_B, RGW, SWIFT, S3Store, Store, test_servers
from .workers import celery_worker

DATABASE = "quay_geo_bench_replication"
SOURCE_ID, TARGET_ID = "bench_source", "bench_target"
#: Matches rclone's default ``--transfers 4``: both sides copy four objects at a time.
CONCURRENCY = 4
MiB = 1024 * 1024
FULL = ((200, 4 * MiB), (2, 256 * MiB))
QUICK = ((6, 256 * 1024), (1, 2 * MiB))
POLL_S = 0.1
#: Bounds: a side that copies slower than this is broken, not slow.
MIN_RATE = 2 * MiB
SLACK_S = 120.0
SIDES = ("quay-geo", "rclone")
PEER = "rclone 1.60"


@dataclass(frozen=True)
class Pair:
    name: str
    source: S3Store
    target: Store


PAIRS = (
    Pair("s3-s3-same", MOTO_A, MOTO_A),
    Pair("s3-s3-cross", MOTO_A, MOTO_B),
    Pair("s3-gcs", MOTO_A, GCS),
    Pair("s3-swift", MOTO_A, SWIFT),
    Pair("rgw-s3", RGW, MOTO_A),
)
QUICK_PAIRS = ("s3-s3-same", "s3-gcs")


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int

    @property
    def key(self) -> str:
        return content_key(f"sha256:{self.sha256}")


# The Django side runs in a subprocess with the case's environment: the bench process has no
# Django, and the database (whatever ``quay_env`` names) is reached the way quay-geo reaches it.
HELPER = r"""
import io, json, os, sys, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "quay_geo.settings")
import django
django.setup()
from django.core.management import call_command
from django.db.models import Count, Sum
from django.utils import timezone
from replication.models import Blob, Placement, PlacementState, StorageLocation

def seed(location_id):
    rows = json.load(sys.stdin)
    location = StorageLocation.objects.get(location_id=location_id)
    blobs = Blob.objects.bulk_create(
        [Blob(digest="sha256:" + h, size=size, sha256=h) for h, size in rows]
    )
    now = timezone.now()
    Placement.objects.bulk_create(
        [Placement(blob=b, location=location, state=PlacementState.PRESENT, verified_at=now)
         for b in blobs]
    )
    print(json.dumps({"blobs": len(blobs)}))

def replicate(location_id, expected, timeout):
    placements = Placement.objects.filter(location__location_id=location_id)
    started, started_at = time.perf_counter(), timezone.now()
    call_command("backfillreplication", stdout=io.StringIO())
    enqueue_s = time.perf_counter() - started
    while True:
        states = {r["state"]: r["n"] for r in placements.values("state").annotate(n=Count("pk"))}
        if states.get(PlacementState.PRESENT, 0) >= expected:
            break
        broken = list(placements.filter(state=PlacementState.FAILED, error_permanent=True)
                      .values_list("last_error", flat=True)[:3])
        late = time.perf_counter() - started > timeout
        if broken or late:
            errors = broken or list(placements.exclude(last_error="")
                                    .values_list("last_error", flat=True)[:3])
            sys.exit(f"{'permanent failure' if broken else f'over {timeout:g}s'}: "
                     f"states {states}, errors {errors}")
        time.sleep(float(sys.argv[5]))
    seconds = time.perf_counter() - started
    methods = {r["copy_method"]: r["n"]
               for r in placements.values("copy_method").annotate(n=Count("pk"))}
    attempts = placements.aggregate(n=Sum("attempts"))["n"]
    # When copies ended (from the start) and how long they took: utilisation of the workers.
    ends = sorted((at - started_at).total_seconds()
                  for at in placements.values_list("verified_at", flat=True))
    copy_s = placements.aggregate(s=Sum("copy_seconds"))["s"]
    print(json.dumps({"seconds": seconds, "enqueue_s": enqueue_s, "methods": methods,
                      "present": states.get(PlacementState.PRESENT, 0), "attempts": attempts,
                      "first_done_s": ends[0], "median_done_s": ends[len(ends) // 2],
                      "last_done_s": ends[-1], "copy_s_sum": copy_s}))

if sys.argv[1] == "seed":
    seed(sys.argv[2])
else:
    replicate(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
"""


def django_helper(env: dict[str, str], *args: str, stdin: str = "", timeout: float) -> Any:
    """Run one mode of ``HELPER`` with ``env``; return its JSON answer."""
    try:
        result = subprocess.run(
            [str(BIN / "python"), "-c", HELPER, *args],
            cwd=ROOT,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"django helper {args[0]}: over {timeout:g}s") from exc
    if result.returncode != 0:
        raise RuntimeError(f"django helper {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def workload(quick: bool) -> list[int]:
    """Return the blob sizes in insertion order: the big ones spread evenly among the small.

    Insertion order is the order of blob ids, which is the order in which ``backfillreplication``
    cuts placements into messages (by count and bytes): spreading the big blobs keeps them in
    different messages (so different worker processes), as pushes over time would.
    """
    (count, size), (big_count, big_size) = QUICK if quick else FULL
    sizes = [size] * count
    step = len(sizes) // (big_count + 1)
    for index in range(big_count, 0, -1):
        sizes.insert(index * step, big_size)
    return sizes


def source_fill(store: S3Store, bucket: str, sizes: list[int]) -> list[Blob]:
    """Write random blobs at their content keys (8 uploads at a time); return them in order."""
    client = store.client()

    def one(size: int) -> Blob:
        data = os.urandom(size)
        blob = Blob(hashlib.sha256(data).hexdigest(), size)
        client.upload_fileobj(io.BytesIO(data), bucket, blob.key)
        return blob

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, sizes))


def landed_check(store: Store, bucket: str, blobs: list[Blob], side: str) -> None:
    """Raise unless the target holds every blob at its key with its size (and no other blob)."""
    found = {k: v for k, v in store.objects(bucket).items() if k.startswith("sha256/")}
    expected = {blob.key: blob.size for blob in blobs}
    if found != expected:
        missing = sorted(set(expected) - set(found))
        wrong = sorted(k for k in expected if k in found and found[k] != expected[k])
        raise RuntimeError(
            f"{side}: {store.name}/{bucket} holds {len(found)} of {len(expected)} blobs "
            f"(missing {missing[:3]}, wrong size {wrong[:3]}, "
            f"extra {len(set(found) - set(expected))})"
        )


def deadline_of(blobs: list[Blob]) -> float:
    return SLACK_S + sum(blob.size for blob in blobs) / MIN_RATE


def quay_side(pair: Pair, source_bucket: str, blobs: list[Blob]) -> dict[str, float]:
    """Replicate ``blobs`` with quay-geo's worker into a fresh target bucket; time it."""
    env = quay_env(reset_database(DATABASE))
    target_bucket = pair.target.bucket_create("qg-dst")
    timeout = deadline_of(blobs)
    try:
        manage(env, "setreplication", "on")
        manage(env, "addlocation", SOURCE_ID, "--default", *pair.source.quay_options(source_bucket))
        rows = json.dumps([[blob.sha256, blob.size] for blob in blobs])
        django_helper(env, "seed", SOURCE_ID, stdin=rows, timeout=300)
        manage(env, "addlocation", TARGET_ID, "--default", *pair.target.quay_options(target_bucket))
        with (
            celery_worker(env, preference=TARGET_ID, concurrency=CONCURRENCY) as worker,
            PeakRss(worker.pid) as rss,
            _spy(worker.pid, pair.name),
        ):
            got = django_helper(
                env,
                "replicate",
                TARGET_ID,
                str(len(blobs)),
                str(timeout),
                str(POLL_S),
                timeout=timeout + 120,
            )
        landed_check(pair.target, target_bucket, blobs, "quay-geo")
    finally:
        pair.target.bucket_delete(target_bucket)
    total = sum(blob.size for blob in blobs)
    return {
        "seconds": got["seconds"],
        "bytes_per_s": total / got["seconds"],
        "rss_mb": rss.peak / 1e6,
        "server_side_share": got["methods"].get("server", 0) / len(blobs),
        "enqueue_s": got["enqueue_s"],
        "first_done_s": got["first_done_s"],
        "median_done_s": got["median_done_s"],
        "last_done_s": got["last_done_s"],
        # Time spent copying, summed over placements: divided by the time and the worker's
        # concurrency, how busy its processes were.
        "copy_s_sum": got["copy_s_sum"],
        # Copy attempts beyond the first, over every placement (transient failures retried).
        "retries": float(got["attempts"] - len(blobs)),
    }


@contextmanager
def _spy(pid: int, name: str) -> Iterator[None]:
    """With ``QUAY_GEO_BENCH_SPY=PREFIX``, record the worker tree with py-spy into
    ``PREFIX-<pair>.txt`` (diagnosis only: sampling costs the worker some CPU)."""
    prefix = os.environ.get("QUAY_GEO_BENCH_SPY")
    if not prefix:
        yield
        return
    args = ["record", "--pid", str(pid), "--subprocesses", "--rate", "100", "--format", "raw"]
    spy = subprocess.Popen([str(BIN / "py-spy"), *args, "-o", f"{prefix}-{name}.txt"])
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def rclone_env(pair: Pair) -> tuple[dict[str, str], str]:
    """Return rclone's environment and the remote name of the target."""
    env = base_env()  # without AWS_CA_BUNDLE: rclone's s3 backend refuses it on plain HTTP
    env.update(pair.source.rclone_env("src"))
    if pair.target == pair.source:
        return env, "src"
    env.update(pair.target.rclone_env("dst"))
    return env, "dst"


def rclone_side(pair: Pair, source_bucket: str, blobs: list[Blob], run: int) -> dict[str, float]:
    """``rclone copy`` the source bucket into a fresh target bucket; time it."""
    env, remote = rclone_env(pair)
    target_bucket = pair.target.bucket_create("rc-dst")
    log = STATE / "logs" / f"rclone-{pair.name}-{run}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    timeout = deadline_of(blobs)
    args = ["rclone", "--config", "", "copy", "-v"]
    args += [f"src:{source_bucket}", f"{remote}:{target_bucket}"]
    try:
        with log.open("wb") as out:
            started = time.perf_counter()
            process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
            with PeakRss(process.pid) as rss:
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=30)
                    raise TimeoutError(
                        f"rclone {pair.name}: over {timeout:g}s; see {log}"
                    ) from None
            seconds = time.perf_counter() - started
        text = log.read_text(errors="replace")
        if process.returncode != 0:
            raise RuntimeError(f"rclone {pair.name} failed ({process.returncode}):\n{text[-3000:]}")
        landed_check(pair.target, target_bucket, blobs, "rclone")
    finally:
        pair.target.bucket_delete(target_bucket)
    total = sum(blob.size for blob in blobs)
    return {
        "seconds": seconds,
        "bytes_per_s": total / seconds,
        "rss_mb": rss.peak / 1e6,
        "server_side_share": text.count("Copied (server-side copy)") / len(blobs),
        # "Attempt 1/3 failed ..." then "Attempt 2/3 succeeded": rclone ran the whole copy again.
        "retries": float(sum(1 for line in text.splitlines() if "/3 failed with" in line)),
    }


def one_run(pair: Pair, run: int, runs: int, quick: bool) -> dict[str, dict[str, float]]:
    """Fill a fresh source bucket, run both sides (order alternating by run); return metrics."""
    source_bucket = pair.source.bucket_create("src")
    out: dict[str, dict[str, float]] = {}
    try:
        blobs = source_fill(pair.source, source_bucket, workload(quick))
        order = SIDES if run % 2 == 0 else SIDES[::-1]
        for side in order:
            got = (
                quay_side(pair, source_bucket, blobs)
                if side == "quay-geo"
                else rclone_side(pair, source_bucket, blobs, run)
            )
            out[side] = got
            print(
                f"  {pair.name} run {run + 1}/{runs} {side}: "
                + ", ".join(f"{k}={v:.3g}" for k, v in got.items()),
                flush=True,
            )
    finally:
        pair.source.bucket_delete(source_bucket)
    return out


def rclone_version() -> str:
    result = subprocess.run(["rclone", "version"], capture_output=True, text=True, timeout=30)
    return result.stdout.splitlines()[0] if result.returncode == 0 else "rclone not found"


def tables(result: dict[str, Any]) -> str:
    """Render one Markdown table per pair."""
    parts = []
    for pair, sides in result["summary"].items():
        ours, theirs = sides["quay-geo"], sides["rclone"]
        mib = {
            name: {k: v / MiB if k != "n" else v for k, v in stats["bytes_per_s"].items()}
            for name, stats in sides.items()
        }
        rows = [(m, PEER, ours[m], theirs[m]) for m in ("seconds", "rss_mb", "server_side_share")]
        rows.insert(1, ("MiB_per_s", PEER, mib["quay-geo"], mib["rclone"]))
        parts.append(
            f"### {pair}\n\n{compare_table(rows, '')}\n\nretries (median): quay-geo "
            f"{ours['retries']['median']:g} copy attempts beyond the first, rclone "
            f"{theirs['retries']['median']:g} whole-copy attempts beyond the first\n\n"
            f"{timeline(ours)}"
        )
    return "\n\n".join(parts)


def timeline(ours: dict[str, Any]) -> str:
    """Say when quay-geo's copies ended and how busy its worker processes were (medians)."""
    med = {k: v["median"] for k, v in ours.items()}
    busy = med["copy_s_sum"] / (med["seconds"] * CONCURRENCY)
    return (
        f"quay-geo (medians): backfillreplication returned after {med['enqueue_s']:.2f} s; "
        f"first copy present at {med['first_done_s']:.2f} s, half at "
        f"{med['median_done_s']:.1f} s, last at {med['last_done_s']:.1f} s; the {CONCURRENCY} "
        f"worker processes spent {busy:.0%} of the time copying"
    )


def run(*, quick: bool, runs: int) -> dict[str, Any]:
    """Run the case; return and save its results."""
    pairs = [pair for pair in PAIRS if not quick or pair.name in QUICK_PAIRS]
    only = os.environ.get("QUAY_GEO_BENCH_PAIRS")  # diagnosis: e.g. "s3-s3-same,s3-gcs"
    if only:
        pairs = [pair for pair in pairs if pair.name in only.split(",")]
    servers = list(dict.fromkeys(s.server for pair in pairs for s in (pair.source, pair.target)))
    samples: dict[str, dict[str, dict[str, list[float]]]] = {}
    with test_servers(*servers):
        for pair in pairs:
            per_side = samples.setdefault(pair.name, {side: {} for side in SIDES})
            for index in range(runs):
                for side, got in one_run(pair, index, runs, quick).items():
                    for key, value in got.items():
                        per_side[side].setdefault(key, []).append(value)
    sizes = workload(quick)
    result: dict[str, Any] = {
        "params": {
            "blobs": len(sizes),
            "blob_sizes": {str(size): sizes.count(size) for size in sorted(set(sizes))},
            "total_bytes": sum(sizes),
            "pairs": {p.name: f"{p.source.name} -> {p.target.name}" for p in pairs},
            "runs": runs,
            "quick": quick,
            "peer": PEER,
            "rclone_version": rclone_version(),
            "rclone_command": "rclone --config '' copy -v src:<bucket> <src|dst>:<bucket> "
            "(default settings; one remote for both buckets on one endpoint)",
            "concurrency": CONCURRENCY,
            "concurrency_why": "celery prefork --concurrency 4 = rclone's default --transfers 4",
            "quay_enqueue": "manage.py backfillreplication (call_command; batched replicate_batch "
            "messages as replication/services.py cuts them), timed from its start until every "
            "target placement is "
            f"present (database polled every {POLL_S:g}s)",
            "quay_verify": "QUAY_GEO_REPLICATION_VERIFY="
            + (os.environ.get("QUAY_GEO_REPLICATION_VERIFY") or "stream (the default)"),
            "order": "A B / B A across runs, A = quay-geo on even runs",
            "retries": "quay-geo: placement copy attempts beyond the first (transient failures); "
            "rclone: whole-copy attempts beyond the first ('Attempt 1/3 failed')",
        },
        "samples": samples,
        "summary": {
            pair: {side: {k: summary(v) for k, v in metrics.items()} for side, metrics in s.items()}
            for pair, s in samples.items()
        },
    }
    result["ratio_seconds"] = {
        pair: s["quay-geo"]["seconds"]["median"] / s["rclone"]["seconds"]["median"]
        for pair, s in result["summary"].items()
    }
    path = save("replication", result)
    print(tables(result))
    print(f"results: {path}")
    return result
