"""The object stores of ``scripts/test-servers.sh`` as the benchmarks use them.

Cases 1 (on Ceph RGW and Swift) and 2 (replication) need real servers that the test suite already
knows how to run: ``test_servers(...)`` starts them with the same script (fixed ports, see its
header) and stops at the end only those that were not running before, so a developer's servers
(or another engineer's test run) are left alone. Each ``Store`` then gives what a case needs from
one server: fresh buckets with unique names, their listing, their removal, a quay-geo location
(``manage.py addlocation`` arguments), an rclone remote (``RCLONE_CONFIG_<NAME>_*`` environment
variables: no rclone config file anywhere) and distribution's storage YAML.
"""

import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
from botocore.config import Config

from .procs import ROOT

SCRIPT = ROOT / "scripts" / "test-servers.sh"
#: Ceph's first start (mkfs of the monitor and OSD) takes ~10 s here; a loaded machine more.
START_TIMEOUT = 600.0
STOP_TIMEOUT = 120.0
#: Listing and deleting are bounded per request; a whole bucket of a benchmark has < 1,000 keys.
REQUEST_TIMEOUT = 60.0
REGION = "us-east-1"


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise TimeoutError(f"scripts/test-servers.sh {' '.join(args)}: over {timeout:g}s") from exc


def _running(server: str) -> bool:
    """Return True when every process of ``server`` is alive (the script's ``status``)."""
    return _script("status", server, timeout=30).returncode == 0


@contextmanager
def test_servers(*servers: str) -> Iterator[None]:
    """Make sure ``servers`` (names of ``scripts/test-servers.sh``) run until the block ends.

    A server already running and healthy is left as it is by the script; at the end only the
    servers this call found not running are stopped again.
    """
    before = {server for server in servers if _running(server)}
    started = [server for server in servers if server not in before]
    result = _script("start", *servers, timeout=START_TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(
            f"scripts/test-servers.sh start {' '.join(servers)} failed:\n"
            f"{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )
    try:
        yield
    finally:
        if started:
            _script("stop", *started, timeout=STOP_TIMEOUT)


def unique_name(prefix: str) -> str:
    """Return a bucket/container name valid on S3, GCS and Swift, new on every call."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Store(Protocol):
    """What the benchmarks need from one object-store server."""

    @property
    def name(self) -> str: ...

    @property
    def server(self) -> str:
        """The ``scripts/test-servers.sh`` server it belongs to."""
        ...

    @property
    def kind(self) -> str:
        """quay-geo's engine kind for it."""
        ...

    def bucket_create(self, prefix: str) -> str: ...

    def bucket_empty(self, bucket: str) -> None: ...

    def bucket_delete(self, bucket: str) -> None: ...

    def objects(self, bucket: str) -> dict[str, int]: ...

    def quay_options(self, bucket: str) -> list[str]: ...

    def rclone_env(self, remote: str) -> dict[str, str]: ...


def _location(kind: str, **options: object) -> list[str]:
    """Return ``--kind KIND --option NAME=VALUE ...`` arguments of ``manage.py addlocation``."""
    out = ["--kind", kind]
    for name, value in options.items():
        out += ["--option", f"{name}={value}"]
    return out


def _rclone(remote: str, **settings: str) -> dict[str, str]:
    return {f"RCLONE_CONFIG_{remote.upper()}_{k.upper()}": v for k, v in settings.items()}


@dataclass(frozen=True)
class S3Store:
    """An S3 endpoint: moto, or Ceph radosgw (``kind="radosgw"``, quay-geo's RGW engine)."""

    name: str
    server: str
    url: str
    access_key: str
    secret_key: str
    kind: str = "s3"
    #: rclone's ``provider`` of its s3 backend.
    rclone_provider: str = "Other"

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=10,
                read_timeout=REQUEST_TIMEOUT,
                retries={"max_attempts": 3},
                max_pool_connections=16,
            ),
        )

    def bucket_create(self, prefix: str) -> str:
        name = unique_name(prefix)
        self.client().create_bucket(Bucket=name)
        return name

    def bucket_empty(self, bucket: str) -> None:
        client = self.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        # Upload sessions left by an interrupted copy would keep their parts.
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )

    def bucket_delete(self, bucket: str) -> None:
        self.bucket_empty(bucket)
        self.client().delete_bucket(Bucket=bucket)

    def objects(self, bucket: str) -> dict[str, int]:
        found: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                found[item["Key"]] = int(item["Size"])
        return found

    def quay_options(self, bucket: str) -> list[str]:
        host, _, port = self.url.removeprefix("http://").partition(":")
        if self.kind == "radosgw":
            return _location(
                "radosgw",
                hostname=host,
                port=port,
                is_secure="false",
                access_key=self.access_key,
                secret_key=self.secret_key,
                bucket_name=bucket,
            )
        return _location(
            "s3",
            s3_bucket=bucket,
            endpoint_url=self.url,
            s3_access_key=self.access_key,
            s3_secret_key=self.secret_key,
            addressing_style="path",
        )

    def rclone_env(self, remote: str) -> dict[str, str]:
        return _rclone(
            remote,
            type="s3",
            provider=self.rclone_provider,
            endpoint=self.url,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region=REGION,
        )

    def distribution_storage(self, bucket: str) -> str:
        """Return distribution 2.8's ``s3`` driver block for this endpoint (as case 1 on moto)."""
        return (
            f"  s3: {{accesskey: {self.access_key}, secretkey: {self.secret_key}, "
            f'region: {REGION}, regionendpoint: "{self.url}", bucket: {bucket}, secure: false, '
            "v4auth: true, chunksize: 10485760, rootdirectory: /registry}\n"
            "  redirect: {disable: false}"
        )


@dataclass(frozen=True)
class GCSStore:
    """A gcp-storage-emulator (anonymous; its JSON API only)."""

    name: str
    server: str
    url: str
    project: str = "bench-project"
    kind: str = "gcs"

    def client(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def bucket_create(self, prefix: str) -> str:
        name = unique_name(prefix)
        self.client().create_bucket(name, timeout=REQUEST_TIMEOUT)
        return name

    def bucket_empty(self, bucket: str) -> None:
        for blob in list(self.client().list_blobs(bucket, timeout=REQUEST_TIMEOUT)):
            blob.delete(timeout=REQUEST_TIMEOUT)

    def bucket_delete(self, bucket: str) -> None:
        from google.api_core.exceptions import Conflict

        self.bucket_empty(bucket)
        try:
            self.client().bucket(bucket).delete(timeout=REQUEST_TIMEOUT)
        except Conflict:
            # The emulator refuses while an unfinished resumable upload names the bucket, and
            # has no way to cancel one: the empty bucket stays until the emulator is reset.
            print(f"  note: {self.name} keeps the empty bucket {bucket}", flush=True)

    def objects(self, bucket: str) -> dict[str, int]:
        return {
            blob.name: int(blob.size)
            for blob in self.client().list_blobs(bucket, timeout=REQUEST_TIMEOUT)
        }

    def quay_options(self, bucket: str) -> list[str]:
        return _location(
            "gcs",
            bucket_name=bucket,
            api_endpoint=self.url,
            anonymous="true",
            project_id=self.project,
        )

    def rclone_env(self, remote: str) -> dict[str, str]:
        # rclone 1.60 has ``endpoint`` for gcs; anonymous sends no credentials (as quay-geo).
        return _rclone(remote, type="google cloud storage", anonymous="true", endpoint=self.url)


@dataclass(frozen=True)
class SwiftStore:
    """An OpenStack Swift account behind v1 (tempauth) authentication."""

    name: str
    server: str
    auth_url: str
    user: str
    key: str
    kind: str = "swift"

    def connection(self) -> Any:
        from swiftclient.client import Connection

        return Connection(
            authurl=self.auth_url,
            user=self.user,
            key=self.key,
            auth_version="1",
            retries=2,
            timeout=REQUEST_TIMEOUT,
        )

    def bucket_create(self, prefix: str, temp_url_key: str = "") -> str:
        """Create a container; with ``temp_url_key`` its Temp-URL key (for redirects) too."""
        name = unique_name(prefix)
        headers = {"X-Container-Meta-Temp-URL-Key": temp_url_key} if temp_url_key else {}
        self.connection().put_container(name, headers=headers)
        return name

    def bucket_empty(self, bucket: str) -> None:
        connection = self.connection()
        _, listing = connection.get_container(bucket, full_listing=True)
        for item in listing:
            connection.delete_object(bucket, item["name"])

    def bucket_delete(self, bucket: str) -> None:
        self.bucket_empty(bucket)
        self.connection().delete_container(bucket)

    def objects(self, bucket: str) -> dict[str, int]:
        """Return key -> size; a large object (SLO/DLO manifest) is HEADed for its real size."""
        connection = self.connection()
        _, listing = connection.get_container(bucket, full_listing=True)
        found: dict[str, int] = {}
        for item in listing:
            name = str(item["name"])
            found[name] = int(item["bytes"])
            if not name.startswith(("_segments/", "segments/")):
                found[name] = int(connection.head_object(bucket, name)["content-length"])
        return found

    def quay_options(self, bucket: str, temp_url_key: str = "") -> list[str]:
        extra = {"temp_url_key": temp_url_key} if temp_url_key else {}
        return _location(
            "swift",
            auth_url=self.auth_url,
            auth_version="1",
            swift_user=self.user,
            swift_password=self.key,
            swift_container=bucket,
            **extra,
        )

    def rclone_env(self, remote: str) -> dict[str, str]:
        return _rclone(remote, type="swift", user=self.user, key=self.key, auth=self.auth_url)

    def distribution_storage(self, container: str, secret_key: str) -> str:
        """Return distribution 2.8's ``swift`` driver block, redirecting with temporary URLs.

        The driver reads Swift's ``/info``: when ``tempurl`` is enabled it sets ``secretkey`` as
        the container's Temp-URL key (Swift >= 2.3) and answers blob GETs with a redirect to a
        temporary URL, as quay-geo does with ``temp_url_key``.
        """
        return (
            f'  swift: {{authurl: "{self.auth_url}", username: "{self.user}", '
            f'password: "{self.key}", container: {container}, authversion: 1, '
            f'secretkey: "{secret_key}"}}\n'
            "  redirect: {disable: false}"
        )


MOTO_A = S3Store("moto-a", "moto", "http://127.0.0.1:5000", "testing", "testing")
MOTO_B = S3Store("moto-b", "moto", "http://127.0.0.1:5002", "testing", "testing")
RGW = S3Store(
    "rgw",
    "ceph",
    "http://127.0.0.1:7480",
    "RGWACCESSKEY",
    "RGWSECRETKEY",
    kind="radosgw",
    rclone_provider="Ceph",
)
GCS = GCSStore("gcs", "gcs", "http://127.0.0.1:9023")
SWIFT = SwiftStore("swift", "swift", "http://127.0.0.1:8080/auth/v1.0", "test:tester", "testing")
