"""Case 1: push and pull of a multi-layer image with skopeo, quay-geo vs distribution.

Storages: ``fs`` (local disk), ``s3`` (a moto of its own), ``rgw`` (Ceph radosgw) and ``swift``
(Swift with tempauth), the last two from ``scripts/test-servers.sh`` (``bench.stores``). Both
registries use the same server; quay-geo's bucket/container is new for the case and emptied after
every run, distribution gets a new one per run (its process is new per run too), deleted after the
run. On S3, RGW and Swift both registries answer a blob GET with a redirect to the store (S3
presigned URLs; Swift temporary URLs: quay-geo's ``temp_url_key`` on its container, distribution's
``secretkey``, which its driver sets as its container's Temp-URL key), so skopeo reads the bytes
from the store on both sides; ``params.blob_get`` records the answer each side gave.
"""

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.registry.images import MiB, oci_image_build

from .procs import STATE, PeakRss, clear_skopeo_cache, fresh_dir, timed
from .report import compare_table, save, summary
from .servers import (
    LOCATION,
    Quay,
    distribution,
    fs_storage,
    manage,
    moto,
    quay,
    quay_env,
    quay_setup,
    reset_database,
    s3_storage,
)
from .stores import RGW, SWIFT, test_servers, unique_name

PEER = "distribution 2.8.2"


def build_image(path: Path, layers: int, layer_mib: float) -> None:
    """Write a fresh OCI layout at ``oci:path:v1``, built with umoci: ``layers`` layers, each
    one file of ``layer_mib`` MiB of random bytes (gzip, as umoci writes them).

    The builder is the test suite's (``tests/registry/images.py``), the one place that drives
    umoci; it uses nothing but the standard library and the ``umoci`` command.
    """
    shutil.rmtree(path, ignore_errors=True)  # umoci init creates the layout directory itself
    path.parent.mkdir(parents=True, exist_ok=True)
    oci_image_build(path, "v1", [int(layer_mib * MiB)] * layers)


def skopeo(src: str, dest: str, *, src_creds: str = "", dest_creds: str = "") -> float:
    """Time one ``skopeo copy`` with a cold blob-info cache."""
    clear_skopeo_cache()
    args = ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false"]
    if src_creds:
        args += ["--src-creds", src_creds]
    if dest_creds:
        args += ["--dest-creds", dest_creds]
    return timed([*args, src, dest])


def one_side(name: str, url: str, pid: int, image: Path, repo: str, creds: str) -> dict[str, float]:
    """Push ``image`` to ``url/repo``, pull it back into a fresh layout; time both."""
    ref = f"docker://{url.removeprefix('http://')}/{repo}:v1"
    out: dict[str, float] = {}
    with PeakRss(pid) as rss:
        out["push_s"] = skopeo(f"oci:{image}:v1", ref, dest_creds=creds)
    out["push_rss_mb"] = rss.peak / 1e6
    out["push_rss_one_mb"] = rss.peak_one / 1e6
    pulled = fresh_dir(STATE / f"pull-{name}")
    with PeakRss(pid) as rss:
        out["pull_s"] = skopeo(ref, f"oci:{pulled}:v1", src_creds=creds)
    out["pull_rss_mb"] = rss.peak / 1e6
    out["pull_rss_one_mb"] = rss.peak_one / 1e6
    if not (pulled / "index.json").exists():
        raise RuntimeError(f"{name}: the pull wrote no image")
    return out


@dataclass
class Backend:
    """One storage of the case: quay-geo's token (its location is set up), the peer's storage."""

    token: str
    #: distribution's ``storage:`` block, on a new bucket/directory at every call.
    peer_storage: Callable[[], str]
    #: Empty what the run stored (the next run starts from empty stores).
    after_run: Callable[[], None]
    notes: dict[str, str] = field(default_factory=dict)


def quay_setup_location(env: dict[str, str], location: list[str]) -> str:
    """As ``servers.quay_setup``, for a location given as ``addlocation`` arguments."""
    manage(env, "ensuresuperuser")
    manage(env, "addlocation", LOCATION, "--serve-mode", "redirect", "--default", *location)
    return manage(env, "createapptoken", "bench", "--name", "bench").strip()


@contextmanager
def backend_moto(env: dict[str, str], storage: str) -> Iterator[Backend]:
    """S3 on a moto of the case's own, or local disk (``fs``)."""
    with moto() as s3:
        local = fresh_dir(STATE / "quay-fs") if storage == "fs" else None
        token = quay_setup(env, s3, s3.fresh_bucket("quay"), local=local)

        def peer() -> str:
            if storage == "s3":
                return s3_storage(s3, s3.fresh_bucket("reg"))
            return fs_storage(fresh_dir(STATE / "registry-fs"))

        def after_run() -> None:
            # Each run pushes new blobs: what earlier runs stored only slows moto down.
            s3.empty_buckets()
            if local is not None:
                fresh_dir(local)

        yield Backend(token, peer, after_run)


@contextmanager
def backend_rgw(env: dict[str, str]) -> Iterator[Backend]:
    """Ceph radosgw: quay-geo's ``radosgw`` engine, distribution's ``s3`` driver on it."""
    with test_servers(RGW.server):
        bucket = RGW.bucket_create("quay")
        peers: list[str] = []

        def peer() -> str:
            peers.append(RGW.bucket_create("reg"))
            return RGW.distribution_storage(peers[-1])

        def after_run() -> None:
            while peers:
                RGW.bucket_delete(peers.pop())
            RGW.bucket_empty(bucket)

        try:
            token = quay_setup_location(env, RGW.quay_options(bucket))
            yield Backend(
                token,
                peer,
                after_run,
                {"quay-geo": "radosgw engine", "distribution": "s3 driver, regionendpoint RGW"},
            )
        finally:
            after_run()
            RGW.bucket_delete(bucket)


@contextmanager
def backend_swift(env: dict[str, str]) -> Iterator[Backend]:
    """Swift (tempauth v1): both registries redirect blob GETs to temporary URLs."""
    with test_servers(SWIFT.server):
        key = unique_name("tempurl")
        container = SWIFT.bucket_create("quay", temp_url_key=key)
        peers: list[str] = []

        def peer() -> str:
            peers.append(SWIFT.bucket_create("reg"))
            return SWIFT.distribution_storage(peers[-1], unique_name("tempurl"))

        def after_run() -> None:
            while peers:
                SWIFT.bucket_delete(peers.pop())
            SWIFT.bucket_empty(container)

        try:
            token = quay_setup_location(env, SWIFT.quay_options(container, temp_url_key=key))
            yield Backend(
                token,
                peer,
                after_run,
                {
                    "quay-geo": "swift engine, temp_url_key (sha256), segments of 8 MiB",
                    "distribution": "swift driver, secretkey (sha1 temp URLs), chunks of 20 MiB",
                },
            )
        finally:
            after_run()
            SWIFT.bucket_delete(container)


def backend_for(env: dict[str, str], storage: str) -> AbstractContextManager[Backend]:
    """Return the context manager of ``storage``'s backend."""
    if storage == "rgw":
        return backend_rgw(env)
    if storage == "swift":
        return backend_swift(env)
    if storage in ("s3", "fs"):
        return backend_moto(env, storage)
    raise ValueError(f"unknown storage {storage!r} (fs, s3, rgw, swift)")


def blob_get(url: str, repo: str, image: Path, creds: str) -> str:
    """Return how a registry answers a layer GET: its status and where it redirects to."""
    from .metadata import bearer_token, image_digests

    _, layer = image_digests(image)
    headers = {"Authorization": f"Bearer {bearer_token(url, repo, creds)}"} if creds else {}
    with requests.get(
        f"{url}/v2/{repo}/blobs/{layer}",
        headers=headers,
        allow_redirects=False,
        stream=True,
        timeout=30,
    ) as answer:
        where = answer.headers.get("Location", "")
        return f"{answer.status_code} {where.split('?', 1)[0]}".strip()


def run(*, quick: bool, runs: int, storage: str = "s3") -> dict[str, Any]:
    """Run the case; return and save its results."""
    layers, layer_mib = (2, 2.0) if quick else (5, 512 / 5)
    samples: dict[str, dict[str, list[float]]] = {"quay-geo": {}, "distribution": {}}
    blob_gets: dict[str, str] = {}
    with ExitStack() as stack:
        env = quay_env(reset_database("quay_geo_bench_push"))
        store: Backend = stack.enter_context(backend_for(env, storage))
        server: Quay = stack.enter_context(quay(env, store.token))
        for index in range(runs):
            image = STATE / "image"
            build_image(image, layers, layer_mib)
            repo = f"bench/img-{uuid.uuid4().hex[:8]}"
            order = ["quay-geo", "distribution"] if index % 2 == 0 else ["distribution", "quay-geo"]
            for name in order:
                if name == "quay-geo":
                    got = one_side(name, server.url, server.pid, image, repo, server.creds)
                    blob_gets[name] = blob_get(server.url, repo, image, server.creds)
                else:
                    with distribution(store.peer_storage()) as peer:
                        got = one_side(name, peer.url, peer.pid, image, repo, "")
                        blob_gets[name] = blob_get(peer.url, repo, image, "")
                for key, value in got.items():
                    samples[name].setdefault(key, []).append(value)
                print(
                    f"  run {index + 1}/{runs} {name}: "
                    + ", ".join(f"{k}={v:.2f}" for k, v in got.items()),
                    flush=True,
                )
            store.after_run()
    result: dict[str, Any] = {
        "params": {
            "storage": storage,
            "layers": layers,
            "layer_mib": layer_mib,
            "runs": runs,
            "quick": quick,
            "peer": PEER,
            "blob_get": blob_gets,
            **({"drivers": store.notes} if store.notes else {}),
        },
        "samples": samples,
        "summary": {name: {k: summary(v) for k, v in per.items()} for name, per in samples.items()},
    }
    path = save(f"push_pull-{storage}", result)
    ours, theirs = result["summary"]["quay-geo"], result["summary"]["distribution"]
    print(compare_table([(m, PEER, ours[m], theirs[m]) for m in ("push_s", "pull_s")], "s"))
    print(
        compare_table(
            [
                (m, PEER, ours[m], theirs[m])
                for m in ("push_rss_mb", "push_rss_one_mb", "pull_rss_mb", "pull_rss_one_mb")
            ],
            "MB",
        )
    )
    print(f"blob GET answers: {json.dumps(blob_gets)}")
    print(f"results: {path}")
    return result
