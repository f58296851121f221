#!/usr/bin/env python3
"""Save or restore every bucket of an S3 endpoint to or from a directory.

`make run` uses this to keep the data of its moto servers (which hold everything in memory)
across restarts: `save` on shutdown, `restore` on start.

usage: s3_snapshot.py save|restore ENDPOINT DIRECTORY
"""

import sys
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config


def client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="demo",
        aws_secret_access_key="demo",  # noqa: S106 - moto accepts any key
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def save(endpoint: str, root: Path) -> int:
    s3 = client(endpoint)
    tmp = root.with_name(root.name + ".saving")
    count = 0
    for bucket in s3.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        (tmp / name).mkdir(parents=True, exist_ok=True)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                target = tmp / name / "objects" / obj["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(name, obj["Key"], str(target))
                count += 1
    if root.exists():
        old = root.with_name(root.name + ".old")
        root.rename(old)
        _rmtree(old)
    if tmp.exists():
        tmp.rename(root)
    return count


def restore(endpoint: str, root: Path) -> int:
    if not root.is_dir():
        return 0
    s3 = client(endpoint)
    count = 0
    for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        s3.create_bucket(Bucket=bucket_dir.name)
        objects = bucket_dir / "objects"
        for path in sorted(p for p in objects.rglob("*") if p.is_file()):
            s3.upload_file(str(path), bucket_dir.name, str(path.relative_to(objects)))
            count += 1
    return count


def _rmtree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] not in {"save", "restore"}:
        print(__doc__, file=sys.stderr)
        return 2
    action, endpoint, directory = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    count = (save if action == "save" else restore)(endpoint, directory)
    print(f"{action}: {count} objects ({endpoint} <-> {directory})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
