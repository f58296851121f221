"""The servers under test: moto, quay-geo (gunicorn on PostgreSQL) and CNCF distribution."""

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

from .procs import BIN, ROOT, STATE, base_env, free_port, fresh_dir, running, spawn, stop

#: The PostgreSQL server and the Redis of this run (``services()`` sets them).
PG = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379"
LOCATION = "bench_store"
S3_KEY = "testing"


@dataclass
class S3:
    url: str
    pid: int

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_KEY,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def empty_buckets(self) -> None:
        """Delete every object of every bucket, so moto's memory does not grow across runs."""
        client = self.client()
        for bucket in client.list_buckets()["Buckets"]:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])
            for page in pages:
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=bucket["Name"], Delete={"Objects": keys})

    def fresh_bucket(self, prefix: str) -> str:
        """Create and return a new empty bucket."""
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def moto() -> Iterator[S3]:
    """Run one moto_server; yield its endpoint."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with running(args, STATE / "logs" / f"moto-{port}.log", f"{url}/moto-api/") as proc:
        yield S3(url, proc.pid)


def pg_args() -> list[str]:
    """Return the ``-h -p -U`` arguments of the PostgreSQL client tools for this run's server."""
    url = urlsplit(PG)
    return [
        "-h",
        url.hostname or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "",
    ]


def _pg(*args: str) -> None:
    subprocess.run([*args[:1], *pg_args(), *args[1:]], check=True, capture_output=True, timeout=120)


@contextmanager
def services() -> Iterator[None]:
    """Run the private PostgreSQL and Redis every case uses, on free ports, until the block ends.

    ``QUAY_GEO_BENCH_PG`` (``postgres://user@host:port``) names an existing server instead.
    A private server keeps the benchmark independent of what else runs on the machine and needs
    nothing but Debian's ``postgresql`` and ``redis-server`` packages.
    """
    global PG, REDIS
    with _postgres() as pg, _redis() as redis_url:
        PG, REDIS = pg, redis_url
        yield


def _pg_bindir() -> Path:
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bindirs:
        raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
    return bindirs[-1].parent


def _pg_datadir(name: str) -> tuple[Path, list[str]]:
    """Return a new data directory and the command prefix that runs the server tools on it."""
    if os.getuid() != 0:
        return fresh_dir(STATE / name), []
    # initdb and postgres refuse to run as root. A directory of its own under the system temp
    # dir: the postgres user must be able to reach it, and the state directory may sit below a
    # root-only one (pytest's tmp_path).
    data = Path(tempfile.mkdtemp(prefix=f"quay-geo-bench-{name}-"))
    shutil.chown(data, "postgres")
    return data, ["runuser", "-u", "postgres", "--"]


@contextmanager
def _pg_server(data: Path, as_owner: list[str], name: str) -> Iterator[str]:
    """Run the cluster in ``data`` on a free port until the block ends; yield its URL."""
    port = free_port()
    command = [*as_owner, str(_pg_bindir() / "postgres"), "-D", str(data), "-p", str(port)]
    options = ["-k", str(data), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
    server = spawn([*command, *options], STATE / "logs" / f"{name}.log")
    try:
        _wait_until(["pg_isready", "-h", "127.0.0.1", "-p", str(port)], server, f"private {name}")
        yield f"postgres://postgres@127.0.0.1:{port}"
    finally:
        stop(server, timeout=30)
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def _postgres() -> Iterator[str]:
    given = os.environ.get("QUAY_GEO_BENCH_PG")
    if given:
        yield given.rstrip("/")
        return
    data, as_owner = _pg_datadir("pg")
    init = [*as_owner, str(_pg_bindir() / "initdb"), "-D", str(data), "-U", "postgres"]
    subprocess.run(
        [*init, "-A", "trust", "-E", "UTF8"], check=True, capture_output=True, timeout=120
    )
    with _pg_server(data, as_owner, "postgres") as url:
        yield url


@contextmanager
def standby() -> Iterator[str]:
    """Run a hot standby of this run's PostgreSQL (``pg_basebackup -R``); yield its URL.

    The standby streams from the primary with the ``primary_conninfo`` that ``-R`` writes, and
    answers read-only queries (``hot_standby`` is on by default) on a free port of its own.
    """
    data, as_owner = _pg_datadir("standby")
    url = urlsplit(PG)
    backup = [*as_owner, str(_pg_bindir() / "pg_basebackup"), "-D", str(data), "-R"]
    backup += ["-X", "stream", "-c", "fast", "-h", url.hostname or "127.0.0.1"]
    backup += ["-p", str(url.port or 5432), "-U", url.username or "postgres"]
    done = subprocess.run(backup, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise RuntimeError(f"pg_basebackup of {PG} failed:\n{done.stderr[-2000:]}")
    with _pg_server(data, as_owner, "standby") as standby_url:
        yield standby_url


@contextmanager
def _redis() -> Iterator[str]:
    port = free_port()
    server = spawn(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        STATE / "logs" / "redis.log",
    )
    try:
        _wait_until(["redis-cli", "-p", str(port), "ping"], server, "private Redis")
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop(server)


def _wait_until(check: list[str], server: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{what} exited with {server.returncode}; see {STATE / 'logs'}")
        if subprocess.run(check, capture_output=True, timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not start within 60 s")


def _template() -> str:
    """Return a migrated template database, named after the migrations it holds."""
    digest = hashlib.sha256()
    for path in sorted(ROOT.glob("*/migrations/*.py")):
        digest.update(path.read_bytes())
    name = f"quay_geo_bench_tpl_{digest.hexdigest()[:12]}"
    listing = subprocess.run(
        ["psql", *pg_args(), "-lqtA"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    found = name in {line.split("|", 1)[0] for line in listing.splitlines()}
    if not found:
        _pg("createdb", f"{name}_tmp")
        manage(quay_env(f"{PG}/{name}_tmp"), "migrate", "--noinput")
        _pg("psql", "-qc", f"ALTER DATABASE {name}_tmp RENAME TO {name}")
    return name


def reset_database(name: str) -> str:
    """Drop and create a migrated PostgreSQL database (from a template); return its URL."""
    _pg("dropdb", "--if-exists", "--force", name)
    _pg("createdb", "-T", _template(), name)
    return f"{PG}/{name}"


def quay_env(database_url: str, **extra: str) -> dict[str, str]:
    """Return the environment of every quay-geo process of the benchmarks."""
    env = base_env()
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SECRET_KEY="bench-secret-key-not-for-production-0123456789abcdef",
        QUAY_GEO_VAR_DIR=str(STATE / "var"),
        CELERY_BROKER_URL=f"{REDIS}/15",
        DJANGO_SECURE_COOKIES="0",
        DJANGO_SUPERUSER_USERNAME="bench",
        DJANGO_SUPERUSER_PASSWORD="bench-password-1234",
        QUAY_GEO_TOKEN_TTL="3600",
        QUAY_GEO_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """Run ``manage.py`` with ``args``; return its stdout."""
    result = subprocess.run(
        [str(BIN / "python"), "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result.stdout


@dataclass
class Quay:
    url: str
    pid: int
    user: str
    token: str

    @property
    def creds(self) -> str:
        return f"{self.user}:{self.token}"


def quay_setup(
    env: dict[str, str],
    s3: S3,
    bucket: str,
    serve_mode: str = "redirect",
    local: Path | None = None,
) -> str:
    """Migrate, create the superuser and the location (S3, or local disk); return an app token."""
    manage(env, "ensuresuperuser")
    if local is not None:
        options = ["--kind", "local", "--option", f"storage_path={local}"]
    else:
        options = [
            "--kind",
            "s3",
            "--serve-mode",
            serve_mode,
            "--default",
            "--option",
            f"s3_bucket={bucket}",
            "--option",
            f"endpoint_url={s3.url}",
            "--option",
            f"s3_access_key={S3_KEY}",
            "--option",
            f"s3_secret_key={S3_KEY}",
            "--option",
            "addressing_style=path",
        ]
    manage(env, "addlocation", LOCATION, *options)
    return manage(env, "createapptoken", "bench", "--name", "bench").strip()


@contextmanager
def quay(
    env: dict[str, str],
    token: str,
    workers: int = 2,
    access_log: bool = False,
    preference: str = LOCATION,
) -> Iterator[Quay]:
    """Run quay-geo under gunicorn gthread as ``scripts/run.sh`` does; yield it.

    ``access_log`` logs each request with its duration in microseconds (for diagnosis only);
    ``preference`` is the process's ``QUAY_DISTRIBUTED_STORAGE_PREFERENCE`` (a region's web
    process prefers its own location).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        str(BIN / "gunicorn"),
        "quay_geo.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        "8",
        "--timeout",
        "600",
        "--name",
        "quay-geo-bench",
    ]
    if access_log:
        args += ["--access-logfile", "-", "--access-logformat", "%(m)s %(U)s %(s)s %(D)sus"]
    env = dict(env, QUAY_DISTRIBUTED_STORAGE_PREFERENCE=preference)
    with running(args, STATE / "logs" / f"quay-{port}.log", f"{url}/v2/", env) as proc:
        yield Quay(url, proc.pid, "bench", token)


@dataclass
class Distribution:
    url: str
    pid: int


def distribution_config(port: int, storage: str) -> str:
    return (
        "version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\n"
        f"storage:\n{storage}\n  delete: {{enabled: true}}\n"
        f"http: {{addr: 127.0.0.1:{port}, secret: bench-secret}}\n"
    )


def s3_storage(s3: S3, bucket: str) -> str:
    return (
        f"  s3: {{accesskey: {S3_KEY}, secretkey: {S3_KEY}, region: us-east-1, "
        f'regionendpoint: "{s3.url}", bucket: {bucket}, secure: false, v4auth: true, '
        "chunksize: 10485760, rootdirectory: /registry}\n  redirect: {disable: false}"
    )


def fs_storage(root: Path) -> str:
    return f"  filesystem: {{rootdirectory: {root}}}"


@contextmanager
def distribution(storage: str) -> Iterator[Distribution]:
    """Run Debian's docker-registry (CNCF distribution 2.8) with ``storage``; yield it."""
    port = free_port()
    config = STATE / f"registry-{port}.yml"
    config.write_text(distribution_config(port, storage))
    url = f"http://127.0.0.1:{port}"
    args = ["docker-registry", "serve", str(config)]
    with running(args, STATE / "logs" / f"registry-{port}.log", f"{url}/v2/", base_env()) as proc:
        yield Distribution(url, proc.pid)
