"""Engines under test: one factory per engine kind, each on a fresh bucket of a real server.

A new engine joins the contract suite with one ``make_<kind>`` function and one line in
``FACTORIES``.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from storage_engines.base import StorageEngine
from storage_engines.registry import engine_create
from tests import servers


@dataclass
class EngineUnderTest:
    """An engine plus what a test needs to look behind it."""

    kind: str
    options: dict[str, Any]
    engine: StorageEngine
    #: Every object key the backend holds for this engine (relative to its storage_path).
    list_keys: Callable[[], list[str]]
    #: Native upload sessions still open (S3 multipart uploads); 0 where there is no such thing.
    open_sessions: Callable[[], int] = lambda: 0
    extra: dict[str, Any] = field(default_factory=dict)

    def remake(self) -> StorageEngine:
        """Return a new engine instance on the same backend, as another process would build."""
        if self.kind == "memory":
            return self.engine  # its state lives in the instance itself
        return engine_create(
            kind=self.kind, location_id=self.engine.location_id, options=self.options
        )


def _build(kind: str, options: dict[str, Any], location_id: str | None = None) -> StorageEngine:
    return engine_create(kind=kind, location_id=location_id or f"{kind}_test", options=options)


def make_memory(tmp_path: Path) -> EngineUnderTest:
    engine = _build("memory", {})
    return EngineUnderTest(
        "memory",
        {},
        engine,
        list_keys=lambda: sorted(engine.objects),  # type: ignore[attr-defined]
        open_sessions=lambda: len(engine.sessions),  # type: ignore[attr-defined]
    )


def make_local(tmp_path: Path) -> EngineUnderTest:
    root = tmp_path / "local-store"
    root.mkdir()
    options = {"storage_path": str(root)}

    def keys() -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    return EngineUnderTest("local", options, _build("local", options), list_keys=keys)


def _s3_client(endpoint: str, key: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def _s3_inspectors(
    client: Any, bucket: str, prefix: str
) -> tuple[Callable[[], list[str]], Callable[[], int]]:
    def keys() -> list[str]:
        found: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [obj["Key"][len(prefix) :] for obj in page.get("Contents", [])]
        return sorted(found)

    def sessions() -> int:
        return len(client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))

    return keys, sessions


def make_s3(tmp_path: Path, endpoint: str = servers.S3_A) -> EngineUnderTest:
    servers.require("s3_a" if endpoint == servers.S3_A else "s3_b")
    bucket = servers.new_s3_bucket(endpoint, "testing", "testing")
    options = {
        "s3_bucket": bucket,
        "endpoint_url": endpoint,
        "s3_region": "us-east-1",
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
        "storage_path": "registry",
        "addressing_style": "path",
    }
    keys, sessions = _s3_inspectors(_s3_client(endpoint, "testing", "testing"), bucket, "registry/")
    return EngineUnderTest(
        "s3", options, _build("s3", options), keys, sessions, extra={"bucket": bucket}
    )


def make_s3_b(tmp_path: Path) -> EngineUnderTest:
    return make_s3(tmp_path, endpoint=servers.S3_B)


def make_radosgw(tmp_path: Path) -> EngineUnderTest:
    servers.require("rgw")
    bucket = servers.new_s3_bucket(servers.RGW, "RGWACCESSKEY", "RGWSECRETKEY")
    port = int(servers.RGW.rsplit(":", 1)[1])
    options = {
        "hostname": "127.0.0.1",
        "port": port,
        "is_secure": False,
        "access_key": "RGWACCESSKEY",
        "secret_key": "RGWSECRETKEY",
        "bucket_name": bucket,
        "storage_path": "registry",
    }
    keys, sessions = _s3_inspectors(
        _s3_client(servers.RGW, "RGWACCESSKEY", "RGWSECRETKEY"), bucket, "registry/"
    )
    return EngineUnderTest(
        "radosgw", options, _build("radosgw", options), keys, sessions, extra={"bucket": bucket}
    )


def make_gcs(tmp_path: Path, endpoint: str = servers.GCS) -> EngineUnderTest:
    servers.require("gcs" if endpoint == servers.GCS else "gcs_b")
    bucket = servers.new_gcs_bucket(endpoint)
    options = {
        "bucket_name": bucket,
        "project_id": servers.GCS_PROJECT,
        "api_endpoint": endpoint,
        "anonymous": True,
        "storage_path": "registry",
    }
    client = servers.gcs_client(endpoint)

    def keys() -> list[str]:
        blobs = client.list_blobs(bucket, prefix="registry/")
        return sorted(b.name[len("registry/") :] for b in blobs)

    return EngineUnderTest("gcs", options, _build("gcs", options), keys, extra={"bucket": bucket})


def make_swift(tmp_path: Path) -> EngineUnderTest:
    import json

    servers.require("swift")
    container = servers.new_swift_container(servers.SWIFT_AUTH, "test:tester", "testing")
    options = {
        "auth_url": servers.SWIFT_AUTH,
        "auth_version": "1",
        "swift_user": "test:tester",
        "swift_password": "testing",
        "swift_container": container,
        "storage_path": "registry",
        "temp_url_key": "contract-temp-url-key",
    }
    conn = servers.swift_connection()
    conn.post_account(headers={"X-Account-Meta-Temp-URL-Key": "contract-temp-url-key"})

    def keys() -> list[str]:
        # The segments of a listed SLO manifest are part of that object; orphans still show.
        _, listing = conn.get_container(container, prefix="registry/", full_listing=True)
        names = {o["name"] for o in listing}
        referenced: set[str] = set()
        for name in names:
            if conn.head_object(container, name).get("x-static-large-object") == "True":
                _, body = conn.get_object(container, name, query_string="multipart-manifest=get")
                referenced |= {s["name"].split("/", 2)[2] for s in json.loads(body)}
        return sorted(name[len("registry/") :] for name in names - referenced)

    return EngineUnderTest(
        "swift", options, _build("swift", options), keys, extra={"container": container}
    )


FACTORIES: dict[str, Callable[[Path], EngineUnderTest]] = {
    "memory": make_memory,
    "local": make_local,
    "s3": make_s3,
    "radosgw": make_radosgw,
    "gcs": make_gcs,
    "swift": make_swift,
}
KINDS = list(FACTORIES)
#: Kinds whose servers enforce presigned URL signatures and expiry.
ENFORCING_URL_KINDS = ("radosgw", "swift")


@pytest.fixture(params=KINDS)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> EngineUnderTest:
    return FACTORIES[request.param](tmp_path)


@pytest.fixture
def make_engine(tmp_path: Path) -> Callable[[str], EngineUnderTest]:
    """Return a factory building a fresh engine of any kind (``s3_b``: the second S3 region)."""
    factories = {**FACTORIES, "s3_b": make_s3_b}
    counter = iter(range(1000))

    def build(kind: str) -> EngineUnderTest:
        path = tmp_path / f"e{next(counter)}"
        path.mkdir()
        return factories[kind](path)

    return build


def random_bytes(size: int) -> bytes:
    """Return ``size`` random bytes: no repeated block, so swapped parts change the digest."""
    return os.urandom(size)
