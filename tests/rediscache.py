"""Django's cache on the test Redis (scripts/test-servers.sh) under a key prefix of its own.

No test empties a Redis database: the test brokers of concurrent runs live in the same server
(tests/live.py). Each use gets a fresh prefix, and its keys are deleted afterwards.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from django.test import override_settings

URL = "redis://127.0.0.1:6390/11"


@dataclass(frozen=True)
class RedisCache:
    client: redis.Redis
    prefix: str

    def key(self, name: str) -> str:
        """Return the Redis key Django's cache stores ``name`` under."""
        return f"{self.prefix}:1:{name}"


def keys_delete(client: redis.Redis, pattern: str) -> None:
    """Delete the keys matching ``pattern``."""
    found = list(client.scan_iter(match=pattern, count=1000))
    if found:
        client.delete(*found)


@contextmanager
def redis_cache() -> Iterator[RedisCache]:
    """Make the test Redis Django's default cache while the block runs."""
    cache = RedisCache(redis.Redis.from_url(URL), f"test-{uuid.uuid4().hex}")
    backend = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": URL,
        "KEY_PREFIX": cache.prefix,
    }
    try:
        with override_settings(CACHES={"default": backend}):
            yield cache
    finally:
        keys_delete(cache.client, f"{cache.prefix}:*")
