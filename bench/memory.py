"""Case 5: peak RSS of one web process and one Celery worker under a 2 GiB blob (no peer).

Three phases on one gunicorn (region us, preference ``us_s3``, both locations in proxy mode so
the registry streams every byte itself) and one Celery worker (region eu, preference ``eu_s3``):

1. push the blob as ``POST`` + one ``PUT ?digest=`` carrying every byte (monolithic);
2. push the same bytes again into another repository as ``POST`` + ``PATCH`` chunks with
   ``Content-Range`` + an empty ``PUT`` (the OCI chunked upload). The registry streams every
   chunk into a new multipart session exactly as in phase 1 and, the blob being present already,
   aborts the session at commit instead of completing it: the web process handles the same bytes;
   only moto's final server-side copy is skipped;
3. pull it in proxy mode (``GET`` answered 200 by the registry, streamed from ``us_s3``);
4. replicate it from ``us_s3`` to ``eu_s3`` (two moto servers: different endpoints, so the copy
   is streamed through the worker, not server-side; ``Placement.copy_method`` is checked). The
   worker starts idle (queue ``celery`` only) and is handed ``replicate.eu_s3`` once its sampler
   runs, so the whole copy and its verification are sampled.

Why requests and not skopeo: skopeo is not installed on every machine of this project, and a
client we write streams a file we generated chunk by chunk. The blob is written to a file under
the bench state directory one MiB at a time (``scripts/demo_image.py`` holds a layer in memory
about three times over) and every upload reads it back in small blocks: the benchmark never holds
the blob either (its own max RSS is reported).
"""

import os
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .geo import (
    MiB,
    ProcessPeaks,
    Registry,
    broker_purge,
    consume,
    geo_setup,
    placements_of,
    random_file,
    wait_all_present,
)
from .procs import STATE
from .report import save, summary
from .servers import moto, quay, quay_env, reset_database
from .workers import celery_worker

DATABASE = "quay_geo_bench_memory"
BUDGET_MB = 200.0
US, EU = "us_s3", "eu_s3"
QUEUES = [f"replicate.{US}", f"replicate.{EU}", "replicate.priority", "celery"]


def _phase(peaks: ProcessPeaks, seconds: float, size: int) -> dict[str, Any]:
    """Return the figures of one phase: largest child, tree total, time, rate, every process."""
    pid, one = peaks.largest(children_only=True)
    return {
        "one_mb": one / 1e6,
        "one_start_mb": peaks.first.get(pid, 0) / 1e6,
        "total_mb": peaks.total / 1e6,
        "seconds": seconds,
        "mb_per_s": size / 1e6 / seconds if seconds else 0.0,
        "processes": peaks.by_process(),
    }


def _web_phases(
    server_url: str, creds: str, pid: int, blob: Path, digest: str, chunk: int
) -> dict[str, Any]:
    """Push twice (monolithic, chunked) and pull once; sample the gunicorn tree in each phase."""
    size = blob.stat().st_size
    phases: dict[str, Any] = {}
    first = Registry(server_url, f"bench/mem-{uuid.uuid4().hex[:8]}", creds)
    second = Registry(server_url, f"bench/mem-{uuid.uuid4().hex[:8]}", creds)
    try:
        with ProcessPeaks((pid,)) as peaks:
            started = time.perf_counter()
            first.blob_put_file(blob, digest)
            phases["push_put"] = _phase(peaks, time.perf_counter() - started, size)
        with ProcessPeaks((pid,)) as peaks:
            started = time.perf_counter()
            patches = second.blob_patch_file(blob, digest, chunk)
            phases["push_chunked"] = _phase(peaks, time.perf_counter() - started, size)
            phases["push_chunked"]["patches"] = patches
        with ProcessPeaks((pid,)) as peaks:
            started = time.perf_counter()
            got, got_digest, status = first.blob_get(digest)
            phases["pull_proxy"] = _phase(peaks, time.perf_counter() - started, size)
        if (got, got_digest, status) != (size, digest, 200):
            raise RuntimeError(
                f"proxy pull returned {got} bytes {got_digest} with HTTP {status}; "
                f"expected {size} bytes {digest} with 200 (streamed by the registry)"
            )
    finally:
        first.close()
        second.close()
    return phases


def _replicate_phase(
    env: dict[str, str], worker: str, pid: int, size: int, timeout: float
) -> dict[str, Any]:
    """Hand the idle worker its queue, sample its tree until the copy is present and verified."""
    with ProcessPeaks((pid,)) as peaks:
        started = time.perf_counter()
        consume(env, worker, f"replicate.{EU}")
        wait_all_present(env, EU, timeout=timeout, interval=1.0)
        phase = _phase(peaks, time.perf_counter() - started, size)
    rows = placements_of(env, EU)
    if len(rows) != 1 or rows[0]["copy_method"] != "stream":
        raise RuntimeError(f"expected one streamed copy into {EU}, found {rows}")
    phase.update(
        copy_method=rows[0]["copy_method"],
        copy_seconds=rows[0]["copy_seconds"],
        attempts=rows[0]["attempts"],
    )
    return phase


def one_run(size: int, chunk: int, timeout: float) -> dict[str, Any]:
    """Start two moto servers, quay-geo (us) and a worker (eu); run the four phases."""
    with ExitStack() as stack:
        us, eu = stack.enter_context(moto()), stack.enter_context(moto())
        env = quay_env(reset_database(DATABASE))
        token = geo_setup(env, {US: (us, "proxy"), EU: (eu, "proxy")})
        broker_purge(env, QUEUES)
        blob = STATE / "memory-blob.bin"
        stack.callback(blob.unlink, missing_ok=True)
        started = time.perf_counter()
        digest = random_file(blob, size)
        print(f"  wrote {size / MiB:.0f} MiB to {blob} in {time.perf_counter() - started:.1f}s")
        stores = stack.enter_context(ProcessPeaks((us.pid, eu.pid)))
        # Region eu's worker, as docker-compose.yml runs it, but consuming nothing but
        # ``celery`` until its sampler runs; concurrency 1 so one pool child does the copy.
        worker = stack.enter_context(
            celery_worker(env, preference=EU, concurrency=1, queues="celery")
        )
        server = stack.enter_context(quay(env, token, preference=US))
        out = _web_phases(server.url, server.creds, server.pid, blob, digest, chunk)
        for name, phase in out.items():
            print(
                f"  {name}: {phase['seconds']:.1f}s, largest gunicorn worker "
                f"{phase['one_mb']:.0f} MB (from {phase['one_start_mb']:.0f}), "
                f"tree {phase['total_mb']:.0f} MB",
                flush=True,
            )
        out["replicate"] = _replicate_phase(env, worker.name, worker.pid, size, timeout)
        replicated = out["replicate"]
        print(
            f"  replicate: {replicated['seconds']:.1f}s ({replicated['copy_method']}), "
            f"pool child {replicated['one_mb']:.0f} MB (from {replicated['one_start_mb']:.0f}), "
            f"worker tree {replicated['total_mb']:.0f} MB",
            flush=True,
        )
        out["moto_total_mb"] = stores.total / 1e6
    return out


def run(*, quick: bool, runs: int) -> dict[str, Any]:
    """Run the case ``runs`` times; return and save the results with the budget verdicts."""
    size = 64 * MiB if quick else 2048 * MiB
    chunk = 16 * MiB if quick else 64 * MiB
    timeout = 300.0 if quick else 3600.0
    samples: dict[str, list[float]] = {}
    details: list[dict[str, Any]] = []
    # The benchmark's own process alone: it must not hold the blob either.
    with ProcessPeaks((os.getpid(),), children=False) as client:
        for index in range(runs):
            got = one_run(size, chunk, timeout)
            details.append(got)
            for phase in ("push_put", "push_chunked", "pull_proxy", "replicate"):
                for key in ("one_mb", "total_mb", "seconds"):
                    samples.setdefault(f"{phase}_{key}", []).append(got[phase][key])
            samples.setdefault("moto_total_mb", []).append(got["moto_total_mb"])
            print(f"  run {index + 1}/{runs} done", flush=True)
    client_mb = client.total / 1e6
    verdicts = {
        phase: {
            "largest_process_mb": max(samples[f"{phase}_one_mb"]),
            "met": max(samples[f"{phase}_one_mb"]) < BUDGET_MB,
        }
        for phase in ("push_put", "push_chunked", "pull_proxy", "replicate")
    }
    result = {
        "params": {
            "blob_bytes": size,
            "chunk_bytes": chunk,
            "runs": runs,
            "quick": quick,
            "budget_mb_per_process": BUDGET_MB,
            "web": f"gunicorn 2 workers gthread 8 threads, preference {US}, serve mode proxy",
            "worker": f"celery prefork concurrency 1, preference {EU}",
            "stores": "two moto servers (us_s3, eu_s3): a streamed copy",
            "client": "requests; PUT body from the file, PATCH bodies from a generator",
            "bench_client_peak_rss_mb": client_mb,
            "bench_client_start_rss_mb": client.first.get(os.getpid(), 0) / 1e6,
            "verdicts": verdicts,
        },
        "samples": samples,
        "summary": {key: summary(values) for key, values in samples.items()},
        "runs_detail": details,
    }
    path = save("memory", result)
    print(f"  budget {BUDGET_MB:.0f} MB per process (largest single process of each phase):")
    for phase, verdict in verdicts.items():
        word = "met" if verdict["met"] else "MISSED"
        print(f"    {phase}: {verdict['largest_process_mb']:.0f} MB, {word}")
    print(f"  benchmark client (this process) peak RSS {client_mb:.0f} MB")
    print(f"results: {path}")
    return result
