"""Test-wide configuration: the suite runs on PostgreSQL when DATABASE_URL names one."""

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _region_cache_empty() -> Iterator[None]:
    """Every test starts with an empty region cache: its facts name rows of other tests."""
    from replication.regioncache import region_cache

    region_cache.reset()
    yield
    region_cache.reset()
