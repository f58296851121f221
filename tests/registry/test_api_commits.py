"""Closing uploads: verification, hash paths, sha512, monolithic POST, mounts, the data path."""

import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from registry import accounts
from registry.models import BlobUpload, HashMode, RepositoryBlob, Visibility
from registry.selectors import blob_readable_find
from registry.services import uploads
from replication.models import Blob, Placement
from storage_engines.keys import content_key
from tests.registry.conftest import (
    Api,
    Memory,
    error_code,
    rows_of,
    session,
    sha256,
    sha512,
    spy,
    user_create,
)

MiB = 1024 * 1024


# --- commits: hash paths, sha512, verification ----------------------------------------------------


def test_an_upload_mixing_streamed_and_chunked_requests_is_read_back_once(
    api: Api, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(6000)
    location = session(api)["Location"]
    api.call("PATCH", location, data[:1000])
    api.call("PATCH", location, data[1000:], headers={"Content-Range": "1000-5999"})
    assert BlobUpload.objects.get().hash_mode == HashMode.REHASH
    rehashes = spy(monkeypatch, uploads, "stream_digests")

    done = api.call("PUT", location, query={"digest": sha256(data)})

    assert done.status_code == 201
    assert len(rehashes) == 1
    assert memory.holds_nothing_but(sha256(data))
    assert Blob.objects.get().sha256 == sha256(data)[7:]


def test_a_rehashed_upload_with_a_wrong_digest_leaves_nothing(api: Api, memory: Memory) -> None:
    location = session(api)["Location"]
    api.call("PATCH", location, b"abc")
    api.call("PATCH", location, b"def", headers={"Content-Range": "3-5"})

    done = api.call("PUT", location, query={"digest": sha256(b"something else")})

    assert done.status_code == 400
    assert error_code(done) == "DIGEST_INVALID"
    assert memory.holds_nothing_but()
    assert not Blob.objects.exists()
    assert not Placement.objects.exists()
    assert not BlobUpload.objects.exists()


def test_a_wrong_digest_on_put_leaves_no_blob_no_placement_and_no_object(
    api: Api, memory: Memory
) -> None:
    location = session(api)["Location"]
    api.call("PATCH", location, b"the real bytes")

    done = api.call("PUT", location, query={"digest": sha256(b"other bytes")})

    assert done.status_code == 400
    assert error_code(done) == "DIGEST_INVALID"
    assert rows_of(sha256(b"other bytes")) == (0, 0)
    assert not Blob.objects.exists()
    assert memory.holds_nothing_but()
    assert api.call("GET", location).status_code == 404


@pytest.mark.parametrize(
    "digest",
    [None, "sha256:abc", "md5:" + hashlib.md5(b"x").hexdigest(), "blake3:" + "0" * 64],  # noqa: S324
    ids=["missing", "malformed", "md5", "blake3"],
)
def test_a_put_without_a_valid_digest_is_digest_invalid(
    api: Api, memory: Memory, digest: str | None
) -> None:
    location = session(api)["Location"]

    done = api.call("PUT", location, b"data", query={"digest": digest} if digest else {})

    assert done.status_code == 400
    assert error_code(done) == "DIGEST_INVALID"
    assert not Blob.objects.exists()
    assert memory.keys() == []


def test_a_sha512_upload_announced_on_post_is_verified_and_keeps_a_sha256(
    api: Api, memory: Memory
) -> None:
    data = os.urandom(4321)
    location = session(api, **{"digest-algorithm": "sha512"})["Location"]

    api.call("PATCH", location, data)
    done = api.call("PUT", location, query={"digest": sha512(data)})
    fetched = api.call("GET", f"/v2/alice/app/blobs/{sha512(data)}")

    assert done.status_code == 201
    assert done["Docker-Content-Digest"] == sha512(data)
    blob = Blob.objects.get()
    assert (blob.digest, blob.sha256) == (sha512(data), hashlib.sha256(data).hexdigest())
    assert memory.keys() == [f"sha512/{sha512(data)[7:9]}/{sha512(data)[7:]}"]
    assert fetched["Docker-Content-Digest"] == sha512(data)
    assert b"".join(fetched.streaming_content) == data


def test_a_sha512_digest_known_only_at_put_time_hashes_the_body_of_the_put(
    api: Api, memory: Memory
) -> None:
    data = os.urandom(777)

    done = api.call("PUT", session(api)["Location"], data, query={"digest": sha512(data)})

    assert done.status_code == 201
    assert Blob.objects.get().sha256 == hashlib.sha256(data).hexdigest()


def test_a_sha512_upload_in_several_chunks_is_read_back(api: Api, memory: Memory) -> None:
    data = os.urandom(3000)
    location = session(api, **{"digest-algorithm": "sha512"})["Location"]
    api.call("PATCH", location, data[:1000], headers={"Content-Range": "0-999"})
    api.call("PATCH", location, data[1000:], headers={"Content-Range": "1000-2999"})

    done = api.call("PUT", location, query={"digest": sha512(data)})

    assert done.status_code == 201
    assert Blob.objects.get().sha256 == hashlib.sha256(data).hexdigest()
    assert memory.holds_nothing_but(sha512(data))


def test_a_blob_pushed_again_is_written_again_so_a_lost_object_is_repaired(
    api: Api, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a blob whose row says "present" but whose object the store lost
    data = os.urandom(2048)
    api.blob_push("alice/app", data)
    memory.engine.delete(content_key(sha256(data)))
    completions = spy(monkeypatch, memory.engine, "upload_complete")

    # When it is pushed again
    api.blob_push("alice/other", data)

    # Then the object is written (checked, not trusted to the row), once
    assert len(completions) == 1
    assert memory.holds_nothing_but(sha256(data))
    assert memory.engine.stat(content_key(sha256(data))) is not None
    assert RepositoryBlob.objects.count() == 2


# --- monolithic POST ------------------------------------------------------------------------------


def test_a_monolithic_post_with_digest_and_body_creates_the_blob(api: Api, memory: Memory) -> None:
    data = os.urandom(1234)

    response = api.call(
        "POST", "/v2/alice/app/blobs/uploads/", data, query={"digest": sha256(data)}
    )

    assert response.status_code == 201
    assert response["Location"] == f"/v2/alice/app/blobs/{sha256(data)}"
    assert response["Docker-Content-Digest"] == sha256(data)
    assert not BlobUpload.objects.exists()
    assert memory.holds_nothing_but(sha256(data))


def test_a_monolithic_post_with_a_wrong_digest_stores_nothing(api: Api, memory: Memory) -> None:
    response = api.call(
        "POST", "/v2/alice/app/blobs/uploads/", b"abc", query={"digest": sha256(b"xyz")}
    )

    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"
    assert memory.holds_nothing_but()
    assert not Blob.objects.exists()


def test_a_zero_byte_blob_is_uploaded_and_served(api: Api, memory: Memory) -> None:
    empty = sha256(b"")

    created = api.call("POST", "/v2/alice/app/blobs/uploads/", query={"digest": empty})
    fetched = api.call("GET", f"/v2/alice/app/blobs/{empty}")

    assert created.status_code == 201
    assert fetched.status_code == 200
    assert fetched["Content-Length"] == "0"
    assert b"".join(fetched.streaming_content) == b""


def test_a_post_with_a_digest_but_no_body_opens_a_session(api: Api) -> None:
    response = api.call("POST", "/v2/alice/app/blobs/uploads/", query={"digest": sha256(b"later")})

    assert response.status_code == 202
    assert BlobUpload.objects.count() == 1


# --- mounts ---------------------------------------------------------------------------------------


def test_a_mount_from_a_repository_holding_the_blob_links_it(api: Api, memory: Memory) -> None:
    digest = api.blob_push("alice/src", b"shared layer")

    response = api.call(
        "POST", "/v2/alice/dst/blobs/uploads/", query={"mount": digest, "from": "alice/src"}
    )
    fetched = api.call("GET", f"/v2/alice/dst/blobs/{digest}")

    assert response.status_code == 201
    assert response["Location"] == f"/v2/alice/dst/blobs/{digest}"
    assert response["Docker-Content-Digest"] == digest
    assert fetched.status_code == 200
    assert not BlobUpload.objects.exists()
    assert memory.holds_nothing_but(digest)


@pytest.mark.parametrize(
    "query",
    [
        {"mount": sha256(b"nowhere")},
        {"mount": sha256(b"nowhere"), "from": "alice/src"},
        {"mount": sha256(b"shared layer"), "from": "alice/empty"},
        {"mount": sha256(b"shared layer"), "from": "Not/A/Name"},
    ],
    ids=["without-from-unknown-blob", "unknown-blob", "not-in-source", "bad-source-name"],
)
def test_a_mount_that_cannot_happen_opens_a_session(api: Api, query: dict[str, str]) -> None:
    api.blob_push("alice/src", b"shared layer")
    api.call("POST", "/v2/alice/empty/blobs/uploads/")

    response = api.call("POST", "/v2/alice/dst/blobs/uploads/", query=query)

    assert response.status_code == 202
    assert response["Location"].startswith("/v2/alice/dst/blobs/uploads/")
    assert not RepositoryBlob.objects.filter(repository__name="dst").exists()


def test_a_mount_without_from_links_a_blob_of_a_repository_the_caller_may_read(
    api: Api, memory: Memory
) -> None:
    digest = api.blob_push("alice/src", b"shared layer")

    response = api.call("POST", "/v2/alice/dst/blobs/uploads/", query={"mount": digest})
    fetched = api.call("GET", f"/v2/alice/dst/blobs/{digest}")

    assert response.status_code == 201
    assert response["Location"] == f"/v2/alice/dst/blobs/{digest}"
    assert fetched.status_code == 200
    assert not BlobUpload.objects.exists()
    assert memory.holds_nothing_but(digest)


def test_the_blob_a_caller_may_read_is_found_in_one_query(
    api: Api, alice: User, django_assert_num_queries: Any
) -> None:
    digest = api.blob_push("alice/src", b"shared layer")
    bob = Api(api.client, user_create("bob").username)
    hidden = bob.blob_push("bob/private", b"bob's layer")

    with django_assert_num_queries(1):
        found = blob_readable_find(digest=digest, user=alice)
    with django_assert_num_queries(1):
        not_found = blob_readable_find(digest=hidden, user=alice)

    assert (found is not None and found.digest, not_found) == (digest, None)


def test_a_mount_without_from_does_not_take_a_blob_the_caller_may_not_read(api: Api) -> None:
    bob = Api(api.client, user_create("bob").username)
    digest = bob.blob_push("bob/private", b"bob's layer")

    response = api.call("POST", "/v2/alice/dst/blobs/uploads/", query={"mount": digest})

    assert response.status_code == 202
    assert not RepositoryBlob.objects.filter(repository__name="dst").exists()


def test_a_mount_without_from_takes_a_blob_of_a_public_repository(api: Api) -> None:
    bob = Api(api.client, user_create("bob").username)
    digest = bob.blob_push("bob/open", b"bob's public layer")
    accounts.repository_visibility_set(repository="bob/open", visibility=Visibility.PUBLIC)

    response = api.call("POST", "/v2/alice/dst/blobs/uploads/", query={"mount": digest})

    assert response.status_code == 201


def test_a_mount_needs_pull_on_the_source(api: Api) -> None:
    bob = Api(api.client, user_create("bob").username)
    digest = bob.blob_push("bob/private", b"bob's layer")

    response = api.call(
        "POST", "/v2/alice/dst/blobs/uploads/", query={"mount": digest, "from": "bob/private"}
    )

    assert response.status_code == 202
    assert not RepositoryBlob.objects.filter(repository__name="dst").exists()


def test_a_mount_challenge_asks_pull_on_the_source_too(api: Api) -> None:
    digest = api.blob_push("alice/src", b"shared layer")
    query = {"mount": digest, "from": "alice/src"}
    without_source = api.token("repository:alice/dst:pull,push")

    anonymous = api.call("POST", "/v2/alice/dst/blobs/uploads/", query=query, token="")
    lacking = api.call("POST", "/v2/alice/dst/blobs/uploads/", query=query, token=without_source)

    scopes = 'scope="repository:alice/dst:pull,push repository:alice/src:pull"'
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].endswith(scopes)
    assert lacking.status_code == 401
    assert lacking["WWW-Authenticate"].endswith(f'{scopes},error="insufficient_scope"')
    assert not RepositoryBlob.objects.filter(repository__name="dst").exists()


def test_a_token_for_the_mount_challenge_mounts(api: Api) -> None:
    digest = api.blob_push("alice/src", b"shared layer")
    challenge = api.call(
        "POST",
        "/v2/alice/dst/blobs/uploads/",
        query={"mount": digest, "from": "alice/src"},
        token="",
    )["WWW-Authenticate"]
    scope = challenge.split('scope="')[1].split('"')[0]
    token = api.token(scope)  # one scope parameter, space-separated, as the challenge has it

    response = api.call(
        "POST",
        "/v2/alice/dst/blobs/uploads/",
        query={"mount": digest, "from": "alice/src"},
        token=token,
    )

    assert response.status_code == 201
    assert RepositoryBlob.objects.filter(repository__name="dst").exists()


def test_a_malformed_mount_digest_is_digest_invalid(api: Api) -> None:
    response = api.call("POST", "/v2/alice/dst/blobs/uploads/", query={"mount": "sha256:nope"})

    assert response.status_code == 400
    assert error_code(response) == "DIGEST_INVALID"


# --- the data path holds no transaction and no connection while bytes stream --------------------


@pytest.mark.django_db(transaction=True)
def test_no_transaction_while_bytes_stream_and_the_connection_is_kept(
    client: Any, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_create("alice")
    api = Api(client, "alice")
    seen: list[tuple[bool, bool]] = []
    original: Callable[..., Any] = memory.engine.upload_append

    def observed(*args: Any, **kwargs: Any) -> Any:
        seen.append((connection.in_atomic_block, connection.connection is None))
        return original(*args, **kwargs)

    monkeypatch.setattr(memory.engine, "upload_append", observed)
    location = session(api)["Location"]

    patched = api.call("PATCH", location, b"z" * 5000)

    assert patched.status_code == 202
    # Reconnecting to a far primary after the body costs more round trips than the statements.
    assert seen == [(False, False)]


@pytest.mark.django_db(transaction=True)
def test_a_get_releases_the_connection_before_streaming_and_a_head_keeps_it(
    client: Any, memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_create("alice")
    api = Api(client, "alice")
    data = b"q" * 3000
    assert api.call("POST", "/v2/alice/app/blobs/uploads/", data, query={"digest": sha256(data)})
    released: list[str] = []
    monkeypatch.setattr("registry.services.serving.db_release", lambda: released.append("released"))
    seen: list[bool] = []
    original: Callable[..., Any] = memory.engine.read

    def observed(*args: Any, **kwargs: Any) -> Any:
        seen.append(bool(released))
        return original(*args, **kwargs)

    monkeypatch.setattr(memory.engine, "read", observed)

    head = api.call("HEAD", f"/v2/alice/app/blobs/{sha256(data)}")
    assert head.status_code == 200
    assert released == [], "a HEAD streams nothing: reconnecting would cost more than it"

    got = api.call("GET", f"/v2/alice/app/blobs/{sha256(data)}")
    assert b"".join(got.streaming_content) == data
    assert seen == [True], "the connection goes back before the engine streams"
