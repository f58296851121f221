"""Profiles behind the figures of ``docs/PERFORMANCE.md``, with py-spy (raw collapsed stacks).

``python -m bench.diagnose get-manifest|pull|push-fs|backfill-enqueue OUT.txt``, then
``python -m bench.profile OUT.txt``. ``backfill-enqueue`` seeds 10,000 blobs as case 4 does
(``QUAY_GEO_BENCH_BLOBS`` to change) and profiles ``manage.py backfillreplication``.
``QUAY_GEO_BENCH_CONN_MAX_AGE`` sets ``DATABASE_CONN_MAX_AGE`` of the registry (default: the
settings' default).
"""

import argparse
import os
import subprocess
import time
import uuid
from pathlib import Path

from . import backfill
from .metadata import MANIFEST, bearer_token, wrk_get
from .procs import BIN, ROOT, STATE, fresh_dir, stale_runs_remove
from .push_pull import build_image, skopeo
from .servers import Quay, moto, quay, quay_env, quay_setup, reset_database, services


def spy(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes]:
    """Start py-spy on a process and its children for ``seconds``."""
    args = ["record", "--pid", str(pid), "--subprocesses", "--rate", "200", "-d", str(seconds)]
    return subprocess.Popen([str(BIN / "py-spy"), *args, "--format", "raw", "-o", str(out)])


def get_manifest(server: Quay, image: Path, out: Path) -> None:
    repo = f"bench/prof-{uuid.uuid4().hex[:8]}"
    skopeo(f"oci:{image}:v1", f"docker://{server.url[7:]}/{repo}:v1", dest_creds=server.creds)
    token = bearer_token(server.url, repo, server.creds)
    profiler = spy(server.pid, out, 10)
    headers = {"Authorization": f"Bearer {token}", "Accept": MANIFEST}
    print(wrk_get(f"{server.url}/v2/{repo}/manifests/v1", headers, 10))
    profiler.wait()


def pull(server: Quay, image: Path, out: Path) -> None:
    ref = f"docker://{server.url[7:]}/bench/pull-{uuid.uuid4().hex[:6]}:v1"
    skopeo(f"oci:{image}:v1", ref, dest_creds=server.creds)
    profiler = spy(server.pid, out, 8)
    time.sleep(1)
    for _ in range(3):
        pulled = fresh_dir(STATE / "diagnose-pull")
        print("pull", skopeo(ref, f"oci:{pulled}:v1", src_creds=server.creds))
    profiler.wait()


def push_fs(server: Quay, image: Path, out: Path) -> None:
    profiler = spy(server.pid, out, 12)
    time.sleep(1)
    for _ in range(2):
        ref = f"docker://{server.url[7:]}/bench/push-{uuid.uuid4().hex[:6]}:v1"
        print("push", skopeo(f"oci:{image}:v1", ref, dest_creds=server.creds))
        build_image(image, 5, 20.0)
    profiler.wait()


def backfill_enqueue(out: Path) -> None:
    env, broker, _ = backfill.prepare(int(os.environ.get("QUAY_GEO_BENCH_BLOBS", "10000")))
    args = ["record", "--rate", "200", "--format", "raw", "-o", str(out), "--"]
    command = [str(BIN / "python"), "manage.py", "backfillreplication"]
    subprocess.run([str(BIN / "py-spy"), *args, *command], cwd=ROOT, env=env, check=True)
    broker.flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.diagnose", description=__doc__)
    parser.add_argument("what", choices=["get-manifest", "pull", "push-fs", "backfill-enqueue"])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    out = args.out.resolve()
    stale_runs_remove()
    fresh_dir(STATE)
    with services():
        run(args.what, out)


def run(what: str, out: Path) -> None:
    """Start what ``what`` needs and profile it into ``out``."""
    if what == "backfill-enqueue":
        backfill_enqueue(out)
        return
    image = STATE / "diagnose-image"
    build_image(image, *((2, 2.0) if what == "get-manifest" else (5, 20.0)))
    age = os.environ.get("QUAY_GEO_BENCH_CONN_MAX_AGE")
    extra = {"DATABASE_CONN_MAX_AGE": age} if age else {}
    with moto() as s3:
        env = quay_env(reset_database("quay_geo_bench_prof"), **extra)
        if what in ("get-manifest", "push-fs"):
            token = quay_setup(env, s3, "", local=fresh_dir(STATE / "diagnose-fs"))
        else:
            token = quay_setup(env, s3, s3.fresh_bucket("quay"))
        with quay(env, token, access_log=True) as server:
            action = {"get-manifest": get_manifest, "pull": pull, "push-fs": push_fs}[what]
            action(server, image, out)


if __name__ == "__main__":
    main()
