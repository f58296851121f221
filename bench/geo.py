"""Two-region set-up, a small OCI push/pull client and per-process memory, for cases 3 and 5.

Cases 3 (replication lag) and 5 (memory under big blobs) need what ``servers.quay`` does not
give: two S3 locations that both replicate by default, a web process whose storage preference is
a region's location (``servers.quay`` pins its own ``LOCATION``), a client that pushes blobs it
generates itself (skopeo would need an OCI layout on disk for every image), and the peak RSS of
each process of a tree rather than only the sum and the largest.
"""

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import psutil
import requests

from .metadata import bearer_token
from .procs import BIN, ROOT
from .servers import S3, S3_KEY, manage

MiB = 1024 * 1024
CHUNK = MiB
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
#: The registry never looks inside a layer: random bytes stand for a gzip tarball.
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
#: Connect, then read timeout of every registry request: a 2 GiB PUT answers only once the
#: registry has moved the assembled object to its content key inside moto.
TIMEOUT = (10.0, 1800.0)


# --- set-up ---------------------------------------------------------------------------------


def s3_location_add(
    env: dict[str, str], location_id: str, s3: S3, *, serve_mode: str = "redirect"
) -> str:
    """Add a default-target S3 location on a fresh bucket of ``s3`` (probed); return the bucket."""
    bucket = s3.fresh_bucket(location_id.replace("_", "-"))
    options = {
        "s3_bucket": bucket,
        "endpoint_url": s3.url,
        "s3_access_key": S3_KEY,
        "s3_secret_key": S3_KEY,
        "addressing_style": "path",
    }
    args = ["addlocation", location_id, "--kind", "s3", "--serve-mode", serve_mode, "--default"]
    for name, value in options.items():
        args += ["--option", f"{name}={value}"]
    manage(env, *args)
    return bucket


def geo_setup(env: dict[str, str], stores: dict[str, tuple[S3, str]]) -> str:
    """Replication on, one default S3 location per ``{id: (moto, serve mode)}``; return a token.

    The token is an application token of the superuser ``bench``: a password would cost ~0.4 s
    of PBKDF2 on every token request (see docs/PERFORMANCE.md).
    """
    manage(env, "ensuresuperuser")
    manage(env, "setreplication", "on")
    for location_id, (s3, serve_mode) in stores.items():
        s3_location_add(env, location_id, s3, serve_mode=serve_mode)
    return manage(env, "createapptoken", "bench", "--name", "bench").strip()


def broker_purge(env: dict[str, str], queues: list[str]) -> None:
    """Drop messages an earlier run left on the broker: their placement ids would hit this run's.

    Goes through ``celery purge`` with the run's environment, so the broker is whatever
    ``quay_env`` names.
    """
    args = [str(BIN / "celery"), "-A", "quay_geo", "purge", "-f", "-Q", ",".join(queues)]
    result = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"celery purge failed:\n{result.stderr[-2000:]}")


def consume(env: dict[str, str], worker: str, queue: str) -> None:
    """Make a running worker start consuming ``queue`` (Celery's remote ``add_consumer``).

    Lets a case start a worker idle, attach its memory sampler, and only then hand it work.
    """
    from celery import Celery

    app = Celery(broker=env["CELERY_BROKER_URL"])
    try:
        replies = app.control.add_consumer(queue, destination=[worker], reply=True, timeout=10)
    finally:
        app.close()
    if not replies:
        raise RuntimeError(f"worker {worker} did not answer add_consumer({queue!r}) within 10s")


def django_json(env: dict[str, str], code: str, timeout: float = 120) -> Any:
    """Run ``code`` in ``manage.py shell`` and return what it printed as ``JSON:<value>``.

    The ORM, not psql: the database is whatever ``quay_env`` names, and the other engineer may
    change how it is provided.
    """
    result = subprocess.run(
        [str(BIN / "python"), "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py shell failed:\n{result.stderr[-3000:]}")
    for line in reversed(result.stdout.splitlines()):
        if line.startswith("JSON:"):
            return json.loads(line[5:])
    raise RuntimeError(f"manage.py shell printed no JSON line:\n{result.stdout[-2000:]}")


def placement_states(env: dict[str, str], location_id: str) -> dict[str, int]:
    """Return {state: count} of the placements in ``location_id``."""
    code = (
        "import json\n"
        "from django.db.models import Count\n"
        "from replication.models import Placement\n"
        f"rows = Placement.objects.filter(location__location_id={location_id!r})"
        ".values('state').annotate(n=Count('id'))\n"
        "print('JSON:' + json.dumps({r['state']: r['n'] for r in rows}))\n"
    )
    return {str(k): int(v) for k, v in django_json(env, code).items()}


def placements_of(env: dict[str, str], location_id: str) -> list[dict[str, Any]]:
    """Return every placement in ``location_id``: blob digest, size, commit and verify times."""
    code = (
        "import json\n"
        "from replication.models import Placement\n"
        f"rows = Placement.objects.filter(location__location_id={location_id!r})"
        ".select_related('blob')\n"
        "out = [{'digest': p.blob.digest, 'size': p.blob.size, 'state': p.state,\n"
        "        'created': p.blob.created_at.timestamp(),\n"
        "        'verified': p.verified_at.timestamp() if p.verified_at else None,\n"
        "        'copy_method': p.copy_method, 'copy_seconds': p.copy_seconds,\n"
        "        'attempts': p.attempts, 'last_error': p.last_error[:300]} for p in rows]\n"
        "print('JSON:' + json.dumps(out))\n"
    )
    return list(django_json(env, code, timeout=300))


def wait_all_present(
    env: dict[str, str], location_id: str, timeout: float, interval: float = 3.0
) -> float:
    """Wait until no placement in ``location_id`` is anything but present; return the seconds.

    Raise TimeoutError with the states left and a few errors when ``timeout`` passes first, or
    at once when a placement failed permanently (nothing would retry it).
    """
    started = time.monotonic()
    while True:
        states = placement_states(env, location_id)
        if set(states) <= {"present"}:
            return time.monotonic() - started
        if time.monotonic() - started > timeout or _failed_permanently(env, location_id):
            stuck = [p for p in placements_of(env, location_id) if p["state"] != "present"]
            errors = sorted({p["last_error"] for p in stuck if p["last_error"]})[:5]
            raise TimeoutError(
                f"{location_id}: placements not all present after {timeout:g}s: {states}; "
                f"errors: {errors}"
            )
        time.sleep(interval)


def _failed_permanently(env: dict[str, str], location_id: str) -> bool:
    code = (
        "from replication.models import Placement\n"
        f"n = Placement.objects.filter(location__location_id={location_id!r}, "
        "state='failed', error_permanent=True).count()\n"
        "print(f'JSON:{n}')\n"
    )
    return bool(django_json(env, code))


# --- the client -------------------------------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _checked(answer: requests.Response, what: str, status: int) -> requests.Response:
    if answer.status_code != status:
        raise RuntimeError(f"{what}: HTTP {answer.status_code} {answer.text[:500]}")
    return answer


class Registry:
    """One repository of one registry, with a pull+push token; one requests session (a thread)."""

    def __init__(self, url: str, repo: str, creds: str) -> None:
        self.url = url
        self.repo = repo
        self.session = requests.Session()
        self.session.headers["Authorization"] = (
            f"Bearer {bearer_token(url, repo, creds, 'pull,push')}"
        )

    def close(self) -> None:
        self.session.close()

    def _start(self) -> str:
        """Open an upload session; return its absolute URL."""
        answer = _checked(
            self.session.post(f"{self.url}/v2/{self.repo}/blobs/uploads/", timeout=TIMEOUT),
            "POST upload",
            202,
        )
        return urljoin(self.url, answer.headers["Location"])

    def blob_post(self, data: bytes) -> str:
        """Upload a blob held in memory in one ``POST ?digest=`` (monolithic); return its digest."""
        digest = sha256_digest(data)
        _checked(
            self.session.post(
                f"{self.url}/v2/{self.repo}/blobs/uploads/",
                params={"digest": digest},
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=TIMEOUT,
            ),
            "POST ?digest=",
            201,
        )
        return digest

    def blob_put_file(self, path: Path, digest: str) -> None:
        """Upload a file as ``POST`` then one ``PUT ?digest=`` carrying every byte.

        The body is the open file: requests sends its ``Content-Length`` and reads it in small
        blocks, so the client never holds the blob.
        """
        location = self._start()
        with path.open("rb") as body:
            _checked(
                self.session.put(
                    location,
                    params={"digest": digest},
                    data=body,
                    headers={"Content-Type": "application/octet-stream"},
                    timeout=TIMEOUT,
                ),
                "PUT ?digest= (monolithic)",
                201,
            )

    def blob_patch_file(self, path: Path, digest: str, chunk: int) -> int:
        """Upload a file as ``POST``, ``PATCH`` chunks with ``Content-Range``, an empty ``PUT``.

        Each chunk streams from a generator (``Transfer-Encoding: chunked``), as the OCI spec's
        chunked upload; return the number of PATCH requests.
        """
        location = self._start()
        size = path.stat().st_size
        patches = 0
        for first in range(0, size, chunk):
            last = min(first + chunk, size) - 1
            answer = _checked(
                self.session.patch(
                    location,
                    data=file_chunks(path, first, last - first + 1),
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{first}-{last}",
                    },
                    timeout=TIMEOUT,
                ),
                f"PATCH {first}-{last}",
                202,
            )
            location = urljoin(self.url, answer.headers["Location"])
            patches += 1
        _checked(
            self.session.put(location, params={"digest": digest}, timeout=TIMEOUT),
            "PUT ?digest= (closing a chunked upload)",
            201,
        )
        return patches

    def manifest_put(self, tag: str, config: bytes, layers: list[tuple[str, int]]) -> str:
        """Push an OCI image manifest (config and layers already uploaded); return its digest."""
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": CONFIG_TYPE,
                "digest": sha256_digest(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": LAYER_TYPE, "digest": digest, "size": size} for digest, size in layers
            ],
        }
        content = json.dumps(manifest).encode()
        _checked(
            self.session.put(
                f"{self.url}/v2/{self.repo}/manifests/{tag}",
                data=content,
                headers={"Content-Type": MANIFEST_TYPE},
                timeout=TIMEOUT,
            ),
            f"PUT manifest {tag}",
            201,
        )
        return sha256_digest(content)

    def blob_get(self, digest: str) -> tuple[int, str, int]:
        """Download a blob, hashing it on the fly; return (size, sha256 digest, HTTP status).

        Redirects are followed (redirect mode); in proxy mode the registry answers 200 itself.
        """
        hasher, size = hashlib.sha256(), 0
        with self.session.get(
            f"{self.url}/v2/{self.repo}/blobs/{digest}",
            stream=True,
            timeout=TIMEOUT,
            allow_redirects=False,
        ) as answer:
            status = answer.status_code
            if status == 307:
                return self._get_redirected(answer.headers["Location"])
            _checked(answer, f"GET blob {digest}", 200)
            for chunk in answer.iter_content(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        return size, f"sha256:{hasher.hexdigest()}", status

    def _get_redirected(self, url: str) -> tuple[int, str, int]:
        hasher, size = hashlib.sha256(), 0
        with requests.get(url, stream=True, timeout=TIMEOUT) as answer:
            _checked(answer, "GET redirected blob", 200)
            for chunk in answer.iter_content(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        return size, f"sha256:{hasher.hexdigest()}", 307


def file_chunks(path: Path, offset: int, length: int) -> Iterator[bytes]:
    """Yield ``length`` bytes of a file from ``offset`` in ``CHUNK`` pieces."""
    with path.open("rb") as handle:
        handle.seek(offset)
        left = length
        while left > 0:
            data = handle.read(min(CHUNK, left))
            if not data:
                raise RuntimeError(f"{path} ended {left} bytes early")
            left -= len(data)
            yield data


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` one ``CHUNK`` at a time; return their digest.

    ``scripts/demo_image.py`` is not used for big blobs: it builds each layer with
    ``os.urandom(size)`` and ``gzip.compress`` in memory (about 3x the layer size at once).
    """
    hasher = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        left = size
        while left > 0:
            data = os.urandom(min(CHUNK, left))
            hasher.update(data)
            handle.write(data)
            left -= len(data)
    return f"sha256:{hasher.hexdigest()}"


# --- memory -----------------------------------------------------------------------------------


@dataclass
class ProcessPeaks:
    """Sample the RSS of every process of some trees every 50 ms, like ``procs.PeakRss``.

    ``PeakRss`` keeps the sum and the largest process; this also keeps the peak of each process
    (with its command line), so a figure can be given to the gunicorn worker or the Celery pool
    child that did the work, and ``total`` is the highest sum seen at one instant.
    """

    pids: tuple[int, ...]
    interval: float = 0.05
    #: False: sample only the given processes (the benchmark itself, not the servers it runs).
    children: bool = True
    total: int = 0
    peaks: dict[int, int] = field(default_factory=dict)
    #: RSS at the first sample of each process: what it held before the work began.
    first: dict[int, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    roots: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        now = 0
        for root in self.pids:
            try:
                top = psutil.Process(root)
                procs = [top, *(top.children(recursive=True) if self.children else [])]
            except psutil.NoSuchProcess:
                continue
            self.roots.add(root)
            for proc in procs:
                with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    rss = proc.memory_info().rss
                    now += rss
                    if rss > self.peaks.get(proc.pid, 0):
                        self.peaks[proc.pid] = rss
                    self.first.setdefault(proc.pid, rss)
                    if proc.pid not in self.names:
                        self.names[proc.pid] = " ".join(proc.cmdline())[:120]
        self.total = max(self.total, now)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "ProcessPeaks":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sample()

    def largest(self, *, children_only: bool = False) -> tuple[int, int]:
        """Return (pid, peak bytes) of the process that peaked highest (its root excluded)."""
        found = {
            pid: rss for pid, rss in self.peaks.items() if not (children_only and pid in self.roots)
        }
        if not found:
            return 0, 0
        pid = max(found, key=lambda p: found[p])
        return pid, found[pid]

    def by_process(self) -> list[dict[str, Any]]:
        """Return every process seen with its peak in MB, roots first."""
        return [
            {
                "pid": pid,
                "root": pid in self.roots,
                "start_mb": self.first.get(pid, 0) / 1e6,
                "peak_mb": rss / 1e6,
                "cmd": self.names.get(pid, "?"),
            }
            for pid, rss in sorted(
                self.peaks.items(), key=lambda kv: (kv[0] not in self.roots, kv[0])
            )
        ]


def percentile(values: list[float], q: float) -> float:
    """Return the ``q``-th percentile (0-100) with linear interpolation between ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
