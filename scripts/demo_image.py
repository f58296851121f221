#!/usr/bin/env python3
"""Write a small OCI image layout with random layers, for trying a registry without internet.

usage: demo_image.py DIRECTORY [--tag TAG] [--layers N] [--layer-mib M]
The image is then at oci:DIRECTORY:TAG (for skopeo).
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any


def _blob(root: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(index: int, size: int) -> tuple[bytes, str]:
    payload = os.urandom(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"layer{index}.bin")
        info.size = len(payload)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(payload))
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0), diff_id


def build(root: Path, tag: str, layers: int, layer_bytes: int) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    descriptors, diff_ids = [], []
    for index in range(layers):
        data, diff_id = _layer(index, layer_bytes)
        descriptors.append(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(root, data)}
        )
        diff_ids.append(diff_id)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/layer0.bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(root, json.dumps(config).encode()),
        },
        "layers": descriptors,
    }
    manifest_descriptor = _blob(root, json.dumps(manifest).encode())
    index_path = root / "index.json"
    layout_index: dict[str, Any] = (
        json.loads(index_path.read_text())
        if index_path.exists()
        else {"schemaVersion": 2, "manifests": []}
    )
    layout_index["manifests"] = [
        m
        for m in layout_index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag
    ] + [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            **manifest_descriptor,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }
    ]
    index_path.write_text(json.dumps(layout_index))
    return str(manifest_descriptor["digest"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--tag", default="v1")
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--layer-mib", type=float, default=4)
    args = parser.parse_args()
    digest = build(args.directory, args.tag, args.layers, int(args.layer_mib * 1024 * 1024))
    print(f"oci:{args.directory}:{args.tag} {digest}")


if __name__ == "__main__":
    main()
