"""Processes for the benchmarks: spawn, wait, stop, and measure their memory."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
#: Where the benchmarks keep their state; each invocation works in its own ``run-<pid>``, so
#: two benchmark commands at once do not wipe each other's servers.
BENCH_DIR = Path(os.environ.get("QUAY_GEO_BENCH_DIR", "/tmp/quay-geo-bench"))
STATE = BENCH_DIR / f"run-{os.getpid()}"
SKOPEO_CACHE = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until ``url`` answers any HTTP status; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:g}s")


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session, output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a process group: SIGTERM, a bounded wait, then SIGKILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
    except ProcessLookupError:
        pass


@contextmanager
def running(
    args: list[str], log: Path, ready_url: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends; yield it once ``ready_url`` answers."""
    process = spawn(args, log, env)
    try:
        wait_http(ready_url, process)
        yield process
    finally:
        stop(process)


def tree_rss(pid: int) -> list[int]:
    """Return the resident set sizes in bytes of ``pid`` and its descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    sizes = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes.append(proc.memory_info().rss)
    return sizes


class PeakRss:
    """Sample the RSS of process trees every 50 ms.

    ``peak`` is the highest sum over all their processes, ``peak_one`` the highest single process
    (for gunicorn: one worker; the sum includes the master and the idle worker).
    """

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.peak = 0
        self.peak_one = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = [size for pid in self.pids for size in tree_rss(pid)]
            self.peak = max(self.peak, sum(sizes))
            self.peak_one = max(self.peak_one, max(sizes, default=0))
            self._stop.wait(0.05)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(args: list[str], env: dict[str, str] | None = None) -> float:
    """Run a command to completion; return its wall time; raise with its output on failure."""
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return elapsed


def clear_skopeo_cache() -> None:
    """Forget what skopeo knows about blobs, so no copy is skipped or cross-mounted."""
    SKOPEO_CACHE.unlink(missing_ok=True)


def fresh_dir(path: Path) -> Path:
    """Return ``path`` emptied."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def base_env() -> dict[str, str]:
    """Return this environment without AWS_CA_BUNDLE (distribution's s3 driver panics on it)."""
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    return env


def stale_runs_remove() -> None:
    """Delete the state of earlier invocations whose process is gone (images are large)."""
    for path in BENCH_DIR.glob("run-*"):
        pid = path.name.removeprefix("run-")
        if pid.isdigit() and int(pid) != os.getpid() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
