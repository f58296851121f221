"""Where the memory of a streamed copy goes (case 5's replication phase), with tracemalloc.

``python -m bench.memory_probe [--mib N] OUT.txt``

Case 5 measures the Celery pool child from outside (RSS); tracemalloc cannot be switched on
inside it without changing product code. This probe runs the same calls in a process of its own:
the product's ``StorageEngine.copy_to`` from one moto server to another (different endpoints:
a streamed copy, as ``replication/copying.py:copy_verified`` does first), then the read-back
that ``copy_verified`` does (``target.read`` hashed chunk by chunk). For each phase it reports
the RSS growth, tracemalloc's peak of Python allocations, and the allocation sites held at the
moment closest to that peak (a snapshot is kept whenever the traced total reaches a new high).
"""

import argparse
import hashlib
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .geo import MiB, random_file
from .procs import STATE
from .servers import S3_KEY, moto

FRAMES = 30


@dataclass
class PeakSnapshot:
    """Keep the tracemalloc snapshot taken at the highest traced total seen (sampled)."""

    interval: float = 0.1
    trace: bool = True
    best: int = 0
    snapshot: tracemalloc.Snapshot | None = None
    rss_peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.interval):
            self.rss_peak = max(self.rss_peak, me.memory_info().rss)
            if not self.trace:
                continue
            current, _ = tracemalloc.get_traced_memory()
            if current > self.best:
                self.best = current
                self.snapshot = tracemalloc.take_snapshot()


@contextmanager
def traced(report: list[str], title: str, trace: bool) -> Iterator[None]:
    """Trace allocations during the block; append RSS, peaks and top sites to ``report``.

    Without ``trace`` only the RSS is sampled: tracemalloc's own bookkeeping adds to the RSS.
    """
    rss_before = psutil.Process().memory_info().rss
    if trace:
        tracemalloc.start(FRAMES)
        tracemalloc.reset_peak()
    sampler = PeakSnapshot(rss_peak=rss_before, trace=trace)
    thread = threading.Thread(target=sampler._run, daemon=True)
    thread.start()
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        sampler._stop.set()
        thread.join(timeout=10)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        report.append(
            f"== {title}: {seconds:.1f}s; RSS {rss_before / 1e6:.0f} -> peak "
            f"{sampler.rss_peak / 1e6:.0f} MB (+{(sampler.rss_peak - rss_before) / 1e6:.0f})"
            + (
                f"; tracemalloc peak {peak / 1e6:.1f} MB, "
                f"largest sampled {sampler.best / 1e6:.1f} MB"
                if trace
                else " (tracemalloc off)"
            )
        )
        if sampler.snapshot is not None:
            report.extend(_top(sampler.snapshot))


def _top(snapshot: tracemalloc.Snapshot) -> list[str]:
    """Return the top allocation lines, then the call chains of the three largest."""
    snapshot = snapshot.filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<unknown>")]
    )
    lines = ["-- held at the sampled peak, by line:"]
    for stat in snapshot.statistics("lineno")[:15]:
        frame = stat.traceback[0]
        lines.append(
            f"{stat.size / 1e6:8.1f} MB {stat.count:6d} blocks  {frame.filename}:{frame.lineno}"
        )
    lines.append("-- the three largest, by call chain (innermost last):")
    for stat in snapshot.statistics("traceback")[:3]:
        lines.append(f"{stat.size / 1e6:8.1f} MB {stat.count} blocks")
        chain = stat.traceback.format(most_recent_first=False)[-2 * 14 :]
        lines.extend(f"      {text}" for text in chain)
    return lines


def s3_engine(location_id: str, url: str, bucket: str) -> Any:
    """Return the product's S3 engine for a bucket of a moto server, as a location builds it."""
    from storage_engines.s3 import S3Engine

    options = {
        "s3_bucket": bucket,
        "endpoint_url": url,
        "s3_access_key": S3_KEY,
        "s3_secret_key": S3_KEY,
        "addressing_style": "path",
    }
    return S3Engine(location_id=location_id, options=options)


def readback(target: Any, key: str) -> str:
    """Hash what the target holds, as ``copy_verified`` does after the copy."""
    digest = hashlib.sha256()
    with target.read(key) as stream:
        for chunk in stream:
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _rss() -> float:
    return psutil.Process().memory_info().rss / 1e6


def seed(url: str, bucket: str, key: str, path: Path) -> None:
    """Upload the blob from another process, so seeding leaves nothing in this one's heap."""
    code = (
        "import sys, boto3\n"
        "from botocore.config import Config\n"
        "c = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1',\n"
        f"    aws_access_key_id='{S3_KEY}', aws_secret_access_key='{S3_KEY}',\n"
        "    config=Config(s3={'addressing_style': 'path'}))\n"
        "c.upload_file(sys.argv[4], sys.argv[2], sys.argv[3])\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, url, bucket, key, str(path)], check=True, timeout=1800
    )


def probe(size: int, trace: bool) -> list[str]:
    """Seed a blob of ``size`` bytes in one moto, copy it to the other, sampling memory."""
    malloc = {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    report = [f"memory probe: streamed copy of {size / MiB:.0f} MiB, pid {os.getpid()}, {malloc}"]
    with ExitStack() as stack:
        us, eu = stack.enter_context(moto()), stack.enter_context(moto())
        steps = [f"RSS at start (boto3, requests, psutil imported): {_rss():.0f} MB"]
        from storage_engines.s3 import S3Engine  # noqa: F401 - measured: the engine's imports

        steps.append(f"after importing storage_engines.s3: {_rss():.0f} MB")
        us_bucket = us.fresh_bucket("us")
        source = s3_engine("us_s3", us.url, us_bucket)
        source.stat("warm-up")  # builds its boto3 session and client
        steps.append(f"after the first engine's client (its own boto3 Session): {_rss():.0f} MB")
        target = s3_engine("eu_s3", eu.url, eu.fresh_bucket("eu"))
        target.stat("warm-up")
        steps.append(f"after the second engine's client: {_rss():.0f} MB")
        report.append("; ".join(steps))
        blob = STATE / "probe-blob.bin"
        stack.callback(blob.unlink, missing_ok=True)
        digest = random_file(blob, size)
        key = f"sha256/{digest[7:9]}/{digest[7:]}"
        seed(us.url, us_bucket, key, blob)
        phases: list[tuple[str, Callable[[], Any]]] = [
            (
                "copy_to (streamed, the product's StorageEngine.copy_to)",
                lambda: source.copy_to(key, target),
            ),
            ("read-back verification (as copy_verified)", lambda: readback(target, key)),
        ]
        for title, action in phases:
            with traced(report, title, trace):
                got = action()
            report.append(f"   result: {got}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_probe", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--mib", type=int, default=512, help="blob size in MiB (default 512)")
    parser.add_argument("--no-trace", action="store_true", help="sample the RSS only")
    args = parser.parse_args(argv)
    STATE.mkdir(parents=True, exist_ok=True)
    report = probe(args.mib * MiB, trace=not args.no_trace)
    text = "\n".join(report) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
