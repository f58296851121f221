"""Case 3: replication lag under push load (report only, no budget, no peer).

Two regions on two moto servers: ``us_s3`` and ``eu_s3``, both replicated by default. Region
us's web process (gunicorn as ``scripts/run.sh`` runs it, preference ``us_s3``) takes the
pushes; region eu's Celery worker copies every blob into ``eu_s3``. The worker is the one
``docker-compose.yml`` runs as ``worker-eu``: prefork, concurrency 4, ``-Q replicate.eu_s3,
replicate.priority,celery``, preference ``eu_s3`` (an operator runs the copies into a region from
that region). No beat: no placement is lost, so the reconciler has nothing to do here.

Load: ``PUSHERS`` threads push for ``SECONDS``, each image new: one random layer, a config that
names it, a manifest; one repository per pusher and one tag per image, over the registry API
with requests (each blob one monolithic ``POST ?digest=``, what ``crane`` and ``oras`` send for
small blobs). A pusher starts no image after the deadline and finishes the one it is pushing.

Lag of a blob: the time its ``eu_s3`` placement became present (``Placement.verified_at``, after
the copy and its verification) minus its commit (``Blob.created_at``). Read from the
database after the load, once every placement is present (bounded wait).
"""

import json
import os
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from .geo import (
    MiB,
    ProcessPeaks,
    Registry,
    broker_purge,
    geo_setup,
    percentile,
    placement_states,
    placements_of,
    wait_all_present,
)
from .report import save, summary
from .servers import moto, quay, quay_env, reset_database
from .workers import celery_worker

DATABASE = "quay_geo_bench_lag"
US, EU = "us_s3", "eu_s3"
WORKER_QUEUES = f"replicate.{EU},replicate.priority,celery"
WORKER_CONCURRENCY = 4
ALL_QUEUES = [f"replicate.{US}", f"replicate.{EU}", "replicate.priority", "celery"]


@dataclass
class Load:
    """What the pushers did: one (start, end) per image pushed, the errors met."""

    pushes: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def image_push(registry: Registry, tag: str, layer_bytes: int) -> None:
    """Push one new image: a random layer, a config naming it, a manifest tagged ``tag``."""
    layer = os.urandom(layer_bytes)
    layer_digest = registry.blob_post(layer)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "config": {"Labels": {"bench.repo": registry.repo, "bench.tag": tag}},
        }
    ).encode()
    registry.blob_post(config)
    registry.manifest_put(tag, config, [(layer_digest, len(layer))])


def pusher(url: str, creds: str, repo: str, layer_bytes: int, deadline: float, load: Load) -> None:
    """Push images into ``repo`` until ``deadline``; a failed push is recorded, then the next."""
    try:
        registry = Registry(url, repo, creds)
    except Exception as exc:  # noqa: BLE001 - recorded and reported, the case fails on it
        with load.lock:
            load.errors.append(f"{repo}: token: {exc}")
        return
    number = 0
    try:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                image_push(registry, f"p{number}", layer_bytes)
            except Exception as exc:  # noqa: BLE001 - one failed push must not end the load
                with load.lock:
                    load.errors.append(f"{repo}:p{number}: {str(exc)[:300]}")
                time.sleep(0.5)  # a registry that refuses everything must not be hammered
            else:
                with load.lock:
                    load.pushes.append((started, time.monotonic()))
            number += 1
    finally:
        registry.close()


def load_run(url: str, creds: str, pushers: int, layer_bytes: int, seconds: float) -> Load:
    """Run ``pushers`` threads for ``seconds``; wait (bounded) for their last images."""
    load = Load()
    deadline = time.monotonic() + seconds
    run_id = uuid.uuid4().hex[:6]
    threads = [
        threading.Thread(
            target=pusher,
            args=(url, creds, f"bench/lag-{run_id}-{index}", layer_bytes, deadline, load),
            daemon=True,
        )
        for index in range(pushers)
    ]
    for thread in threads:
        thread.start()
    give_up = deadline + 600  # one bound for all: a push in flight at the deadline may finish
    for thread in threads:
        thread.join(timeout=max(0.0, give_up - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError("a pusher was still pushing 600 s after the end of the load")
    return load


def lags_of(rows: list[dict[str, Any]], origin: float) -> list[tuple[float, int, float]]:
    """Return (lag in seconds, blob size, commit time after ``origin``) of every present blob.

    The commit times say whether the lag grew during the load (the worker falling behind) or
    stayed flat.
    """
    return [
        (row["verified"] - row["created"], int(row["size"]), row["created"] - origin)
        for row in sorted(rows, key=lambda r: r["created"])
        if row["verified"]
    ]


def backlog_at(rows: list[dict[str, Any]], when: float) -> int:
    """Return how many blobs were committed but not yet present in the target at ``when``.

    Computed from the timestamps after the fact (same clock: every process runs here), so the
    figure is exact at the end of the load, not a second later when a query could run.
    """
    return sum(1 for row in rows if row["created"] <= when < (row["verified"] or float("inf")))


def backlog_peak(rows: list[dict[str, Any]]) -> int:
    """Return the largest backlog (committed, not yet present) at any instant."""
    events = sorted(
        [(row["created"], 1) for row in rows]
        + [(row["verified"] or float("inf"), -1) for row in rows]
    )
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def one_run(pushers: int, layer_bytes: int, seconds: float, drain_timeout: float) -> dict[str, Any]:
    """Start both stores, the us web process and the eu worker; load, drain, read the lags."""
    with ExitStack() as stack:
        us, eu = stack.enter_context(moto()), stack.enter_context(moto())
        env = quay_env(reset_database(DATABASE))
        token = geo_setup(env, {US: (us, "redirect"), EU: (eu, "redirect")})
        broker_purge(env, ALL_QUEUES)
        worker = stack.enter_context(
            celery_worker(env, preference=EU, concurrency=WORKER_CONCURRENCY, queues=WORKER_QUEUES)
        )
        server = stack.enter_context(quay(env, token, preference=US))
        with ProcessPeaks((server.pid,)) as web, ProcessPeaks((worker.pid,)) as copier:
            origin = time.time()
            started = time.monotonic()
            load = load_run(server.url, server.creds, pushers, layer_bytes, seconds)
            load_s = time.monotonic() - started
            ended = time.time()
            states = placement_states(env, EU)
            print(
                f"  load: {len(load.pushes)} images in {load_s:.1f}s, {len(load.errors)} errors; "
                f"{EU} placements {time.time() - ended:.1f}s after it: {states}",
                flush=True,
            )
            if not load.pushes:
                raise RuntimeError(f"no push completed: {load.errors[:5]}")
            wait_all_present(env, EU, timeout=drain_timeout)
        rows = placements_of(env, EU)
    lags = lags_of(rows, origin)
    layer_lags = [lag for lag, size, _ in lags if size == layer_bytes]
    every = [lag for lag, _, _ in lags]
    durations = [end - start for start, end in load.pushes]
    pushed_bytes = len(load.pushes) * layer_bytes
    return {
        "states_after_load": states,
        "lags": every,
        "sizes": [size for _, size, _ in lags],
        "commits": [commit for _, _, commit in lags],
        "errors": load.errors[:20],
        "samples": {
            "lag_p50_s": percentile(every, 50),
            "lag_p99_s": percentile(every, 99),
            "lag_max_s": max(every),
            "layer_lag_p50_s": percentile(layer_lags, 50),
            "layer_lag_p99_s": percentile(layer_lags, 99),
            "pushes": float(len(load.pushes)),
            "push_errors": float(len(load.errors)),
            "push_images_per_s": len(load.pushes) / load_s,
            "push_mib_per_s": pushed_bytes / MiB / load_s,
            "push_image_p50_s": percentile(durations, 50),
            # Not yet present (pending or copying) when the last image was pushed.
            "pending_at_end": float(backlog_at(rows, ended)),
            "backlog_peak": float(backlog_peak(rows)),
            # From the end of the load to the last placement verified.
            "drain_s": max(0.0, max(row["verified"] for row in rows) - ended),
            "blobs": float(len(every)),
            "web_rss_mb": web.total / 1e6,
            "web_rss_one_mb": web.largest(children_only=True)[1] / 1e6,
            "worker_rss_mb": copier.total / 1e6,
            "worker_rss_one_mb": copier.largest(children_only=True)[1] / 1e6,
        },
    }


def run(*, quick: bool, runs: int) -> dict[str, Any]:
    """Run the case ``runs`` times; return and save the results."""
    pushers, layer_mib, seconds = (3, 1, 5.0) if quick else (20, 10, 60.0)
    drain_timeout = 300.0 if quick else 1800.0
    samples: dict[str, list[float]] = {}
    lags: list[float] = []
    sizes: list[int] = []
    commits: list[float] = []
    errors: list[str] = []
    for index in range(runs):
        got = one_run(pushers, layer_mib * MiB, seconds, drain_timeout)
        lags += got["lags"]
        sizes += got["sizes"]
        commits += got["commits"]
        errors += got["errors"]
        for key, value in got["samples"].items():
            samples.setdefault(key, []).append(value)
        s = got["samples"]
        print(
            f"  run {index + 1}/{runs}: {s['pushes']:.0f} images ({s['push_images_per_s']:.2f}/s, "
            f"{s['push_mib_per_s']:.1f} MiB/s), lag p50 {s['lag_p50_s']:.2f}s p99 "
            f"{s['lag_p99_s']:.2f}s max {s['lag_max_s']:.2f}s over {s['blobs']:.0f} blobs; "
            f"{s['pending_at_end']:.0f} not present at the end of the load "
            f"(peak backlog {s['backlog_peak']:.0f}), drained in {s['drain_s']:.1f}s; "
            f"RSS web {s['web_rss_mb']:.0f} MB (one {s['web_rss_one_mb']:.0f}), "
            f"worker {s['worker_rss_mb']:.0f} MB (one {s['worker_rss_one_mb']:.0f})",
            flush=True,
        )
    result = {
        "params": {
            "pushers": pushers,
            "layer_bytes": layer_mib * MiB,
            "seconds": seconds,
            "runs": runs,
            "quick": quick,
            "web": f"gunicorn 2 workers gthread 8 threads, preference {US}",
            "worker": (
                f"celery prefork concurrency {WORKER_CONCURRENCY}, preference {EU}, "
                f"-Q {WORKER_QUEUES} (docker-compose.yml worker-eu)"
            ),
            "stores": "two moto servers (us_s3, eu_s3), redirect mode; copies are streamed",
            "push": "requests, one POST ?digest= per blob, manifest PUT; one repo per pusher",
            "lag": "Placement(eu_s3).verified_at - Blob.created_at, every blob (layers, configs)",
            "errors": errors[:20],
        },
        "samples": samples,
        "summary": {key: summary(values) for key, values in samples.items()},
        "lags_s": lags,
        # Parallel to lags_s: each blob's size, and its commit in seconds after its run's start.
        "lag_blob_bytes": sizes,
        "lag_commit_s": commits,
    }
    path = save("lag", result)
    print(f"results: {path}")
    return result
