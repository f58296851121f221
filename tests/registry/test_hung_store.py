"""A store that accepts connections and never answers (issue 15, "hung store").

The preferred location's S3 server is reached through a TCP proxy that is paused: connections
are accepted, nothing is forwarded. Pulls are answered from the other location within the
attempt budget, and the hung one's breaker opens at once so the next pull does not wait.
"""

import io
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client

from replication import health
from replication.models import Blob, Placement, PlacementState, StorageLocation
from replication.selectors import location_engine
from replication.services import location_create
from storage_engines.keys import content_key
from tests import servers
from tests.delayproxy import DelayProxy
from tests.registry.conftest import Api, sha256

pytestmark = [pytest.mark.django_db, pytest.mark.servers]

#: Far above the budget of the settings below (1 s per location), far below the 240 s of old.
BOUND_SECONDS = 30


@pytest.fixture
def proxy() -> Iterator[DelayProxy]:
    servers.require("moto")
    port = urlsplit(servers.S3_A).port
    assert port is not None
    with DelayProxy(port, handshake=False) as running:
        yield running


def _s3_location(location_id: str, endpoint: str, serve_mode: str) -> StorageLocation:
    options = {
        "s3_bucket": servers.new_s3_bucket(endpoint),
        "endpoint_url": endpoint,
        "s3_access_key": servers.S3_ACCESS_KEY,
        "s3_secret_key": servers.S3_SECRET_KEY,
        "addressing_style": "path",
    }
    return location_create(
        location_id=location_id, kind="s3", options=options, serve_mode=serve_mode
    )


def _copy_into(location: StorageLocation, data: bytes) -> None:
    digest = sha256(data)
    location_engine(location).write(content_key(digest), io.BytesIO(data), size=len(data))
    Placement.objects.create(
        blob=Blob.objects.get(digest=digest), location=location, state=PlacementState.PRESENT
    )


@pytest.fixture
def deadlines(settings: Any) -> None:
    settings.QUAY_GEO_STORAGE_METADATA_TIMEOUT = 1.0
    settings.QUAY_GEO_STORAGE_READ_TIMEOUT = 1.0
    settings.QUAY_GEO_STORAGE_ATTEMPT_SECONDS = 1.5
    settings.QUAY_DISTRIBUTED_STORAGE_PREFERENCE = "us_s3 eu_s3"


@pytest.mark.parametrize("serve_mode", ["proxy", "redirect"])
def test_a_hung_store_is_left_for_the_next_location_and_skipped_after(
    client: Client, alice: User, proxy: DelayProxy, deadlines: None, serve_mode: str
) -> None:
    us = _s3_location("us_s3", f"http://{proxy.url_host}", serve_mode)
    eu = _s3_location("eu_s3", servers.S3_B, serve_mode)
    api = Api(client, "alice")
    data = os.urandom(70_000)
    digest = api.blob_push("alice/app", data)
    assert Placement.objects.get(blob__digest=digest, location=us).state == PlacementState.PRESENT
    _copy_into(eu, data)
    proxy.pause()
    before = proxy.snapshot()

    started = time.monotonic()
    head = api.call("HEAD", f"/v2/alice/app/blobs/{digest}")
    tried_hung = proxy.snapshot() - before
    get = api.call("GET", f"/v2/alice/app/blobs/{digest}")
    elapsed = time.monotonic() - started

    assert tried_hung.connections >= 1  # the hung store was asked first, and given up
    assert not health.location_healthy("us_s3")
    if serve_mode == "redirect":
        assert head.status_code == get.status_code == 307
        assert urlsplit(servers.S3_B).netloc in get["Location"]
    else:
        assert head.status_code == get.status_code == 200
        assert b"".join(get.streaming_content) == data
    assert elapsed < BOUND_SECONDS
    # The GET did not ask the hung store again: its breaker was open.
    assert (proxy.snapshot() - before).connections == tried_hung.connections


MiB = 1024 * 1024


def test_a_patch_to_a_hung_store_is_503_and_the_same_chunk_retried_later_completes(
    client: Client,
    alice: User,
    proxy: DelayProxy,
    deadlines: None,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    settings.QUAY_DISTRIBUTED_STORAGE_PREFERENCE = "us_s3"
    _s3_location("us_s3", f"http://{proxy.url_host}", "proxy")
    api = Api(client, "alice")
    data = os.urandom(11 * MiB)
    first, second = data[: 8 * MiB], data[8 * MiB :]
    location = api.call("POST", "/v2/alice/app/blobs/uploads/")["Location"]
    stored = api.call("PATCH", location, first, headers={"Content-Range": f"0-{len(first) - 1}"})
    assert stored.status_code == 202
    chunk = {"Content-Range": f"{len(first)}-{len(data) - 1}"}
    proxy.pause()

    started = time.monotonic()
    failed = api.call("PATCH", location, second, headers=chunk, HTTP_X_REQUEST_ID="req-hung-1")
    elapsed = time.monotonic() - started
    proxy.resume()
    retried = api.call("PATCH", location, second, headers=chunk)
    done = api.call("PUT", location, query={"digest": sha256(data)})

    assert failed.status_code == 503
    assert failed.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert failed["Range"] == f"0-{len(first) - 1}"  # what the store holds: resume from there
    assert elapsed < BOUND_SECONDS
    assert any(
        "req-hung-1" in record.getMessage() and record.levelname == "WARNING"
        for record in caplog.records
    )
    assert retried.status_code == 202
    assert done.status_code == 201, done.content
    get = api.call("GET", f"/v2/alice/app/blobs/{sha256(data)}")
    assert b"".join(get.streaming_content) == data
