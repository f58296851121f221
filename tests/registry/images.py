"""OCI image layouts built at test time with umoci, and a multi-architecture index made by hand."""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=300)


def oci_image_build(
    layout: Path, tag: str, layer_sizes: list[int], *, architecture: str = "amd64"
) -> None:
    """Add an image with one random file per layer (``layer_sizes`` bytes) at ``layout:tag``."""
    if not (layout / "index.json").exists():
        _run("umoci", "init", "--layout", str(layout))
    image = f"{layout}:{tag}"
    _run("umoci", "new", "--image", image)
    with tempfile.TemporaryDirectory() as work:
        for number, size in enumerate(layer_sizes, 1):
            bundle = Path(work) / f"bundle{number}"
            _run("umoci", "unpack", "--rootless", "--image", image, str(bundle))
            (bundle / "rootfs" / f"layer{number}.bin").write_bytes(os.urandom(size))
            _run("umoci", "repack", "--image", image, str(bundle))
            shutil.rmtree(bundle)
    _run(
        "umoci",
        "config",
        "--image",
        image,
        "--config.cmd",
        "/bin/true",
        "--architecture",
        architecture,
        "--os",
        "linux",
    )
    _run("umoci", "gc", "--layout", str(layout))


def layout_blob(layout: Path, digest: str) -> bytes:
    algorithm, _, hexdigest = digest.partition(":")
    return (layout / "blobs" / algorithm / hexdigest).read_bytes()


def layout_descriptor(layout: Path, tag: str) -> dict[str, Any]:
    """Return the descriptor ``index.json`` gives for a tag."""
    index = json.loads((layout / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return dict(descriptor)
    raise KeyError(tag)


def manifest_of(layout: Path, tag: str) -> dict[str, Any]:
    """Return the manifest document of a tag."""
    return dict(json.loads(layout_blob(layout, layout_descriptor(layout, tag)["digest"])))


def layer_digests(layout: Path, tag: str) -> list[str]:
    """Return the config and layer digests of an image tag."""
    manifest = manifest_of(layout, tag)
    return [manifest["config"]["digest"]] + [layer["digest"] for layer in manifest["layers"]]


def oci_index_build(layout: Path, tag: str, platforms: dict[str, str]) -> str:
    """Write an index of ``platforms`` (architecture -> image tag) at ``tag``; return its digest."""
    manifests = []
    for architecture, image_tag in platforms.items():
        descriptor = layout_descriptor(layout, image_tag)
        manifests.append(
            {
                "mediaType": descriptor["mediaType"],
                "digest": descriptor["digest"],
                "size": descriptor["size"],
                "platform": {"architecture": architecture, "os": "linux"},
            }
        )
    content = json.dumps(
        {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": manifests}
    ).encode()
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(content)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"].append(
        {
            "mediaType": INDEX_TYPE,
            "digest": digest,
            "size": len(content),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    )
    (layout / "index.json").write_text(json.dumps(index))
    return digest
