"""What each registry request asks the database: a far region pays a round trip per statement.

Counts, not timings (docs/PERFORMANCE.md measures the seconds): a warm pull asks nothing, a
push one or two statements per request. The budgets are those of issue 13 and
docs/architecture.md ("Geography").
"""

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from pytest_django import DjangoAssertNumQueries

from replication import tasks
from replication.regioncache import region_cache
from replication.services import location_create, replication_enable
from tests.rediscache import redis_cache
from tests.registry.conftest import Api, Image, Memory, sha256

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the one-statement commits are PostgreSQL's; make test runs on PostgreSQL in CI",
)


def _statements(queries: Any) -> list[str]:
    return [query["sql"].split()[0].upper() for query in queries.captured_queries]


def test_a_warm_blob_head_and_get_ask_the_database_nothing(
    api: Api, memory: Memory, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    data = os.urandom(300)
    digest = api.blob_push("alice/app", data)
    api.call("HEAD", f"/v2/alice/app/blobs/{digest}")  # the cold path fills the region cache

    with django_assert_num_queries(0):
        head = api.call("HEAD", f"/v2/alice/app/blobs/{digest}")
        got = api.call("GET", f"/v2/alice/app/blobs/{digest}")

    assert head.status_code == 200
    assert head["Content-Length"] == "300"
    assert b"".join(got.streaming_content) == data


def test_a_warm_manifest_get_by_tag_and_by_digest_asks_the_database_nothing(
    api: Api, image: Image, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    pushed = api.manifest_push("alice/app", "v1", image.manifest)
    assert pushed.status_code == 201

    with django_assert_num_queries(0):  # the push itself filled the region cache
        by_tag = api.call("GET", "/v2/alice/app/manifests/v1")
        by_digest = api.call("GET", f"/v2/alice/app/manifests/{image.digest}")

    assert by_tag.content == by_digest.content == image.content
    assert by_tag["Docker-Content-Digest"] == image.digest


def test_a_blob_pulled_in_the_region_that_pushed_it_asks_the_database_nothing(
    api: Api, memory: Memory, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    data = os.urandom(200)
    digest = api.blob_push("alice/app", data)  # the commit fills the region cache

    with django_assert_num_queries(0):
        head = api.call("HEAD", f"/v2/alice/app/blobs/{digest}")

    assert head.status_code == 200


def test_a_cold_blob_head_asks_one_query(
    api: Api, memory: Memory, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    digest = api.blob_push("alice/app", os.urandom(100))
    region_cache.delete([f"b:{digest}", f"l:alice/app:{digest}"])

    with django_assert_num_queries(1):
        assert api.call("HEAD", f"/v2/alice/app/blobs/{digest}").status_code == 200


def test_an_upload_in_three_requests_costs_one_two_and_two_statements(
    api: Api, memory: Memory, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    data = os.urandom(5000)
    api.token("repository:alice/app:pull,push,delete")  # the token is its own request
    api.call("POST", "/v2/alice/app/blobs/uploads/")  # the repository exists and is cached

    with django_assert_num_queries(1):  # the session row
        started = api.call("POST", "/v2/alice/app/blobs/uploads/")
    with django_assert_num_queries(2) as patching:  # claim and read; the new state
        patched = api.call("PATCH", started["Location"], data)
    with django_assert_num_queries(2) as finishing:  # claim and read; the blob in one statement
        done = api.call("PUT", patched["Location"], query={"digest": sha256(data)})

    assert (started.status_code, patched.status_code, done.status_code) == (202, 202, 201)
    assert _statements(patching) == ["UPDATE", "UPDATE"]
    assert _statements(finishing) == ["UPDATE", "WITH"]


def test_a_monolithic_upload_costs_one_statement(
    api: Api, memory: Memory, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    data = os.urandom(700)
    api.call("POST", "/v2/alice/app/blobs/uploads/")  # token and repository

    with django_assert_num_queries(1):
        done = api.call(
            "POST", "/v2/alice/app/blobs/uploads/", data, query={"digest": sha256(data)}
        )

    assert done.status_code == 201


def test_an_image_manifest_push_costs_two_statements(
    api: Api, image: Image, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    content = json.dumps(image.manifest).encode()

    with django_assert_num_queries(2) as pushing:  # its references; then everything else
        pushed = api.call(
            "PUT",
            "/v2/alice/app/manifests/v1",
            content,
            content_type="application/vnd.oci.image.manifest.v1+json",
        )

    assert pushed.status_code == 201
    assert _statements(pushing) == ["SELECT", "WITH"]


def test_a_warm_token_request_asks_the_database_nothing_with_a_shared_cache(
    api: Api, memory: Memory, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    # The counts of failed logins live in Redis when it is configured (registry.counters).
    with redis_cache():
        api.token("repository:alice/app:pull")  # verifies the password and the role once
        api.tokens.clear()

        with django_assert_num_queries(0):
            token = api.token("repository:alice/app:pull")

    assert token


def test_a_warm_token_request_reads_only_the_failed_login_counts_without_one(
    api: Api, memory: Memory, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    api.token("repository:alice/app:pull")
    api.tokens.clear()

    with django_assert_num_queries(1) as asked:
        token = api.token("repository:alice/app:pull")

    assert token
    assert "registry_counter" in asked.captured_queries[0]["sql"]


@pytest.fixture
def shared_region_cache() -> Iterator[Any]:
    """Django's default cache on the test Redis: the region cache's shared level is on."""
    with redis_cache():
        region_cache.reset()
        yield region_cache
    region_cache.reset()


def test_another_process_of_the_region_pulls_a_push_through_the_shared_cache(
    shared_region_cache: Any,
    api: Api,
    image: Image,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    assert api.manifest_push("alice/app", "v1", image.manifest).status_code == 201
    layer = sha256(image.layers[0])
    shared_region_cache.delete_prefix("")  # this process forgets; the shared level remembers

    with django_assert_num_queries(0):
        manifest = api.call("GET", "/v2/alice/app/manifests/v1")
        head = api.call("HEAD", f"/v2/alice/app/blobs/{layer}")

    assert manifest.status_code == 200
    assert head.status_code == 200


def test_a_blob_pulled_right_after_it_was_mounted_asks_the_database_nothing(
    api: Api, memory: Memory, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    digest = api.blob_push("alice/base", os.urandom(300))
    region_cache.reset()  # pushed in another process of the region
    mounted = api.call(
        "POST", "/v2/alice/app/blobs/uploads/", query={"mount": digest, "from": "alice/base"}
    )
    assert mounted.status_code == 201
    api.token("repository:alice/app:pull,push,delete")  # the HEAD's own token, asked before

    with django_assert_num_queries(0):
        head = api.call("HEAD", f"/v2/alice/app/blobs/{digest}")

    assert head.status_code == 200


def test_a_pull_that_finds_its_own_location_without_the_blob_hurries_the_copy_once(
    api: Api,
    memory: Memory,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    # Given a blob in mem only, and an instance that prefers a default location lacking it
    digest = api.blob_push("alice/app", os.urandom(400))
    location_create(location_id="far", kind="memory", options={}, replicate_by_default=True)
    replication_enable(enabled=True)
    settings.QUAY_DISTRIBUTED_STORAGE_PREFERENCE = "far"
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(tasks, "replicate_blob_send", lambda pid, loc, **_: sent.append((pid, loc)))
    api.token("repository:alice/app:pull,push,delete")  # asked before, as a client would

    # When it is pulled twice
    with django_capture_on_commit_callbacks(execute=True):
        first = api.call("HEAD", f"/v2/alice/app/blobs/{digest}")
    with django_assert_num_queries(0):
        second = api.call("HEAD", f"/v2/alice/app/blobs/{digest}")

    # Then the copy into far was hurried by the first pull only, and the second asked nothing
    assert (first.status_code, second.status_code) == (200, 200)
    assert [location for _, location in sent] == ["far"]
