"""The circuit breaker's state is shared through Django's cache when it is Redis (issue 15).

Two ``Breaker`` objects stand for two processes: each has its own memory, they share the
region's Redis (the test server on 6390) when it is configured, and nothing otherwise.
"""

import uuid
from typing import Any

import pytest

from replication.health import Breaker, breaker_shared

REDIS = "redis://127.0.0.1:6390/15"


@pytest.fixture
def redis_cache(settings: Any) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS,
            "KEY_PREFIX": f"breaker-test-{uuid.uuid4().hex}",
        }
    }
    settings.QUAY_GEO_BREAKER_FAILURES = 3


@pytest.mark.servers
def test_a_trip_in_one_process_is_seen_by_another(redis_cache: None) -> None:
    one, other = Breaker(), Breaker()
    assert breaker_shared()
    assert other.healthy("eu_s3")  # read now: the next shared read is after SHARED_CHECK_SECONDS
    other._checked.clear()

    one.failed("eu_s3", reason="hung", trip=True)

    assert not one.healthy("eu_s3")
    assert not other.healthy("eu_s3")
    assert other.healthy("us_s3")


@pytest.mark.servers
def test_failures_in_two_processes_add_up_and_a_success_closes_it_for_both(
    redis_cache: None,
) -> None:
    one, other = Breaker(), Breaker()
    one.failed("eu_s3", reason="500", trip=False)
    other.failed("eu_s3", reason="500", trip=False)
    assert one.healthy("eu_s3")
    assert other.healthy("eu_s3")

    one.failed("eu_s3", reason="500", trip=False)  # the third of the region
    other._checked.clear()

    assert not other.healthy("eu_s3")
    one.succeeded("eu_s3")
    fresh = Breaker()
    assert fresh.healthy("eu_s3")


def test_without_a_shared_cache_each_process_keeps_its_own(settings: Any) -> None:
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    one, other = Breaker(), Breaker()

    one.failed("eu_s3", reason="hung", trip=True)

    assert not breaker_shared()
    assert not one.healthy("eu_s3")
    assert other.healthy("eu_s3")
