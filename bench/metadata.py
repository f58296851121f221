"""Case 6: metadata rate with wrk (HEAD of a blob, GET of a manifest), quay-geo vs distribution."""

import json
import re
import subprocess
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests

from .procs import STATE, PeakRss, clear_skopeo_cache, fresh_dir
from .push_pull import PEER, build_image, skopeo
from .report import compare_table, save, summary
from .servers import (
    distribution,
    fs_storage,
    moto,
    quay,
    quay_env,
    quay_setup,
    reset_database,
    s3_storage,
)

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONNECTIONS = 16


def bearer_token(url: str, repo: str, creds: str, actions: str = "pull") -> str:
    """Return a token for ``actions`` on ``repo`` from the realm of ``url``'s 401 challenge."""
    challenge = requests.get(f"{url}/v2/", timeout=10).headers["WWW-Authenticate"]
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    user, password = creds.split(":", 1)
    answer = requests.get(
        params.pop("realm"),
        params={"service": params.get("service", ""), "scope": f"repository:{repo}:{actions}"},
        auth=(user, password),
        timeout=30,
    )
    answer.raise_for_status()
    body = answer.json()
    return str(body.get("token") or body["access_token"])


def load(url: str, method: str, headers: dict[str, str], seconds: int) -> dict[str, float]:
    """Drive ``url`` with ``CONNECTIONS`` keep-alive connections; return requests/s, errors."""
    return (ab_head if method == "HEAD" else wrk_get)(url, headers, seconds)


def ab_head(url: str, headers: dict[str, str], seconds: int) -> dict[str, float]:
    """Run ApacheBench HEADs: wrk 4.1 waits for a body after a HEAD answer and stalls."""
    args = ["ab", "-k", "-i", "-c", str(CONNECTIONS), "-t", str(seconds), "-n", "10000000"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r"Failed requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rate, "errors": float(failed), "requests": float(total)}


def wrk_get(url: str, headers: dict[str, str], seconds: int) -> dict[str, float]:
    """Run wrk GETs; return requests/s and the count of non-2xx/3xx answers."""
    args = ["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{seconds}s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rate, "errors": float(bad.group(1)) if bad else 0.0, "requests": float(total)}


def image_digests(image: Path) -> tuple[str, str]:
    """Return the manifest digest and the first layer digest of an OCI layout."""
    manifest_digest = json.loads((image / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((image / "blobs" / "sha256" / manifest_digest.split(":")[1]).read_text())
    return manifest_digest, manifest["layers"][0]["digest"]


def targets(url: str, repo: str, image: Path) -> dict[str, tuple[str, str, dict[str, str]]]:
    _, blob_digest = image_digests(image)
    return {
        "head_blob": ("HEAD", f"{url}/v2/{repo}/blobs/{blob_digest}", {}),
        "get_manifest": ("GET", f"{url}/v2/{repo}/manifests/v1", {"Accept": MANIFEST}),
    }


def run(*, quick: bool, runs: int, storage: str = "s3") -> dict[str, Any]:
    """Run the case; return and save its results."""
    seconds = 1 if quick else 10
    samples: dict[str, dict[str, list[float]]] = {"quay-geo": {}, "distribution": {}}
    checks: dict[str, dict[str, int]] = {"quay-geo": {}, "distribution": {}}
    image = STATE / "image-small"
    build_image(image, 2, 2.0)
    repo = f"bench/meta-{uuid.uuid4().hex[:8]}"
    with ExitStack() as stack:
        s3 = stack.enter_context(moto())
        env = quay_env(reset_database("quay_geo_bench_meta"))
        if storage == "s3":
            token = quay_setup(env, s3, s3.fresh_bucket("quay"))
            peer_storage = s3_storage(s3, s3.fresh_bucket("reg"))
        else:
            token = quay_setup(env, s3, "", local=fresh_dir(STATE / "quay-fs"))
            peer_storage = fs_storage(fresh_dir(STATE / "registry-fs"))
        ours = stack.enter_context(quay(env, token))
        peer = stack.enter_context(distribution(peer_storage))
        sides = {
            "quay-geo": (ours.url, ours.pid, ours.creds),
            "distribution": (peer.url, peer.pid, ""),
        }
        plans = {}
        for name, (url, _pid, creds) in sides.items():
            clear_skopeo_cache()
            skopeo(
                f"oci:{image}:v1",
                f"docker://{url.removeprefix('http://')}/{repo}:v1",
                dest_creds=creds,
            )
            auth = {"Authorization": f"Bearer {bearer_token(url, repo, creds)}"} if creds else {}
            plans[name] = {
                k: (m, u, {**h, **auth}) for k, (m, u, h) in targets(url, repo, image).items()
            }
            for key, (method, url_, headers) in plans[name].items():
                answer = requests.request(
                    method, url_, headers=headers, allow_redirects=False, timeout=10
                )
                checks[name][key] = answer.status_code
                if answer.status_code >= 400:
                    raise RuntimeError(
                        f"{name} {key}: HTTP {answer.status_code} {answer.text[:300]}"
                    )
        for index in range(runs):
            order = list(sides) if index % 2 == 0 else list(reversed(sides))
            for key in ("head_blob", "get_manifest"):
                for name in order:
                    method, url_, headers = plans[name][key]
                    with PeakRss(sides[name][1]) as rss:
                        got = load(url_, method, headers, seconds)
                    if got["errors"]:
                        raise RuntimeError(f"{name} {key}: {got['errors']:.0f} error answers")
                    samples[name].setdefault(f"{key}_rps", []).append(got["rps"])
                    samples[name].setdefault(f"{key}_rss_mb", []).append(rss.peak / 1e6)
                    print(
                        f"  run {index + 1}/{runs} {name} {key}: {got['rps']:.0f} req/s, "
                        f"server RSS peak {rss.peak / 1e6:.0f} MB",
                        flush=True,
                    )
    summaries = {name: {k: summary(v) for k, v in per.items()} for name, per in samples.items()}
    result = {
        "params": {
            "seconds": seconds,
            "connections": CONNECTIONS,
            "threads": 2,
            "runs": runs,
            "quick": quick,
            "peer": PEER,
            "storage": storage,
            "tools": "HEAD: ab -k -i; GET: wrk -t 2",
            "status_codes": checks,
            "gunicorn": "2 workers gthread 8 threads",
        },
        "samples": samples,
        "summary": summaries,
    }
    path = save(f"metadata-{storage}", result)
    a, b = summaries["quay-geo"], summaries["distribution"]
    print(
        compare_table(
            [(m, PEER, a[m], b[m]) for m in ("head_blob_rps", "get_manifest_rps")], "req/s"
        )
    )
    print(f"results: {path}")
    return result
