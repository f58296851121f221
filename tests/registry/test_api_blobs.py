"""Blob downloads and deletes: headers, ranges, redirects, fallback between locations."""

import os
from typing import Any

import pytest
from django.db import connection

from registry.models import RepositoryBlob
from replication.models import Blob, StorageLocation
from replication.selectors import location_engine
from replication.services import blob_commit, config_version_bump, location_create
from storage_engines.errors import ObjectNotFound, StorageUnavailable
from storage_engines.keys import content_key
from storage_engines.memory import MemoryEngine
from tests.registry.conftest import Api, Memory, error_code, sha256, user_create

DATA = bytes(range(256)) * 40  # 10240 bytes


@pytest.fixture
def pushed(api: Api) -> str:
    return api.blob_push("alice/app", DATA)


def body_of(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else bytes(response.content)


def test_get_streams_the_blob_with_its_headers(api: Api, pushed: str) -> None:
    response = api.call("GET", f"/v2/alice/app/blobs/{pushed}")

    assert response.status_code == 200
    assert body_of(response) == DATA
    assert response["Content-Length"] == str(len(DATA))
    assert response["Accept-Ranges"] == "bytes"
    assert response["Docker-Content-Digest"] == pushed
    assert response["Content-Type"] == "application/octet-stream"


def test_head_answers_the_headers_without_a_body(api: Api, pushed: str) -> None:
    response = api.call("HEAD", f"/v2/alice/app/blobs/{pushed}")

    assert response.status_code == 200
    assert body_of(response) == b""
    assert response["Content-Length"] == str(len(DATA))
    assert response["Docker-Content-Digest"] == pushed


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=10000-", 10000, 10239),
        ("bytes=-40", 10200, 10239),
        ("bytes=10200-99999", 10200, 10239),
    ],
    ids=["first-last", "open-end", "suffix", "clamped"],
)
def test_ranges_answer_206_with_content_range(
    api: Api, pushed: str, header: str, first: int, last: int
) -> None:
    response = api.call("GET", f"/v2/alice/app/blobs/{pushed}", headers={"Range": header})

    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert response["Content-Length"] == str(last - first + 1)
    assert body_of(response) == DATA[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=20000-", "bytes=500-0", "bytes=-0"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_an_unsatisfiable_or_invalid_range_is_416_with_an_empty_body(
    api: Api, pushed: str, method: str, header: str
) -> None:
    response = api.call(method, f"/v2/alice/app/blobs/{pushed}", headers={"Range": header})

    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(DATA)}"
    assert response["Content-Length"] == "0"
    assert body_of(response) == b""


def test_a_multi_range_request_gets_the_whole_blob(api: Api, pushed: str) -> None:
    response = api.call("GET", f"/v2/alice/app/blobs/{pushed}", headers={"Range": "bytes=0-1,5-6"})

    assert response.status_code == 200
    assert body_of(response) == DATA


def test_a_zero_byte_blob_has_no_satisfiable_range(api: Api) -> None:
    empty = api.blob_push("alice/app", b"")

    whole = api.call("GET", f"/v2/alice/app/blobs/{empty}")
    ranged = api.call("GET", f"/v2/alice/app/blobs/{empty}", headers={"Range": "bytes=0-"})

    assert (whole.status_code, whole["Content-Length"], body_of(whole)) == (200, "0", b"")
    assert (ranged.status_code, ranged["Content-Range"]) == (416, "bytes */0")


def test_an_unknown_blob_is_blob_unknown(api: Api, pushed: str) -> None:
    response = api.call("GET", f"/v2/alice/app/blobs/{sha256(b'absent')}")
    head = api.call("HEAD", f"/v2/alice/app/blobs/{sha256(b'absent')}")

    assert response.status_code == 404
    assert error_code(response) == "BLOB_UNKNOWN"
    assert head.status_code == 404
    assert body_of(head) == b""


def test_a_blob_of_another_repository_is_unknown_here(api: Api, pushed: str) -> None:
    api.call("POST", "/v2/alice/other/blobs/uploads/")

    response = api.call("GET", f"/v2/alice/other/blobs/{pushed}")

    assert response.status_code == 404
    assert error_code(response) == "BLOB_UNKNOWN"


def test_a_blob_of_an_unknown_repository_is_name_unknown(api: Api) -> None:
    response = api.call("GET", f"/v2/alice/nothing/blobs/{sha256(b'x')}")

    assert response.status_code == 404
    assert error_code(response) == "NAME_UNKNOWN"


@pytest.mark.parametrize("digest", ["sha256:short", "md5:" + "0" * 32, "nodigest"])
def test_a_malformed_digest_is_a_400(api: Api, pushed: str, digest: str) -> None:
    response = api.call("GET", f"/v2/alice/app/blobs/{digest}")

    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"


def test_a_redirecting_location_answers_307_to_its_direct_url(
    api: Api, memory: Memory, pushed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, int, str]] = []

    def direct_url(key: str, *, expires_in: int = 600, method: str = "GET") -> str:
        asked.append((key, expires_in, method))
        return f"https://storage.example/{key}?signature=x"

    monkeypatch.setattr(memory.engine, "direct_url", direct_url)

    got = api.call("GET", f"/v2/alice/app/blobs/{pushed}")
    head = api.call("HEAD", f"/v2/alice/app/blobs/{pushed}")

    assert got.status_code == 307
    assert got["Location"] == f"https://storage.example/{content_key(pushed)}?signature=x"
    assert got["Docker-Content-Digest"] == pushed
    assert head.status_code == 307
    assert [method for _, _, method in asked] == ["GET", "HEAD"]
    assert asked[0][1] == 600


def test_a_proxying_location_streams_even_when_it_has_direct_urls(
    api: Api, memory: Memory, pushed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    StorageLocation.objects.filter(pk=memory.location.pk).update(serve_mode="proxy")
    config_version_bump()  # as every change of a location does
    monkeypatch.setattr(memory.engine, "direct_url", lambda *a, **k: "https://never")

    response = api.call("GET", f"/v2/alice/app/blobs/{pushed}")

    assert response.status_code == 200
    assert body_of(response) == DATA


@pytest.fixture
def second_copy(memory: Memory, pushed: str) -> MemoryEngine:
    """A second in-memory location holding a verified copy of the pushed blob."""
    backup = location_create(location_id="backup", kind="memory", options={})
    engine = location_engine(backup)
    assert isinstance(engine, MemoryEngine)
    engine.objects[content_key(pushed)] = DATA
    blob_commit(digest=pushed, size=len(DATA), sha256=pushed[7:], location=backup)
    return engine


@pytest.mark.parametrize("failure", [StorageUnavailable, ObjectNotFound])
def test_a_failing_location_falls_back_to_the_next_copy(
    api: Api,
    memory: Memory,
    pushed: str,
    second_copy: MemoryEngine,
    monkeypatch: pytest.MonkeyPatch,
    failure: type[Exception],
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise failure("down")

    monkeypatch.setattr(memory.engine, "read", broken)

    response = api.call("GET", f"/v2/alice/app/blobs/{pushed}")

    assert response.status_code == 200
    assert body_of(response) == DATA


def test_when_every_location_fails_the_answer_is_503(
    api: Api,
    memory: Memory,
    pushed: str,
    second_copy: MemoryEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise StorageUnavailable("down")

    monkeypatch.setattr(memory.engine, "read", broken)
    monkeypatch.setattr(second_copy, "read", broken)

    response = api.call("GET", f"/v2/alice/app/blobs/{pushed}")

    assert response.status_code == 503
    assert response.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_delete_unlinks_the_blob_from_the_repository_only(
    api: Api, memory: Memory, pushed: str
) -> None:
    deleted = api.call("DELETE", f"/v2/alice/app/blobs/{pushed}")
    after = api.call("GET", f"/v2/alice/app/blobs/{pushed}")
    again = api.call("DELETE", f"/v2/alice/app/blobs/{pushed}")

    assert deleted.status_code == 202
    assert after.status_code == 404
    assert (again.status_code, error_code(again)) == (404, "BLOB_UNKNOWN")
    assert not RepositoryBlob.objects.exists()
    assert Blob.objects.filter(digest=pushed).exists()  # bytes go with garbage collection
    assert memory.holds_nothing_but(pushed)


def test_pulling_needs_a_token_and_a_stranger_is_denied(api: Api, pushed: str) -> None:
    anonymous = api.call("GET", f"/v2/alice/app/blobs/{pushed}", token="")
    stranger = Api(api.client, user_create("mallory").username)
    denied = stranger.call("GET", f"/v2/alice/app/blobs/{pushed}")

    assert anonymous.status_code == 401
    assert 'scope="repository:alice/app:pull"' in anonymous["WWW-Authenticate"]
    assert denied.status_code == 403
    assert error_code(denied) == "DENIED"


@pytest.mark.django_db(transaction=True)
def test_the_database_connection_is_closed_before_a_blob_streams(
    client: Any, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_create("alice")
    api = Api(client, "alice")
    digest = api.blob_push("alice/app", os.urandom(100))
    seen: list[bool] = []
    original = memory.engine.read

    def observed(*args: Any, **kwargs: Any) -> Any:
        seen.append(connection.connection is None)
        return original(*args, **kwargs)

    monkeypatch.setattr(memory.engine, "read", observed)

    response = api.call("GET", f"/v2/alice/app/blobs/{digest}")

    assert response.status_code == 200
    assert seen == [True]
