"""Case 7 (issue 13): a far region against a near one, and its round trips to the primary.

Two web processes of one registry (gunicorn as ``scripts/run.sh`` runs it), each preferring its
own S3 location on one moto, replication on: "near" talks to the private PostgreSQL directly,
"far" through ``tests.delayproxy.DelayProxy``, which puts 50 or 100 ms of round trip (and one
more for each new connection's TCP handshake) between the far process and the primary. Each run
pushes a fresh image with skopeo into each region and pulls it back, timing both; far/near is
the ratio of the medians. With ``replica``, a third web process, far as well, gets
``DATABASE_REPLICA_URL`` naming a hot standby of the cluster that is NOT behind the proxy (a
replica lives in its region); its primary stays behind the proxy.

The proxy also counts round trips: for the skopeo copies as a whole, and per request kind with a
small client of our own that sends one request at a time and differences the proxy's counters
(token, a blob pushed chunked and monolithic, a manifest PUT, then manifest GET by tag and by
digest, blob HEAD and blob GET, each once ("cold": the first request for that object in the
process) and repeated at once ("warm")). Before counting, a burst of concurrent token requests
at no delay opens a database connection in every gunicorn thread, so the counts are those of a
process in service; a request that still opened one says so in ``connections``. Heartbeats are
off in these processes: a background beat would land in the counts at random.
"""

import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import requests

from tests.delayproxy import DelayProxy, ProxyCounts

from . import servers
from .geo import MANIFEST_TYPE, Registry, broker_purge, geo_setup, random_file, sha256_digest
from .metadata import bearer_token
from .procs import STATE, fresh_dir
from .push_pull import build_image, skopeo
from .report import save, sides_table, summary
from .servers import Quay, moto, quay, quay_env, reset_database, standby

NEAR, FAR = "near_s3", "far_s3"
QUEUES = [f"replicate.{NEAR}", f"replicate.{FAR}", "replicate.priority", "celery"]
DATABASE = "quay_geo_bench_geo"
#: Concurrent token requests that open a database connection in every gunicorn thread.
WARM_BURST = 48
#: Quiet seconds in which the connections that still talk are found to be background ones.
BACKGROUND_QUIET_SECONDS = 2.5


@dataclass
class Side:
    """One region's web process as a client sees it, and its distance to the primary."""

    name: str
    server: Quay
    rtt_ms: float
    #: Behind the proxy: its round trips to the primary are counted.
    far: bool


def _through(proxy: DelayProxy) -> str:
    """Return the URL of this run's database as seen through ``proxy``."""
    primary = urlsplit(servers.PG)
    user = primary.netloc.rsplit("@", 1)[0]
    return f"{primary.scheme}://{user}@{proxy.url_host}/{DATABASE}"


def counted(proxy: DelayProxy, call: Callable[[], object]) -> ProxyCounts:
    """Return what ``call`` cost at the proxy, after what it set off has had time to cross."""
    before = proxy.snapshot()
    call()
    time.sleep(proxy.rtt_ms / 1000 + 0.05)
    return proxy.snapshot() - before


def connections_warm(server: Quay, repo: str, proxy: DelayProxy) -> None:
    """Send bursts of requests at no delay: every gunicorn thread opens its connections.

    Token requests read (on the replica where there is one); upload sessions write, so every
    thread also holds a connection to the primary, as in a registry that has run a while.
    """
    rtt, proxy.rtt_ms = proxy.rtt_ms, 0
    try:
        token = bearer_token(server.url, repo, server.creds, "pull,push")

        def session(_: int) -> None:
            requests.post(
                f"{server.url}/v2/{repo}/blobs/uploads/",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            ).close()

        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(lambda _: bearer_token(server.url, repo, server.creds), range(WARM_BURST))
            )
            list(pool.map(session, range(WARM_BURST)))
    finally:
        proxy.rtt_ms = rtt


def kinds_count(server: Quay, proxy: DelayProxy) -> dict[str, ProxyCounts]:
    """Return the proxy's counts of one request of each kind, one request at a time."""
    repo = f"bench/count-{uuid.uuid4().hex[:8]}"
    connections_warm(server, repo, proxy)
    # The replica monitor asks the primary once a second on a connection of its own: its
    # trips are the process's, not a request's.
    proxy.ignore_background(BACKGROUND_QUIET_SECONDS)
    out: dict[str, ProxyCounts] = {}
    out["token"] = counted(proxy, lambda: bearer_token(server.url, repo, server.creds, "pull,push"))
    registry = Registry(server.url, repo, server.creds)
    try:
        layer = STATE / "count-layer"
        digest = random_file(layer, 1024 * 1024)
        out["blob_chunked_push"] = counted(
            proxy, lambda: registry.blob_patch_file(layer, digest, 2 * 1024 * 1024)
        )
        small = os.urandom(64 * 1024)
        out["blob_monolithic_push"] = counted(proxy, lambda: registry.blob_post(small))
        config = b'{"architecture":"amd64","os":"linux"}'
        registry.blob_post(config)
        layers = [(digest, layer.stat().st_size), (sha256_digest(small), len(small))]
        manifest: list[str] = []
        out["manifest_put"] = counted(
            proxy, lambda: manifest.append(registry.manifest_put("v1", config, layers))
        )
        base = f"{server.url}/v2/{repo}"
        requests_ = {
            "manifest_get_tag": ("GET", f"{base}/manifests/v1"),
            "manifest_get_digest": ("GET", f"{base}/manifests/{manifest[0]}"),
            "blob_head": ("HEAD", f"{base}/blobs/{digest}"),
            "blob_get": ("GET", f"{base}/blobs/{digest}"),
        }
        for kind, (method, url) in requests_.items():
            for state in ("cold", "warm"):
                out[f"{kind}_{state}"] = counted(proxy, partial(_ask, registry, method, url))
    finally:
        registry.close()
    return out


def _ask(registry: Registry, method: str, url: str) -> None:
    """Send one pull request; a blob GET stops at the registry's answer (a redirect or bytes)."""
    answer = registry.session.request(
        method, url, headers={"Accept": MANIFEST_TYPE}, allow_redirects=False, timeout=60
    )
    answer.close()
    if answer.status_code not in (200, 307):
        raise RuntimeError(f"{method} {url}: HTTP {answer.status_code} {answer.text[:300]}")


def push_pull(side: Side, proxy: DelayProxy, layers: int, layer_mib: float) -> dict[str, float]:
    """Push a fresh image into ``side`` with skopeo and pull it back; time both, count trips."""
    image = STATE / "image"
    build_image(image, layers, layer_mib)
    repo = f"bench/geo-{uuid.uuid4().hex[:8]}"
    ref = f"docker://{side.server.url.removeprefix('http://')}/{repo}:v1"
    proxy.rtt_ms = side.rtt_ms
    out: dict[str, float] = {}
    before = proxy.snapshot()
    out["push_s"] = skopeo(f"oci:{image}:v1", ref, dest_creds=side.server.creds)
    pushed = proxy.snapshot()
    pulled_to = fresh_dir(STATE / "pulled")
    out["pull_s"] = skopeo(ref, f"oci:{pulled_to}:v1", src_creds=side.server.creds)
    pulled = proxy.snapshot()
    if not (pulled_to / "index.json").exists():
        raise RuntimeError(f"{side.name}: the pull wrote no image")
    if side.far:
        out["push_round_trips"] = (pushed - before).round_trips
        out["pull_round_trips"] = (pulled - pushed).round_trips
    return out


def run(*, quick: bool, runs: int, replica: bool = False) -> dict[str, Any]:
    """Run the case; return and save its results."""
    layers, layer_mib = (2, 0.25) if quick else (9, 8 / 9)
    rtts = (20,) if quick else (50, 100)
    samples: dict[str, dict[str, list[float]]] = {}
    connections: dict[str, dict[str, list[int]]] = {}
    with ExitStack() as stack:
        s3 = stack.enter_context(moto())
        env = quay_env(reset_database(DATABASE), QUAY_GEO_HEARTBEAT_SECONDS="0")
        token = geo_setup(env, {NEAR: (s3, "redirect"), FAR: (s3, "redirect")})
        broker_purge(env, QUEUES)
        proxy = stack.enter_context(DelayProxy(urlsplit(servers.PG).port or 5432))
        # Each region's web processes share a region-local cache (a Redis database of its own),
        # as docs/operations.md ("Caches") recommends for more than one web process per region.
        far_env = dict(
            env, DATABASE_URL=_through(proxy), QUAY_GEO_REGION_CACHE_URL=f"{servers.REDIS}/14"
        )
        near_env = dict(env, QUAY_GEO_REGION_CACHE_URL=f"{servers.REDIS}/13")
        near = stack.enter_context(quay(near_env, token, preference=NEAR))
        far_servers = {"": stack.enter_context(quay(far_env, token, preference=FAR))}
        if replica:
            standby_url = stack.enter_context(standby())
            replica_env = dict(
                far_env,
                DATABASE_REPLICA_URL=f"{standby_url}/{DATABASE}",
                QUAY_GEO_REGION_CACHE_URL=f"{servers.REDIS}/12",
            )
            far_servers[" + replica"] = stack.enter_context(
                quay(replica_env, token, preference=FAR)
            )
        sides = [Side("near", near, 0, False)] + [
            Side(f"far {rtt} ms{suffix}", server, rtt, True)
            for suffix, server in far_servers.items()
            for rtt in rtts
        ]
        for index in range(runs):
            shift = index % len(sides)
            for side in sides[shift:] + sides[:shift]:
                got = push_pull(side, proxy, layers, layer_mib)
                for key, value in got.items():
                    samples.setdefault(side.name, {}).setdefault(key, []).append(value)
                print(
                    f"  run {index + 1}/{runs} {side.name}: "
                    + ", ".join(f"{k}={v:.2f}" for k, v in got.items()),
                    flush=True,
                )
            for suffix, server in far_servers.items():
                name = f"far {max(rtts)} ms{suffix}"
                proxy.rtt_ms = max(rtts)
                for kind, counts in kinds_count(server, proxy).items():
                    samples[name].setdefault(f"rt_{kind}", []).append(counts.round_trips)
                    connections.setdefault(name, {}).setdefault(kind, []).append(counts.connections)
                print(f"  run {index + 1}/{runs} {name}: round trips counted", flush=True)
    summaries = {name: {k: summary(v) for k, v in per.items()} for name, per in samples.items()}
    ratios = {
        side: {
            what: stats[f"{what}_s"]["median"] / summaries["near"][f"{what}_s"]["median"]
            for what in ("push", "pull")
        }
        for side, stats in summaries.items()
        if side != "near"
    }
    result = {
        "params": {
            "layers": layers,
            "layer_mib": layer_mib,
            "rtts_ms": list(rtts),
            "replica": replica,
            "runs": runs,
            "quick": quick,
            "web": "gunicorn 2 workers gthread 8 threads per region, heartbeats off",
            "proxy": "tests.delayproxy.DelayProxy, handshake on (a new connection: one more RTT)",
            "counted_at_ms": max(rtts),
        },
        "samples": samples,
        "summary": summaries,
        "ratios": ratios,
        "connections_opened": connections,
    }
    path = save("geo", result)
    print(sides_table(summaries, ["push_s", "pull_s", "push_round_trips", "pull_round_trips"]))
    print(
        "\nfar/near (medians): "
        + "; ".join(
            f"{side}: push {r['push']:.2f}, pull {r['pull']:.2f}" for side, r in ratios.items()
        )
    )
    kinds = sorted({m for per in summaries.values() for m in per if m.startswith("rt_")})
    print(sides_table({k: v for k, v in summaries.items() if "rt_token" in v}, kinds))
    print(f"results: {path}")
    return result
