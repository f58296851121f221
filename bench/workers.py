"""Celery workers for the benchmarks, started the way an operator starts them."""

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .procs import BIN, STATE, spawn, stop


@dataclass
class Worker:
    name: str
    pid: int


@contextmanager
def celery_worker(
    env: dict[str, str],
    *,
    preference: str,
    concurrency: int = 4,
    pool: str = "prefork",
    queues: str = "",
    timeout: float = 60,
) -> Iterator[Worker]:
    """Run one ``celery -A quay_geo worker`` until the block ends; yield it once it is ready.

    ``pool``/``concurrency`` as on the command line (``scripts/run.sh`` runs the default prefork
    pool); ``queues`` empty means every queue, as a worker started without ``-Q``.
    """
    name = f"bench-{uuid.uuid4().hex[:8]}@127.0.0.1"
    args = [
        str(BIN / "celery"),
        "-A",
        "quay_geo",
        "worker",
        "--loglevel",
        "WARNING",
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--hostname",
        name,
        "--without-gossip",
        "--without-mingle",
    ]
    if queues:
        args += ["--queues", queues]
    log = STATE / "logs" / f"worker-{name.split('@')[0]}.log"
    process = spawn(args, log, dict(env, QUAY_DISTRIBUTED_STORAGE_PREFERENCE=preference))
    try:
        _wait_ready(env, name, process.pid, timeout)
        yield Worker(name, process.pid)
    finally:
        stop(process, timeout=30)


def _wait_ready(env: dict[str, str], name: str, pid: int, timeout: float) -> None:
    """Wait until the worker answers a ping over the broker."""
    from celery import Celery

    app = Celery(broker=env["CELERY_BROKER_URL"])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if app.control.ping(destination=[name], timeout=1.0):
                return
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                raise RuntimeError(f"celery worker {name} exited; see {STATE / 'logs'}") from None
        raise TimeoutError(f"celery worker {name} not ready within {timeout:g}s")
    finally:
        app.close()
