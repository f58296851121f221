"""Shared counts: in the Redis cache when it is configured, otherwise in the database."""

from collections.abc import Iterator
from typing import Any

import pytest

from registry.counters import CacheCounterStore, DatabaseCounterStore, counters
from registry.models import Counter
from tests.rediscache import redis_cache


@pytest.fixture(params=["database", "redis"])
def store(request: pytest.FixtureRequest, db: None) -> Iterator[str]:
    """Each test runs once per store, the Redis one under a key prefix of its own."""
    if request.param == "database":
        counters.reset()
        yield request.param
        return
    with redis_cache():
        yield request.param


def test_the_store_is_the_cache_only_when_the_cache_is_shared(store: str) -> None:
    expected: Any = CacheCounterStore if store == "redis" else DatabaseCounterStore
    assert isinstance(counters.store, expected)


def test_hits_count_up_and_are_read_back_with_their_time(store: str) -> None:
    assert [counters.hit("a", ttl=60, now=100.0 + i) for i in range(3)] == [1, 2, 3]
    counters.hit("b", ttl=60, now=100.0)

    found = counters.read(["a", "b", "c"], now=103.0)

    assert {name: (hits.count, hits.last_at) for name, hits in found.items()} == {
        "a": (3, 102.0),
        "b": (1, 100.0),
    }


def test_a_cleared_count_starts_again(store: str) -> None:
    counters.hit("a", ttl=60, now=100.0)
    counters.hit("a", ttl=60, now=100.0)
    counters.clear("a")

    assert counters.read(["a"], now=100.0) == {}
    assert counters.hit("a", ttl=60, now=100.0) == 1


def test_a_count_not_hit_within_its_ttl_starts_again_in_the_database(db: None) -> None:
    counters.reset()
    counters.hit("a", ttl=10, now=100.0)
    counters.hit("a", ttl=10, now=105.0)

    assert counters.read(["a"], now=116.0) == {}
    assert counters.hit("a", ttl=10, now=116.0) == 1


def test_the_database_store_deletes_expired_rows_now_and_then(db: None) -> None:
    store = DatabaseCounterStore()
    store.hit("old", ttl=1, now=0.0)
    for i in range(199):
        store.hit("new", ttl=1000, now=100.0 + i)

    assert set(Counter.objects.values_list("name", flat=True)) == {"new"}


def test_redis_counts_expire_on_their_own() -> None:
    with redis_cache() as shared:
        counters.hit("a", ttl=30, now=100.0)
        ttl = shared.client.ttl(shared.key("counter:a"))
    assert 0 < ttl <= 30
