"""Case 1: push and pull of a multi-layer image with skopeo, quay-geo vs distribution."""

import subprocess
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .procs import BIN, ROOT, STATE, PeakRss, clear_skopeo_cache, fresh_dir, timed
from .report import compare_table, save, summary
from .servers import (
    S3,
    Quay,
    distribution,
    fs_storage,
    moto,
    quay,
    quay_env,
    quay_setup,
    reset_database,
    s3_storage,
)

PEER = "distribution 2.8.2"


def build_image(path: Path, layers: int, layer_mib: float) -> None:
    """Write a fresh OCI layout of random gzip layers at ``oci:path:v1``."""
    fresh_dir(path)
    subprocess.run(
        [
            str(BIN / "python"),
            "scripts/demo_image.py",
            str(path),
            "--layers",
            str(layers),
            "--layer-mib",
            str(layer_mib),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


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


def run(*, quick: bool, runs: int, storage: str = "s3") -> dict[str, Any]:
    """Run the case; return and save its results."""
    layers, layer_mib = (2, 2.0) if quick else (5, 512 / 5)
    samples: dict[str, dict[str, list[float]]] = {"quay-geo": {}, "distribution": {}}
    with ExitStack() as stack:
        s3: S3 = stack.enter_context(moto())
        env = quay_env(reset_database("quay_geo_bench_push"))
        local = fresh_dir(STATE / "quay-fs") if storage == "fs" else None
        token = quay_setup(env, s3, s3.fresh_bucket("quay"), local=local)
        server: Quay = stack.enter_context(quay(env, token))
        for index in range(runs):
            image = STATE / "image"
            build_image(image, layers, layer_mib)
            repo = f"bench/img-{uuid.uuid4().hex[:8]}"
            order = ["quay-geo", "distribution"] if index % 2 == 0 else ["distribution", "quay-geo"]
            for name in order:
                if name == "quay-geo":
                    got = one_side(name, server.url, server.pid, image, repo, server.creds)
                else:
                    store = (
                        s3_storage(s3, s3.fresh_bucket("reg"))
                        if storage == "s3"
                        else fs_storage(fresh_dir(STATE / "registry-fs"))
                    )
                    with distribution(store) as peer:
                        got = one_side(name, peer.url, peer.pid, image, repo, "")
                for key, value in got.items():
                    samples[name].setdefault(key, []).append(value)
                print(
                    f"  run {index + 1}/{runs} {name}: "
                    + ", ".join(f"{k}={v:.2f}" for k, v in got.items()),
                    flush=True,
                )
            # Each run pushes new blobs: what earlier runs stored only slows moto down.
            s3.empty_buckets()
            if local is not None:
                fresh_dir(local)
    result = {
        "params": {
            "storage": storage,
            "layers": layers,
            "layer_mib": layer_mib,
            "runs": runs,
            "quick": quick,
            "peer": PEER,
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
    print(f"results: {path}")
    return result
