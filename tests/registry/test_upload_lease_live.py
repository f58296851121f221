"""A worker killed mid-PATCH leaves its upload claimed for one short lease, not an hour.

gunicorn with one worker; the client streams a PATCH, the worker is killed with SIGKILL while the
body streams, and the client's retry of the same chunk proceeds once the lease (30 s by default)
has run out: within a minute.
"""

import http.client
import os
import signal
import time
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import User

from tests import live
from tests.registry.conftest import PASSWORD, sha256
from tests.registry.test_e2e_clients import _location_on_moto, token

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.servers]


def _workers_of(port: int) -> list[int]:
    """Return the pids of gunicorn workers serving ``port`` (children of its master)."""
    serving: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if f"127.0.0.1:{port}".encode() in cmdline and b"gunicorn" in cmdline:
            serving[int(entry.name)] = ppid
    return [pid for pid, ppid in serving.items() if ppid in serving]


def test_a_retry_after_a_worker_died_mid_patch_proceeds_within_a_minute() -> None:
    User.objects.create_user("alice", password=PASSWORD)
    _location_on_moto(serve_mode="proxy")
    data = os.urandom(3 * 1024 * 1024)
    with live.gunicorn(workers=1, DATABASE_CONN_MAX_AGE="0") as url:
        host = url.removeprefix("http://")
        headers = {"Authorization": f"Bearer {token(host, 'repository:alice/app:pull,push')}"}
        started = requests.post(f"{url}/v2/alice/app/blobs/uploads/", headers=headers, timeout=30)
        assert started.status_code == 202
        upload = f"{url}{started.headers['Location']}"
        chunk = {**headers, "Content-Range": f"0-{len(data) - 1}"}
        # Half of the body, then silence: the worker has claimed the upload and waits for more.
        stalled = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=60)
        stalled.putrequest("PATCH", started.headers["Location"])
        for header, value in {**chunk, "Content-Length": str(len(data))}.items():
            stalled.putheader(header, value)
        stalled.endheaders()
        stalled.send(data[: len(data) // 2])
        time.sleep(2)
        port = int(url.rsplit(":", 1)[1])
        workers = _workers_of(port)
        assert len(workers) == 1
        os.kill(workers[0], signal.SIGKILL)
        killed = time.monotonic()

        statuses: list[int] = []
        deadline = killed + 60
        while time.monotonic() < deadline:
            try:
                retry = requests.patch(upload, data=data, headers=chunk, timeout=30)
            except requests.ConnectionError:
                time.sleep(1)  # the master starts a new worker
                continue
            statuses.append(retry.status_code)
            if retry.status_code != 416:
                break
            time.sleep(2)
        waited = time.monotonic() - killed
        done = requests.put(upload, params={"digest": sha256(data)}, headers=headers, timeout=30)
        stalled.close()

    assert statuses[0] == 416  # the dead request's claim still held at first
    assert statuses[-1] == 202, statuses
    assert waited < 60
    assert done.status_code == 201
