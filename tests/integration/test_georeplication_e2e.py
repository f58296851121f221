"""Georeplication end to end: pushes through the registry API of one region, real workers copy
to S3 (two regions), GCS, Swift and Ceph RGW, and pulls are served by the closest copy, with
fallback when a region's store is down."""

import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import requests
from django.contrib.auth import get_user_model

from replication import selectors
from replication.models import Blob, Placement, PlacementState, StorageLocation
from replication.services import location_create, replication_enable
from tests import live, servers

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "georeplication-e2e"


@pytest.fixture(autouse=True)
def _broker() -> Iterator[None]:
    for name in ("s3_a", "s3_b", "gcs", "swift", "rgw"):
        servers.require(name)
    live.use_test_broker()
    selectors.cache_clear()
    yield
    selectors.cache_clear()


def s3_options(endpoint: str, key: str = "testing", secret: str = "testing") -> dict[str, object]:
    return {
        "s3_bucket": servers.new_s3_bucket(endpoint, key, secret),
        "endpoint_url": endpoint,
        "s3_access_key": key,
        "s3_secret_key": secret,
        "addressing_style": "path",
        "connect_timeout": 2,
    }


def every_engine_kind(us_endpoint: str = servers.S3_A) -> list[StorageLocation]:
    """Five default locations, one per engine kind, us_s3 first in the stored order."""
    swift_container = servers.new_swift_container(servers.SWIFT_AUTH, "test:tester", "testing")
    locations = [
        location_create(
            location_id="us_s3",
            kind="s3",
            options=s3_options(us_endpoint),
            replicate_by_default=True,
        ),
        location_create(
            location_id="eu_s3",
            kind="s3",
            options=s3_options(servers.S3_B),
            replicate_by_default=True,
        ),
        location_create(
            location_id="eu_gcs",
            kind="gcs",
            options={
                "bucket_name": servers.new_gcs_bucket(servers.GCS),
                "api_endpoint": servers.GCS,
                "anonymous": True,
                "project_id": "test-project",
            },
            replicate_by_default=True,
        ),
        location_create(
            location_id="ap_swift",
            kind="swift",
            options={
                "auth_url": servers.SWIFT_AUTH,
                "auth_version": "1",
                "swift_user": "test:tester",
                "swift_password": "testing",
                "swift_container": swift_container,
            },
            replicate_by_default=True,
        ),
        location_create(
            location_id="ceph",
            kind="radosgw",
            options={
                "hostname": "127.0.0.1",
                "port": int(servers.RGW.rsplit(":", 1)[1]),
                "is_secure": False,
                "access_key": "RGWACCESSKEY",
                "secret_key": "RGWSECRETKEY",
                "bucket_name": servers.new_s3_bucket(servers.RGW, "RGWACCESSKEY", "RGWSECRETKEY"),
            },
            replicate_by_default=True,
        ),
    ]
    replication_enable(enabled=True)
    get_user_model().objects.create_user(username="geo", password=PASSWORD)
    return locations


class Client:
    """Just enough of a registry client: token login, blob and manifest push, blob pull."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.session = requests.Session()

    def login(self, scope: str) -> None:
        response = self.session.get(
            f"{self.base}/v2/auth",
            params={"service": urlparse(self.base).netloc, "scope": scope},
            auth=("geo", PASSWORD),
            timeout=30,
        )
        response.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {response.json()['token']}"

    def try_push_blob(self, repository: str, data: bytes) -> tuple[str, int]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        response = self.session.post(
            f"{self.base}/v2/{repository}/blobs/uploads/",
            params={"digest": digest},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=60,
        )
        return digest, response.status_code

    def push_blob(self, repository: str, data: bytes) -> str:
        digest, status = self.try_push_blob(repository, data)
        assert status == 201, status
        return digest

    def push_image(self, repository: str, tag: str, layers: list[bytes]) -> str:
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        config_digest = self.push_blob(repository, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": self.push_blob(repository, layer),
                    "size": len(layer),
                }
                for layer in layers
            ],
        }
        body = json.dumps(manifest).encode()
        response = self.session.put(
            f"{self.base}/v2/{repository}/manifests/{tag}",
            data=body,
            headers={"Content-Type": str(manifest["mediaType"])},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get_blob(self, repository: str, digest: str) -> requests.Response:
        return self.session.get(
            f"{self.base}/v2/{repository}/blobs/{digest}", allow_redirects=False, timeout=60
        )


def wait_replicated(blob_count: int, locations: int, timeout: float = 180) -> None:
    live.wait_until(
        lambda: (
            Placement.objects.filter(state=PlacementState.PRESENT).count() >= blob_count * locations
        ),
        timeout,
        message=f"blobs not present in all {locations} locations: "
        + str(list(Placement.objects.values_list("location__location_id", "state", "last_error"))),
    )


def test_push_to_us_replicates_everywhere_and_eu_pulls_from_its_own_store() -> None:
    locations = every_engine_kind()
    layers = [os.urandom(3 * 1024 * 1024), os.urandom(700 * 1024)]
    with (
        live.gunicorn(preference="us_s3") as us,
        live.gunicorn(preference="eu_s3") as eu,
        live.celery_worker(preference="us_s3", concurrency=6),
    ):
        pusher = Client(us)
        pusher.login("repository:geo/app:push,pull")
        pusher.push_image("geo/app", "v1", layers)
        wait_replicated(blob_count=3, locations=len(locations))

        for blob in Blob.objects.all():
            kinds = set(
                Placement.objects.filter(blob=blob, state=PlacementState.PRESENT).values_list(
                    "location__kind", flat=True
                )
            )
            assert kinds == {"s3", "gcs", "swift", "radosgw"}
        assert not Placement.objects.exclude(state=PlacementState.PRESENT).exists()

        puller = Client(eu)
        puller.login("repository:geo/app:pull")
        layer_digest = "sha256:" + hashlib.sha256(layers[0]).hexdigest()
        answer = puller.get_blob("geo/app", layer_digest)
        assert answer.status_code == 307
        assert urlparse(answer.headers["Location"]).netloc == urlparse(servers.S3_B).netloc
        fetched = requests.get(answer.headers["Location"], timeout=60)  # no Authorization
        assert fetched.content == layers[0]


def test_a_dead_preferred_store_is_skipped_for_pulls_and_pushes() -> None:
    with live.moto_server() as (us_endpoint, us_moto):
        every_engine_kind(us_endpoint)
        layer = os.urandom(1024 * 1024)
        with (
            live.gunicorn(preference="us_s3", workers=1, QUAY_GEO_HEARTBEAT_SECONDS="1") as us,
            live.celery_worker(preference="us_s3", concurrency=6),
        ):
            client = Client(us)
            client.login("repository:geo/app:push,pull")
            digest = client.push_blob("geo/app", layer)
            client.push_image("geo/app", "v1", [layer])
            wait_replicated(blob_count=2, locations=5)

            live.stop(us_moto, signal.SIGKILL)  # region us loses its store

            pulled = client.get_blob("geo/app", digest)
            assert pulled.status_code in (200, 307)
            if pulled.status_code == 307:
                assert urlparse(pulled.headers["Location"]).netloc != urlparse(us_endpoint).netloc
                pulled = requests.get(pulled.headers["Location"], timeout=60)
            assert pulled.content == layer, "served from another region in the same request"

            # Like a registry client, retry a refused blob upload: the instance learns the store
            # is dead from its heartbeat probe or from a few failed writes, whichever is first.
            fresh = os.urandom(512 * 1024)
            fresh_digest, refused = "", 0
            for _ in range(6):
                fresh_digest, status = client.try_push_blob("geo/app", fresh)
                if status == 201:
                    break
                assert status == 503
                refused += 1
                time.sleep(0.5)
            assert refused <= 3, "at most a breaker's worth of failed writes"
            blob = Blob.objects.get(digest=fresh_digest)
            first = Placement.objects.filter(blob=blob, state=PlacementState.PRESENT).first()
            assert first is not None
            assert first.location.location_id != "us_s3", "the push went to the next healthy store"
