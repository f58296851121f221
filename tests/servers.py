"""The real object-store servers the test suite talks to, and per-test isolation helpers.

The servers are started by ``scripts/test-servers.sh start`` (``make test`` does it) and all
listen on 127.0.0.1. Each URL below can be pointed elsewhere with its environment variable.

Tests never skip when a server is missing: :func:`require` raises :class:`ServerUnavailable`,
so the test fails with a message that says how to start it. Instead of resetting servers between
tests, each test makes its own bucket or container with a random name (``new_s3_bucket``,
``new_gcs_bucket``, ``new_swift_container``).

This module imports no Django and imports boto3, google-cloud-storage and python-swiftclient
only inside the helpers that need them.
"""

from __future__ import annotations

import http.client
import os
import re
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.cloud import storage
    from mypy_boto3_s3 import S3Client
    from swiftclient.client import Connection as SwiftConnection


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


# --------------------------------------------------------------------------- endpoints
#: moto_server, S3 "region A" and "region B": two independent servers
S3_A = _env("QUAY_GEO_TEST_S3_A", "http://127.0.0.1:5000")
S3_B = _env("QUAY_GEO_TEST_S3_B", "http://127.0.0.1:5002")
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing"
S3_REGION = "us-east-1"

#: Ceph radosgw (real S3 implementation; signatures are enforced)
RGW = _env("QUAY_GEO_TEST_RGW", "http://127.0.0.1:7480")
RGW_ACCESS_KEY = "RGWACCESSKEY"
RGW_SECRET_KEY = "RGWSECRETKEY"

#: gcp-storage-emulator (anonymous credentials)
GCS = _env("QUAY_GEO_TEST_GCS", "http://127.0.0.1:9023")
GCS_B = _env("QUAY_GEO_TEST_GCS_B", "http://127.0.0.1:9024")
GCS_PROJECT = "test-project"

#: OpenStack Swift, v1 (tempauth) authentication; two accounts
SWIFT_AUTH = _env("QUAY_GEO_TEST_SWIFT_AUTH", "http://127.0.0.1:8080/auth/v1.0")
SWIFT_USER = "test:tester"
SWIFT_KEY = "testing"
SWIFT_USER_2 = "test2:tester2"
SWIFT_KEY_2 = "testing2"

#: CNCF distribution (docker-registry), filesystem storage: a peer registry
REGISTRY_PEER = _env("QUAY_GEO_TEST_REGISTRY_PEER", "http://127.0.0.1:5001")


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str
    region: str = S3_REGION


@dataclass(frozen=True)
class SwiftAccount:
    auth_url: str
    user: str
    key: str


S3_A_ENDPOINT = S3Endpoint(S3_A, S3_ACCESS_KEY, S3_SECRET_KEY)
S3_B_ENDPOINT = S3Endpoint(S3_B, S3_ACCESS_KEY, S3_SECRET_KEY)
RGW_ENDPOINT = S3Endpoint(RGW, RGW_ACCESS_KEY, RGW_SECRET_KEY)
SWIFT_ACCOUNT = SwiftAccount(SWIFT_AUTH, SWIFT_USER, SWIFT_KEY)
SWIFT_ACCOUNT_2 = SwiftAccount(SWIFT_AUTH, SWIFT_USER_2, SWIFT_KEY_2)


@dataclass(frozen=True)
class Server:
    """One server as :func:`require` knows it."""

    name: str
    url: str
    #: argument of ``scripts/test-servers.sh start`` that starts it
    script_name: str
    env_var: str


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("s3_a", S3_A, "moto", "QUAY_GEO_TEST_S3_A"),
        Server("s3_b", S3_B, "moto", "QUAY_GEO_TEST_S3_B"),
        Server("rgw", RGW, "ceph", "QUAY_GEO_TEST_RGW"),
        Server("gcs", GCS, "gcs", "QUAY_GEO_TEST_GCS"),
        Server("gcs_b", GCS_B, "gcs", "QUAY_GEO_TEST_GCS_B"),
        Server("swift", SWIFT_AUTH, "swift", "QUAY_GEO_TEST_SWIFT_AUTH"),
        Server("registry", REGISTRY_PEER, "registry", "QUAY_GEO_TEST_REGISTRY_PEER"),
    )
}
# names of scripts/test-servers.sh that are not keys of SERVERS
_ALIASES: dict[str, tuple[str, ...]] = {
    "moto": ("s3_a", "s3_b"),
    "s3": ("s3_a", "s3_b"),
    "ceph": ("rgw",),
}


class ServerUnavailable(RuntimeError):
    """A server the test needs does not answer. The test fails; it is never skipped."""


# --------------------------------------------------------------------------- reachability
def reachable(url: str, timeout: float = 1.0) -> bool:
    """True if an HTTP server answers at ``url`` (any status counts). No proxy is used."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = conn_cls(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        conn.getresponse().read(0)
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return True


def require(name: str) -> None:
    """Raise :class:`ServerUnavailable` unless server ``name`` answers.

    ``name`` is a key of :data:`SERVERS` (``s3_a``, ``s3_b``, ``rgw``, ``gcs``, ``gcs_b``,
    ``swift``, ``registry``) or a name of ``scripts/test-servers.sh`` (``moto``, ``ceph``, ...).
    """
    if name in SERVERS:
        wanted: tuple[str, ...] = (name,)
    elif name in _ALIASES:
        wanted = _ALIASES[name]
    else:
        raise ValueError(f"unknown test server {name!r}; known: {', '.join(sorted(SERVERS))}")
    for key in wanted:
        server = SERVERS[key]
        if not reachable(server.url):
            raise ServerUnavailable(
                f"test server {server.name!r} is not reachable at {server.url} "
                f"(override with ${server.env_var}). Run the tests with `make test`, which starts "
                f"every server, or start it with `scripts/test-servers.sh start "
                f"{server.script_name}`."
            )


# --------------------------------------------------------------------------- isolation helpers
_NAME_PREFIX = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


def unique_name(prefix: str = "t") -> str:
    """A bucket/container name valid on S3, GCS and Swift: ``<prefix>-<16 hex digits>``."""
    if not _NAME_PREFIX.match(prefix):
        raise ValueError(f"bad name prefix {prefix!r}: use 1-31 of [a-z0-9-]")
    return f"{prefix}-{secrets.token_hex(8)}"


def s3_client(
    endpoint: str = S3_A,
    key: str = S3_ACCESS_KEY,
    secret: str = S3_SECRET_KEY,
    region: str = S3_REGION,
) -> S3Client:
    """A boto3 S3 client for a test server (path-style addressing, SigV4)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def new_s3_bucket(
    endpoint: str = S3_A,
    key: str = S3_ACCESS_KEY,
    secret: str = S3_SECRET_KEY,
    *,
    region: str = S3_REGION,
    prefix: str = "t",
) -> str:
    """Create an empty bucket with a random name and return its name."""
    name = unique_name(prefix)
    kwargs: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3_client(endpoint, key, secret, region).create_bucket(**kwargs)
    return name


def gcs_client(endpoint: str = GCS, project: str = GCS_PROJECT) -> storage.Client:
    """A google-cloud-storage client for one emulator, chosen by ``api_endpoint``.

    It does not read the process-global ``STORAGE_EMULATOR_HOST``, so clients for several
    emulators can live in one process.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )


def new_gcs_bucket(endpoint: str = GCS, *, prefix: str = "t") -> str:
    """Create an empty bucket with a random name on a GCS emulator and return its name."""
    name = unique_name(prefix)
    gcs_client(endpoint).create_bucket(name)
    return name


def swift_connection(
    auth_url: str = SWIFT_AUTH, user: str = SWIFT_USER, key: str = SWIFT_KEY
) -> SwiftConnection:
    """A python-swiftclient connection using v1 (tempauth) authentication."""
    from swiftclient.client import Connection

    return Connection(authurl=auth_url, user=user, key=key, auth_version="1", retries=1)


def new_swift_container(
    auth_url: str = SWIFT_AUTH,
    user: str = SWIFT_USER,
    key: str = SWIFT_KEY,
    *,
    prefix: str = "t",
) -> str:
    """Create an empty container with a random name and return its name."""
    name = unique_name(prefix)
    conn = swift_connection(auth_url, user, key)
    try:
        conn.put_container(name)
    finally:
        conn.close()
    return name


# --------------------------------------------------------------------------- whole-server resets
def _post_or_get(method: str, url: str, timeout: float = 10.0) -> int:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path or "/")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def reset_moto(endpoint: str = S3_A) -> None:
    """Drop every bucket of one moto server (affects all tests using it: session use only)."""
    status = _post_or_get("POST", endpoint.rstrip("/") + "/moto-api/reset")
    if status >= 300:
        raise RuntimeError(f"moto reset at {endpoint} answered HTTP {status}")


def wipe_gcs(endpoint: str = GCS) -> None:
    """Drop every bucket of one GCS emulator (affects all tests using it: session use only)."""
    status = _post_or_get("GET", endpoint.rstrip("/") + "/wipe")
    if status >= 300:
        raise RuntimeError(f"GCS emulator wipe at {endpoint} answered HTTP {status}")
