"""The per-minute rate limit counts across processes: two gunicorns, one allowance."""

import random
import time

import pytest
import redis
import requests

from registry.ratelimit import WINDOW_SECONDS
from tests import live
from tests.rediscache import URL as REDIS_URL
from tests.rediscache import keys_delete


def _window_start_ensured(margin: float = 10.0) -> None:
    """Wait for a fresh window if this one ends within ``margin`` seconds (at most that long)."""
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < margin:
        time.sleep(left + 0.1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("store", ["database", "redis"])
def test_two_processes_share_one_allowance(store: str) -> None:
    # The client is named by a forwarded address: the servers' own readiness probes count too.
    extra = {"QUAY_GEO_RATE_LIMIT_PER_MINUTE": "4", "QUAY_GEO_TRUSTED_PROXIES": "127.0.0.1"}
    address = f"198.51.100.{random.randrange(1, 255)}"
    client = {"X-Forwarded-For": address}
    # The servers' cache prefix is fixed (quay-geo): only this client's counts are removed.
    counts = f"quay-geo:1:counter:ratelimit:ip:{address}:*"
    if store == "redis":
        keys_delete(redis.Redis.from_url(REDIS_URL), counts)
        extra["QUAY_GEO_REGION_CACHE_URL"] = REDIS_URL
    try:
        with live.gunicorn(workers=1, **extra) as one, live.gunicorn(workers=1, **extra) as two:
            _window_start_ensured()
            answers = [
                requests.get(f"{url}/v2/", headers=client, timeout=30).status_code
                for url in (one, two, one, two, one, two)
            ]
    finally:
        if store == "redis":
            keys_delete(redis.Redis.from_url(REDIS_URL), counts)
    # Counted per process, each would have allowed all three of its requests.
    assert answers == [401, 401, 401, 401, 429, 429]
