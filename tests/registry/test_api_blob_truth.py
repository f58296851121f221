"""The pull path notices copies that are not what their placement says (issue 14, item 1).

A copy deleted out of band or of a wrong size is marked lost in the request that finds it, the
request is answered from another copy, and a repair is queued with priority. Wrong bytes in a
streamed body mark the copy corrupt and cut the response; the next request reads another copy.
"""

import io
import logging
import os
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from registry.services.serving import BodyCut
from replication import tasks
from replication.commitsql import task_sender
from replication.models import Blob, Placement, PlacementState, StorageLocation
from replication.selectors import location_engine
from replication.services import location_create, replication_enable
from storage_engines.keys import content_key
from tests import servers
from tests.registry.conftest import Api, Memory, sha256

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, bool]]:
    """The replication tasks sent: (placement id, location ID, priority)."""
    calls: list[tuple[int, str, bool]] = []

    def record(placement_id: int, location_id: str, *, priority: bool = False, **_: Any) -> None:
        calls.append((placement_id, location_id, priority))

    monkeypatch.setattr(tasks, "replicate_blob_send", record)
    return calls


@pytest.fixture
def on_commit(django_capture_on_commit_callbacks: Any) -> Any:
    """Run the on-commit callbacks (the tasks sent) registered inside a ``with`` block."""
    return django_capture_on_commit_callbacks


def _copy_into(location: StorageLocation, data: bytes) -> None:
    """Give ``location`` a verified present copy of ``data`` (as a replication would)."""
    digest = sha256(data)
    location_engine(location).write(content_key(digest), io.BytesIO(data), size=len(data))
    Placement.objects.create(
        blob=Blob.objects.get(digest=digest), location=location, state=PlacementState.PRESENT
    )


def _drain(response: Any, into: bytearray) -> None:
    """Read a streamed body into ``into`` until it ends or breaks."""
    for chunk in response.streaming_content:
        into += chunk


def _state(digest: str, location: StorageLocation) -> Placement:
    return Placement.objects.get(blob__digest=digest, location=location)


@pytest.fixture
def two_copies(api: Api, memory: Memory) -> tuple[str, bytes, StorageLocation]:
    """A blob pushed to ``mem`` (preferred) and copied to ``other``; return digest, bytes, other."""
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    digest = api.blob_push("alice/app", data)
    other = location_create(location_id="other", kind="memory", options={})
    _copy_into(other, data)
    return digest, data, other


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_copy_deleted_out_of_band_is_marked_lost_and_the_request_answered_from_another(
    api: Api, memory: Memory, two_copies: Any, sent: list[Any], method: str, on_commit: Any
) -> None:
    # Given two copies, the preferred one deleted behind the registry's back
    digest, data, other = two_copies
    memory.engine.delete(content_key(digest))

    # When the blob is pulled
    with on_commit(execute=True):
        response = api.call(method, f"/v2/alice/app/blobs/{digest}")

    # Then this very request is answered from the other copy
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(data))
    if method == "GET":
        assert b"".join(response.streaming_content) == data
    # and the lost copy says so, with the reason and the time, and its repair jumps the queue
    lost = _state(digest, memory.location)
    assert lost.state == PlacementState.LOST
    assert "not found" in lost.lost_reason
    assert lost.lost_at is not None
    assert sent == [(lost.pk, "mem", True)]
    assert _state(digest, other).state == PlacementState.PRESENT
    assert Blob.objects.get(digest=digest).unrecoverable_at is None


def test_a_copy_of_a_wrong_size_is_marked_lost_and_the_request_answered_from_another(
    api: Api, memory: Memory, two_copies: Any, sent: list[Any]
) -> None:
    digest, data, _ = two_copies
    memory.engine.objects[content_key(digest)] = data[:1000]  # truncated

    response = api.call("HEAD", f"/v2/alice/app/blobs/{digest}")

    assert response.status_code == 200
    lost = _state(digest, memory.location)
    assert lost.state == PlacementState.LOST
    assert f"holds 1000 bytes, expected {len(data)}" in lost.lost_reason


def test_wrong_bytes_cut_the_response_mark_the_copy_corrupt_and_the_next_pull_reads_another(
    api: Api,
    memory: Memory,
    two_copies: Any,
    sent: list[Any],
    caplog: pytest.LogCaptureFixture,
    on_commit: Any,
) -> None:
    # Given the preferred copy with one byte flipped in the store
    digest, data, _ = two_copies
    key = content_key(digest)
    rotten = bytearray(data)
    rotten[len(data) // 2] ^= 0x01
    memory.engine.objects[key] = bytes(rotten)

    # When it is pulled, the body is cut before it is complete
    response = api.call("GET", f"/v2/alice/app/blobs/{digest}")
    assert response.status_code == 200
    received = bytearray()
    with on_commit(execute=True), caplog.at_level(logging.ERROR), pytest.raises(BodyCut):
        _drain(response, received)
    assert len(received) < len(data)

    # Then the copy is corrupt (logged), its repair queued, and the next pull reads the other
    corrupt = _state(digest, memory.location)
    assert corrupt.state == PlacementState.CORRUPT
    assert "SHA-256" in corrupt.lost_reason
    assert any(r.levelno == logging.ERROR and digest in r.getMessage() for r in caplog.records)
    assert sent == [(corrupt.pk, "mem", True)]
    again = api.call("GET", f"/v2/alice/app/blobs/{digest}")
    assert b"".join(again.streaming_content) == data


def test_a_range_of_a_truncated_copy_is_answered_from_another(
    api: Api, memory: Memory, two_copies: Any, sent: list[Any]
) -> None:
    digest, data, _ = two_copies
    memory.engine.objects[content_key(digest)] = data[:100]

    response = api.call(
        "GET", f"/v2/alice/app/blobs/{digest}", headers={"Range": "bytes=2000-2999"}
    )

    assert response.status_code == 206
    assert b"".join(response.streaming_content) == data[2000:3000]
    assert _state(digest, memory.location).state == PlacementState.LOST


def test_the_last_good_copy_corrupted_makes_the_blob_unrecoverable_and_pulls_unknown(
    api: Api,
    memory: Memory,
    sent: list[Any],
    caplog: pytest.LogCaptureFixture,
    on_commit: Any,
) -> None:
    # Given one copy only, rotten
    data = os.urandom(5000)
    digest = api.blob_push("alice/app", data)
    memory.engine.objects[content_key(digest)] = data[:-1] + bytes([data[-1] ^ 0xFF])

    # When it is pulled
    response = api.call("GET", f"/v2/alice/app/blobs/{digest}")
    with on_commit(execute=True), caplog.at_level(logging.ERROR), pytest.raises(BodyCut):
        b"".join(response.streaming_content)

    # Then it is said loudly, no repair is queued (there is no source), pulls answer unknown
    assert Blob.objects.get(digest=digest).unrecoverable_at is not None
    assert any("unrecoverable" in r.getMessage() for r in caplog.records)
    assert sent == []
    for method in ("GET", "HEAD"):
        again = api.call(method, f"/v2/alice/app/blobs/{digest}")
        assert again.status_code == 404
    assert api.call("GET", f"/v2/alice/app/blobs/{digest}").json()["errors"][0]["code"] == (
        "BLOB_UNKNOWN"
    )

    # And a push of the same bytes makes it present and recoverable again
    api.blob_push("alice/app", data)
    assert Blob.objects.get(digest=digest).unrecoverable_at is None
    assert _state(digest, memory.location).state == PlacementState.PRESENT
    assert b"".join(api.call("GET", f"/v2/alice/app/blobs/{digest}").streaming_content) == data


# --- A real S3 store (moto), redirect and proxy ---------------------------------------------------


def _s3_location(location_id: str, endpoint: str, serve_mode: str) -> tuple[StorageLocation, str]:
    bucket = servers.new_s3_bucket(endpoint)
    options = {
        "s3_bucket": bucket,
        "endpoint_url": endpoint,
        "s3_access_key": servers.S3_ACCESS_KEY,
        "s3_secret_key": servers.S3_SECRET_KEY,
        "addressing_style": "path",
    }
    location = location_create(
        location_id=location_id, kind="s3", options=options, serve_mode=serve_mode
    )
    return location, bucket


@pytest.mark.servers
@pytest.mark.parametrize("serve_mode", ["redirect", "proxy"])
def test_on_s3_a_copy_deleted_out_of_band_falls_back_to_the_other_store(
    client: Client, alice: User, sent: list[Any], serve_mode: str, on_commit: Any
) -> None:
    servers.require("moto")
    us, us_bucket = _s3_location("us_s3", servers.S3_A, serve_mode)
    eu, eu_bucket = _s3_location("eu_s3", servers.S3_B, serve_mode)
    api = Api(client, "alice")
    data = os.urandom(70_000)
    digest = api.blob_push("alice/app", data)
    _copy_into(eu, data)
    servers.s3_client(servers.S3_A).delete_object(Bucket=us_bucket, Key=content_key(digest))

    with on_commit(execute=True):
        head = api.call("HEAD", f"/v2/alice/app/blobs/{digest}")
        get = api.call("GET", f"/v2/alice/app/blobs/{digest}")

    if serve_mode == "redirect":
        assert head.status_code == get.status_code == 307
        assert eu_bucket in get["Location"]
        assert servers.S3_B.split("//")[1] in get["Location"]
    else:
        assert head.status_code == get.status_code == 200
        assert b"".join(get.streaming_content) == data
    lost = _state(digest, us)
    assert lost.state == PlacementState.LOST
    assert "not found" in lost.lost_reason
    assert sent[0] == (lost.pk, "us_s3", True)


@pytest.mark.servers
def test_on_s3_one_flipped_byte_cuts_the_proxied_body_and_the_next_pull_reads_the_other(
    client: Client, alice: User, sent: list[Any]
) -> None:
    servers.require("moto")
    us, us_bucket = _s3_location("us_s3", servers.S3_A, "proxy")
    eu, _ = _s3_location("eu_s3", servers.S3_B, "proxy")
    api = Api(client, "alice")
    data = os.urandom(2 * 1024 * 1024 + 5)
    digest = api.blob_push("alice/app", data)
    _copy_into(eu, data)
    rotten = bytearray(data)
    rotten[12345] ^= 0x20
    servers.s3_client(servers.S3_A).put_object(
        Bucket=us_bucket, Key=content_key(digest), Body=bytes(rotten)
    )

    response = api.call("GET", f"/v2/alice/app/blobs/{digest}")
    received = bytearray()
    with pytest.raises(BodyCut):
        _drain(response, received)

    assert len(received) < len(data)
    assert _state(digest, us).state == PlacementState.CORRUPT
    again = api.call("GET", f"/v2/alice/app/blobs/{digest}")
    assert b"".join(again.streaming_content) == data


def test_a_push_of_an_unrecoverable_blob_replans_its_repair_that_gave_up_as_a_fresh_one(
    api: Api, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a blob whose only copy was lost, and whose repair elsewhere gave up
    monkeypatch.setattr(task_sender, "send_later", lambda pairs: None)
    data = os.urandom(5000)
    digest = api.blob_push("alice/app", data)
    far = location_create(location_id="far", kind="memory", options={}, replicate_by_default=True)
    replication_enable(enabled=True)
    now = timezone.now()
    Placement.objects.filter(blob__digest=digest, location=memory.location).update(
        state=PlacementState.LOST, lost_at=now
    )
    Placement.objects.create(
        blob=Blob.objects.get(digest=digest),
        location=far,
        state=PlacementState.FAILED,
        lost_at=now,
        attempts=24,
        error_permanent=True,
        given_up_at=now,
        last_error="gave up after 24 attempts: no location holds a present copy",
    )
    Blob.objects.filter(digest=digest).update(unrecoverable_at=now)

    # When the same bytes are pushed again
    api.blob_push("alice/app", data)

    # Then its repair is planned afresh: pending, a new budget of attempts, not "given up"
    replanned = _state(digest, far)
    assert replanned.state == PlacementState.PENDING
    assert (replanned.attempts, replanned.error_permanent) == (0, False)
    assert replanned.given_up_at is None
    assert Blob.objects.get(digest=digest).unrecoverable_at is None
