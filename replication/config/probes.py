"""Live probes of storage engines: write, read back and delete a small object, in parallel."""

import concurrent.futures
from typing import Any

from storage_engines.errors import (
    AccessDenied,
    ContainerNotFound,
    InvalidOptions,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from storage_engines.registry import engine_create

PROBE_TIMEOUT = 5.0


def probe_message(exc: BaseException, *, kind: str, timeout: float = PROBE_TIMEOUT) -> str:
    """Return what an operator reads about a failed probe, by error class."""
    container = {"swift": "Container", "local": "Directory"}.get(kind, "Bucket")
    if isinstance(exc, AccessDenied):
        head = "Access denied"
    elif isinstance(exc, ContainerNotFound):
        head = f"{container} not found"
    elif isinstance(exc, StorageUnavailable):
        head = f"Cannot connect within {timeout:g} s"
    elif isinstance(exc, StorageMisconfigured | InvalidOptions):
        head = "Misconfigured"
    else:
        head = "Probe failed"
    return f"{head}: {exc}"


def probe_engine(
    *, kind: str, location_id: str, options: dict[str, Any], timeout: float
) -> str | None:
    """Build an engine and write, read back and delete a small object; return the error, or None."""
    try:
        engine_create(kind=kind, location_id=location_id, options=options).probe(timeout=timeout)
    except StorageError as exc:
        return probe_message(exc, kind=kind, timeout=timeout)
    return None


def probes_run(
    jobs: dict[Any, tuple[str, str, dict[str, Any]]], *, timeout: float
) -> dict[Any, str | None]:
    """Probe every (kind, location ID, options) job in parallel; return each one's error."""
    if not jobs:
        return {}
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=min(16, len(jobs)), thread_name_prefix="probe"
    )
    futures = {
        key: pool.submit(probe_engine, kind=kind, location_id=lid, options=opts, timeout=timeout)
        for key, (kind, lid, opts) in jobs.items()
    }
    # Building a client may itself block (DNS, credential lookups): bound the whole batch.
    concurrent.futures.wait(futures.values(), timeout=timeout + 2)
    pool.shutdown(wait=False, cancel_futures=True)
    results: dict[Any, str | None] = {}
    for key, future in futures.items():
        if future.done():
            results[key] = future.result()
        else:
            results[key] = probe_message(
                StorageUnavailable(f"no answer from {jobs[key][1]}"),
                kind=jobs[key][0],
                timeout=timeout,
            )
    return results
