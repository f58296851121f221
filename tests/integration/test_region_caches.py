"""The region caches between two real regions: what one region changes, the other sees within
the documented bound (docs/operations.md, "Caches"), and its own region at once.

Two gunicorn processes stand for regions us and eu on one database; each caches in its own
process with short lifetimes so that the bounds are seconds.
"""

import os
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import override_settings

from replication import selectors
from replication.gc import garbage_collect
from replication.services import location_create
from tests import live, servers
from tests.integration.test_georeplication_e2e import PASSWORD, Client, s3_options

pytestmark = pytest.mark.django_db(transaction=True)

CACHE_SECONDS = 3.0
TAG_SECONDS = 2.0
#: Scheduling slack on a busy two-core machine, on top of a lifetime.
SLACK = 3.0
CACHES = {
    "QUAY_GEO_CACHE_SECONDS": str(CACHE_SECONDS),
    "QUAY_GEO_TAG_CACHE_SECONDS": str(TAG_SECONDS),
    "QUAY_GEO_CONFIG_CHECK_SECONDS": "2",
}


@pytest.fixture
def regions() -> Iterator[tuple[Client, Client]]:
    servers.require("s3_a")
    live.use_test_broker()
    selectors.cache_clear()
    location_create(location_id="us_s3", kind="s3", options=s3_options(servers.S3_A))
    get_user_model().objects.create_user(username="geo", password=PASSWORD)
    with (
        live.gunicorn(preference="us_s3", workers=1, **CACHES) as us_url,
        live.gunicorn(preference="us_s3", workers=1, **CACHES) as eu_url,
    ):
        us, eu = Client(us_url), Client(eu_url)
        us.login("repository:geo/app:push,pull,delete")
        eu.login("repository:geo/app:pull")
        yield us, eu
    selectors.cache_clear()


def manifest_status(client: Client, reference: str) -> tuple[int, str]:
    response = client.session.get(
        f"{client.base}/v2/geo/app/manifests/{reference}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    )
    return response.status_code, response.headers.get("Docker-Content-Digest", "")


def seconds_until(check: Callable[[], bool], bound: float) -> float:
    """Return how long ``check`` took to hold; fail if it does not within ``bound`` seconds."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < bound, f"not seen within {bound} s"
        time.sleep(0.2)
    return time.monotonic() - started


def test_a_moved_tag_is_seen_at_once_in_its_region_and_within_the_tag_lifetime_elsewhere(
    regions: tuple[Client, Client],
) -> None:
    us, eu = regions
    first = us.push_image("geo/app", "v1", [os.urandom(2000)])
    assert manifest_status(eu, "v1") == (200, first)  # eu caches the tag

    second = us.push_image("geo/app", "v1", [os.urandom(3000)])

    assert manifest_status(us, "v1") == (200, second), "the pushing region sees its push at once"
    seconds_until(lambda: manifest_status(eu, "v1") == (200, second), TAG_SECONDS + SLACK)


def test_deleting_a_manifest_or_a_tag_is_seen_elsewhere_within_the_cache_lifetime(
    regions: tuple[Client, Client],
) -> None:
    us, eu = regions
    kept = us.push_image("geo/app", "v1", [os.urandom(2000)])
    dropped = us.push_image("geo/app", "v2", [os.urandom(2000)])
    assert manifest_status(eu, "v1") == (200, kept)
    assert manifest_status(eu, dropped)[0] == 200  # eu caches both

    assert us.session.delete(f"{us.base}/v2/geo/app/manifests/v1", timeout=30).status_code == 202
    deleted = us.session.delete(f"{us.base}/v2/geo/app/manifests/{dropped}", timeout=30)
    assert deleted.status_code == 202

    assert manifest_status(us, "v1")[0] == 404, "the deleting region at once"
    assert manifest_status(us, dropped)[0] == 404
    seconds_until(lambda: manifest_status(eu, "v1")[0] == 404, TAG_SECONDS + SLACK)
    seconds_until(lambda: manifest_status(eu, dropped)[0] == 404, CACHE_SECONDS + SLACK)
    assert manifest_status(eu, kept) == (200, kept), "the manifest itself stays"


def test_a_garbage_collected_blob_is_unknown_elsewhere_within_the_cache_lifetime(
    regions: tuple[Client, Client],
) -> None:
    us, eu = regions
    layer = os.urandom(4000)
    digest = us.push_blob("geo/app", layer)
    manifest = us.push_image("geo/app", "v1", [layer])
    assert eu.get_blob("geo/app", digest).status_code == 307  # eu caches the blob's facts
    us.session.delete(f"{us.base}/v2/geo/app/manifests/{manifest}", timeout=30)

    with override_settings(QUAY_GEO_GC_GRACE_SECONDS=-60):
        assert garbage_collect()["blobs"] >= 1

    def unknown() -> bool:
        answer = eu.get_blob("geo/app", digest)
        if answer.status_code == 307:  # a cached redirect still answers; its bytes are gone
            return requests.get(answer.headers["Location"], timeout=30).status_code == 404
        return answer.status_code == 404

    seconds_until(unknown, CACHE_SECONDS + SLACK)
    seconds_until(lambda: eu.get_blob("geo/app", digest).status_code == 404, CACHE_SECONDS + SLACK)
