"""Real processes for integration and end-to-end tests: gunicorn, Celery workers, moto servers.

Every process gets the test database, the test secret key (engine secrets are encrypted with
it) and the broker of the test run through its environment, binds 127.0.0.1 only, and is
killed when its context ends: no process outlives its test.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url() -> str:
    """Return a DATABASE_URL naming the database this test run uses (the test database)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    """Return the environment of a server process that shares this test run's state."""
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "DJANGO_SECRET_KEY": settings.SECRET_KEY,
            "QUAY_GEO_VAR_DIR": str(settings.VAR_DIR),
            "DJANGO_SECURE_COOKIES": "0",
            "CELERY_BROKER_URL": broker_url(),
            "PYTHONUNBUFFERED": "1",
            # A server process outlives the test that started it, and the database is emptied
            # between tests: cached rows of one test would name rows of another. Tests of the
            # caches themselves pass their own lifetimes.
            "QUAY_GEO_CACHE_SECONDS": "0",
            "QUAY_GEO_TAG_CACHE_SECONDS": "0",
            "QUAY_GEO_CONFIG_CHECK_SECONDS": "0",
        }
    )
    env.update(extra)
    return env


_BROKER: str | None = None


def broker_url() -> str:
    """Return this test run's broker: a database of the test Redis (scripts/test-servers.sh)."""
    global _BROKER
    if _BROKER is None:
        configured = os.environ.get("QUAY_GEO_TEST_BROKER_URL")
        _BROKER = configured or f"redis://127.0.0.1:6390/{1 + os.getpid() % 14}"
    return _BROKER


def use_test_broker() -> None:
    """Point this process's Celery app at the test broker and empty it."""
    import redis

    from quay_geo.celery import app

    url = broker_url()
    try:
        redis.Redis.from_url(url).flushdb()
    except redis.ConnectionError as exc:
        raise RuntimeError(
            f"the test broker {url} does not answer: run `make test`, or start it with "
            "`scripts/test-servers.sh start redis` (QUAY_GEO_TEST_BROKER_URL points elsewhere)"
        ) from exc
    app.close()
    app.amqp._producer_pool = None
    app.conf.broker_url = url
    app.conf.task_always_eager = False


def wait_http(
    url: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``url`` answers any HTTP status, bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:g}s")


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    """Stop a process group: ``sig``, a bounded wait, then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
        except ProcessLookupError:
            pass


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("ab")
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def log_dir() -> Path:
    return Path(settings.VAR_DIR) / "test-logs"


@contextmanager
def gunicorn(preference: str = "", workers: int = 2, **env: str) -> Iterator[str]:
    """Run the registry under gunicorn on a free port; yield its base URL."""
    port = free_port()
    args = [
        str(BIN / "gunicorn"),
        "quay_geo.wsgi:application",
        "-c",
        "python:quay_geo.gunicorn_config",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--timeout",
        "300",
    ]
    process = _spawn(
        args,
        process_env(QUAY_DISTRIBUTED_STORAGE_PREFERENCE=preference, **env),
        log_dir() / f"gunicorn-{port}.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/", process=process)
        yield url
    finally:
        stop(process)


@contextmanager
def celery_worker(
    preference: str = "", *, queues: str = "", concurrency: int = 4, **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a real Celery worker (thread pool) on the test broker; yield its process."""
    name = f"test-{uuid.uuid4().hex[:8]}@127.0.0.1"
    args = [
        str(BIN / "celery"),
        "-A",
        "quay_geo",
        "worker",
        "--loglevel",
        "INFO",
        "--pool",
        "threads",
        "--concurrency",
        str(concurrency),
        "--hostname",
        name,
        "--without-gossip",
        "--without-mingle",
    ]
    if queues:
        args += ["--queues", queues]
    process = _spawn(
        args,
        process_env(QUAY_DISTRIBUTED_STORAGE_PREFERENCE=preference, **env),
        log_dir() / f"worker-{name.split('@')[0]}.log",
    )
    try:
        _wait_worker_ready(process, name)
        yield process
    finally:
        stop(process)


def _wait_worker_ready(process: subprocess.Popen[bytes], name: str, timeout: float = 60) -> None:
    log = log_dir() / f"worker-{name.split('@')[0]}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"worker exited with {process.returncode}: {log.read_text()[-2000:]}"
            )
        if log.exists() and b" ready." in log.read_bytes():
            return
        time.sleep(0.2)
    raise TimeoutError(f"worker {name} not ready within {timeout}s: {log.read_text()[-2000:]}")


@contextmanager
def moto_server(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run a private moto S3 server (for tests that stop and restart it)."""
    port = port or free_port()
    process = _spawn(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        dict(os.environ),
        log_dir() / f"moto-{port}.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", process=process)
        yield url, process
    finally:
        stop(process)


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.2, message: str = ""
) -> None:
    """Poll ``predicate`` until it is true, bounded by ``timeout``; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(message or f"condition not met within {timeout}s")


class TcpProxy:
    """A loopback TCP forwarder that can be cut and restored: a network outage of one server."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._connections: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Accept and forward connections on ``self.port``."""
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        thread = threading.Thread(target=self._accept, args=(server,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            # close() alone leaves the socket listening while the accept thread is blocked in
            # accept(): the next connection still got through. shutdown() wakes it up.
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._connections.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
