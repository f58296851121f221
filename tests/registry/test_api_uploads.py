"""Upload sessions through the API: open, streamed and chunked PATCHes, cancel, foreign ones."""

import hashlib
import os
from datetime import timedelta

import pytest
from django.utils import timezone
from pytest_django.fixtures import Settings

from registry.models import BlobUpload, HashMode, Repository, RepositoryBlob
from replication.models import Blob, Placement, PlacementState
from tests.registry.conftest import (
    Api,
    Memory,
    body_cut_short,
    error_code,
    session,
    sha256,
    spy,
    user_create,
)

MiB = 1024 * 1024


# --- opening a session ---------------------------------------------------------------------------


def test_post_opens_a_session_pinned_to_the_preferred_location(api: Api, memory: Memory) -> None:
    response = api.call("POST", "/v2/alice/app/blobs/uploads/")

    upload = BlobUpload.objects.get()
    assert response.status_code == 202
    assert response["Location"] == f"/v2/alice/app/blobs/uploads/{upload.uuid}"
    assert response["Docker-Upload-UUID"] == upload.uuid
    assert response["Range"] == "0-0"
    assert response["Content-Length"] == "0"
    assert "OCI-Chunk-Min-Length" not in response  # the memory engine has no minimum part
    assert upload.location == memory.location
    assert upload.repository.full_name == "alice/app"
    assert list(memory.engine.sessions) == [upload.uuid]


def test_the_chunk_minimum_is_announced_when_configured(api: Api, settings: Settings) -> None:
    settings.QUAY_GEO_CHUNK_MIN_LENGTH = 5 * MiB

    assert session(api)["OCI-Chunk-Min-Length"] == str(5 * MiB)


def test_the_first_push_creates_the_repository(api: Api) -> None:
    session(api, "alice/new/deep")

    assert Repository.objects.filter(namespace__name="alice", name="new/deep").exists()


def test_a_push_to_a_namespace_that_does_not_exist_is_denied(api: Api) -> None:
    root = user_create("root", superuser=True)
    admin = Api(api.client, root.username)

    response = admin.call("POST", "/v2/nowhere/app/blobs/uploads/")

    assert response.status_code == 403
    assert error_code(response) == "DENIED"
    assert not Repository.objects.exists()


def test_an_unknown_digest_algorithm_is_unsupported(api: Api) -> None:
    response = api.call("POST", "/v2/alice/app/blobs/uploads/", query={"digest-algorithm": "md5"})

    assert response.status_code == 400
    assert error_code(response) == "UNSUPPORTED"
    assert not BlobUpload.objects.exists()


# --- streamed PATCH, as docker, podman and skopeo send blobs -------------------------------------


def test_a_streamed_patch_and_an_empty_put_commit_the_blob_without_reading_it_back(
    api: Api, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * MiB + 7)  # above DATA_UPLOAD_MAX_MEMORY_SIZE: request.body would refuse
    location = session(api)["Location"]
    reads = spy(monkeypatch, memory.engine, "read")

    patched = api.call("PATCH", location, data)
    upload = BlobUpload.objects.get()
    done = api.call("PUT", patched["Location"], query={"digest": sha256(data)})

    assert patched.status_code == 202
    assert patched["Range"] == f"0-{len(data) - 1}"
    assert patched["Location"] == location
    assert patched["Docker-Upload-UUID"] == upload.uuid
    assert (upload.hash_mode, upload.byte_count) == (HashMode.FINAL, len(data))
    assert upload.sha256_hex == hashlib.sha256(data).hexdigest()
    assert done.status_code == 201
    assert done["Location"] == f"/v2/alice/app/blobs/{sha256(data)}"
    assert done["Docker-Content-Digest"] == sha256(data)
    assert reads == []
    assert not BlobUpload.objects.exists()
    blob = Blob.objects.get()
    assert (blob.digest, blob.size, blob.sha256) == (sha256(data), len(data), sha256(data)[7:])
    assert Placement.objects.get().state == PlacementState.PRESENT
    assert RepositoryBlob.objects.filter(blob=blob, repository__name="app").exists()
    assert memory.holds_nothing_but(sha256(data))
    assert memory.engine.objects[memory.keys()[0]] == data


def test_a_whole_blob_in_the_closing_put_is_committed(api: Api, memory: Memory) -> None:
    data = os.urandom(5000)

    done = api.call("PUT", session(api)["Location"], data, query={"digest": sha256(data)})

    assert done.status_code == 201
    assert memory.holds_nothing_but(sha256(data))


# --- chunked PATCHes ------------------------------------------------------------------------------


def test_chunks_in_order_answer_the_exact_range_and_resume_the_hash(
    api: Api, memory: Memory
) -> None:
    data = os.urandom(10_000)
    location = session(api)["Location"]

    first = api.call("PATCH", location, data[:4000], headers={"Content-Range": "0-3999"})
    state = BlobUpload.objects.get()
    status = api.call("GET", location)
    second = api.call("PATCH", location, data[4000:9000], headers={"Content-Range": "4000-8999"})
    done = api.call(
        "PUT",
        location,
        data[9000:],
        headers={"Content-Range": "9000-9999"},
        query={"digest": sha256(data)},
    )

    assert (first.status_code, first["Range"]) == (202, "0-3999")
    assert state.hash_mode == HashMode.RESUMABLE
    assert len(bytes(state.sha256_state or b"")) == 112
    assert (status.status_code, status["Range"], status["Location"]) == (204, "0-3999", location)
    assert status["Docker-Upload-UUID"] == state.uuid
    assert (second.status_code, second["Range"]) == (202, "0-8999")
    assert done.status_code == 201
    assert memory.engine.objects[memory.keys()[0]] == data


def test_a_chunk_out_of_order_is_refused_with_the_current_range(api: Api, memory: Memory) -> None:
    location = session(api)["Location"]
    api.call("PATCH", location, b"a" * 10, headers={"Content-Range": "0-9"})

    gap = api.call("PATCH", location, b"b" * 10, headers={"Content-Range": "20-29"})
    retry = api.call("PATCH", location, b"a" * 10, headers={"Content-Range": "0-9"})
    overlap = api.call("PATCH", location, b"c" * 10, headers={"Content-Range": "5-14"})

    for response in (gap, retry, overlap):
        assert response.status_code == 416
        assert response["Range"] == "0-9"
        assert response["Location"] == location
    assert BlobUpload.objects.get().byte_count == 10


def test_a_first_chunk_not_starting_at_zero_is_refused(api: Api) -> None:
    response = api.call("PATCH", session(api)["Location"], b"x", headers={"Content-Range": "1-1"})

    assert response.status_code == 416
    assert response["Range"] == "0-0"


def test_a_malformed_content_range_is_refused(api: Api) -> None:
    response = api.call(
        "PATCH", session(api)["Location"], b"x", headers={"Content-Range": "zero-one"}
    )

    assert response.status_code == 416
    assert error_code(response) == "RANGE_INVALID"


def test_content_length_disagreeing_with_content_range_is_size_invalid(
    api: Api, memory: Memory
) -> None:
    location = session(api)["Location"]

    response = api.call("PATCH", location, b"x" * 10, headers={"Content-Range": "0-19"})

    assert response.status_code == 400
    assert error_code(response) == "SIZE_INVALID"
    assert BlobUpload.objects.get().byte_count == 0
    assert memory.keys() == []


def test_a_body_shorter_than_its_content_length_discards_the_upload(
    api: Api, memory: Memory
) -> None:
    location = session(api)["Location"]

    response = api.call("PATCH", location, b"x" * 100, **body_cut_short(b"x" * 100, 200))

    assert response.status_code == 400
    assert error_code(response) == "SIZE_INVALID"
    assert not BlobUpload.objects.exists()
    assert memory.holds_nothing_but()
    assert api.call("GET", location).status_code == 404


def test_a_second_writer_while_one_streams_is_refused(api: Api) -> None:
    location = session(api)["Location"]
    BlobUpload.objects.update(busy_until=timezone.now() + timedelta(minutes=5))

    response = api.call("PATCH", location, b"x" * 10, headers={"Content-Range": "0-9"})

    assert response.status_code == 416


def test_a_stale_claim_does_not_block_the_session(api: Api) -> None:
    location = session(api)["Location"]
    BlobUpload.objects.update(busy_until=timezone.now() - timedelta(seconds=1))

    assert (
        api.call("PATCH", location, b"x" * 10, headers={"Content-Range": "0-9"}).status_code == 202
    )


# --- cancel and foreign sessions ----------------------------------------------------------------


def test_delete_cancels_the_session_in_the_engine(api: Api, memory: Memory) -> None:
    location = session(api)["Location"]
    api.call("PATCH", location, b"x" * 100, headers={"Content-Range": "0-99"})

    cancelled = api.call("DELETE", location)
    after = api.call("PATCH", location, b"y", headers={"Content-Range": "100-100"})

    assert cancelled.status_code == 204
    assert not BlobUpload.objects.exists()
    assert memory.holds_nothing_but()
    assert after.status_code == 404
    assert error_code(after) == "BLOB_UPLOAD_UNKNOWN"


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_a_session_of_another_repository_is_unknown(api: Api, method: str) -> None:
    location = session(api, "alice/one")["Location"]
    api.call("POST", "/v2/alice/two/blobs/uploads/")
    foreign = location.replace("/alice/one/", "/alice/two/")

    response = api.call(method, foreign, b"x", query={"digest": sha256(b"x")})

    assert response.status_code == 404
    assert error_code(response) == "BLOB_UPLOAD_UNKNOWN"
    assert BlobUpload.objects.filter(repository__name="one").exists()


def test_an_unknown_session_is_unknown(api: Api) -> None:
    session(api)

    response = api.call("GET", "/v2/alice/app/blobs/uploads/no-such-session")

    assert response.status_code == 404
    assert error_code(response) == "BLOB_UPLOAD_UNKNOWN"


# --- the store failing mid-request (issue 15) ---------------------------------------------------


def _store_fails_after(monkeypatch: pytest.MonkeyPatch, memory: Memory, count: int) -> None:
    """Make the next part the engine writes fail as a store would, after ``count`` writes."""
    from storage_engines.errors import StorageUnavailable

    original = memory.engine._session_write_part
    calls = {"n": 0}

    def failing(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] > count:
            raise StorageUnavailable("memory: the store went away")
        original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(memory.engine, "_session_write_part", failing)


def test_a_store_failing_mid_patch_is_503_and_a_new_session_takes_the_same_chunk(
    api: Api, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory.engine.part_size = 1024
    data = os.urandom(4096)
    location = session(api)["Location"]
    _store_fails_after(monkeypatch, memory, 1)

    failed = api.call("PATCH", location, data)
    monkeypatch.undo()
    retried = api.call("PATCH", location, data)
    done = api.call("PUT", location, query={"digest": sha256(data)})

    assert failed.status_code == 503
    assert error_code(failed) == "UNAVAILABLE"
    assert retried.status_code == 202
    assert done.status_code == 201
    assert memory.holds_nothing_but(sha256(data))


def test_a_store_failing_after_earlier_chunks_of_a_dropped_session_forgets_it(
    api: Api, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory.engine.part_size = 1024
    location = session(api)["Location"]
    api.call("PATCH", location, b"x" * 2048, headers={"Content-Range": "0-2047"})
    _store_fails_after(monkeypatch, memory, 0)

    failed = api.call("PATCH", location, b"y" * 2048, headers={"Content-Range": "2048-4095"})

    # The in-memory engine is not append_retryable: its session went with the failure.
    assert failed.status_code == 503
    assert error_code(failed) == "UNAVAILABLE"
    assert not BlobUpload.objects.exists()
    assert memory.holds_nothing_but()


# --- the claim's lease (issue 15) ---------------------------------------------------------------


class _SlowBody:
    """A request body that arrives in ``chunks`` pieces, ``pause`` seconds apart, and checks on
    the way whether another request could claim the upload."""

    def __init__(self, repository: Repository, uuid: str, chunks: int, pause: float) -> None:
        self.repository, self.uuid = repository, uuid
        self.left, self.pause = chunks, pause
        self.refused = 0

    def read(self, size: int = -1, /) -> bytes:
        import time

        from registry import errors
        from registry.services.uploads import upload_claim

        if not self.left:
            return b""
        time.sleep(self.pause)
        try:
            upload_claim(repository=self.repository, uuid=self.uuid)
        except errors.RangeInvalid:
            self.refused += 1
        self.left -= 1
        return b"z" * 1000


def test_a_body_streaming_longer_than_the_lease_renews_it(
    api: Api, memory: Memory, settings: Settings
) -> None:
    from registry.services.streaming import Body
    from registry.services.uploads import upload_append, upload_claim

    settings.QUAY_GEO_UPLOAD_LEASE_SECONDS = 2
    location = session(api)["Location"]
    uuid = location.rsplit("/", 1)[1]
    repository = Repository.objects.get()
    upload, lease = upload_claim(repository=repository, uuid=uuid)
    first_until = lease.until
    body = _SlowBody(repository, uuid, chunks=5, pause=0.8)  # 4 s: twice the lease

    upload = upload_append(
        upload=upload, until=lease, body=Body(body, 5000), content_range=(0, 4999)
    )

    assert body.refused == 5  # no other request could claim it while it streamed
    assert lease.until > first_until
    assert upload.byte_count == 5000
    assert BlobUpload.objects.get().busy_until is None
