"""Counts every process shares: failed logins (registry.logins), requests per minute (ratelimit).

Where they live is chosen from Django's default cache:

* a shared cache (Redis, ``QUAY_GEO_REGION_CACHE_URL``): counted there with atomic increments,
  no database work;
* a per-process cache (the default memory cache): counted in the database table
  ``registry_counter``, one row per name, each hit one ``INSERT ... ON CONFLICT DO UPDATE``
  statement. A per-process count would let every web process (and every worker thread's
  process) grant the whole allowance again.

A count not hit for ``ttl`` seconds starts again from zero.
"""

import time
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.core.cache import cache
from django.core.signals import setting_changed
from django.db import connections, router

from .models import Counter

#: Cache backends whose entries every process of the region sees.
SHARED_CACHE_BACKENDS = (
    "django.core.cache.backends.redis.RedisCache",
    "django.core.cache.backends.memcached.PyMemcacheCache",
    "django.core.cache.backends.memcached.PyLibMCCache",
)
#: The database store deletes expired rows once every this many hits in a process.
CLEANUP_EVERY = 200
_CACHE_PREFIX = "counter:"


@dataclass(frozen=True)
class Hits:
    """A count and the Unix time of its last hit."""

    count: int
    last_at: float


class CounterStore(Protocol):
    shared_cache: bool

    def hit(self, name: str, *, ttl: float, now: float) -> int:
        """Count one hit of ``name``; return the count, 1 if it had expired."""

    def read(self, names: list[str], *, now: float) -> dict[str, Hits]:
        """Return the live counts among ``names`` (absent: none)."""

    def clear(self, name: str) -> None:
        """Forget the count of ``name``."""


class CacheCounterStore:
    """Counts in Django's (shared) cache: an integer key and a key with its last hit's time."""

    shared_cache = True

    def hit(self, name: str, *, ttl: float, now: float) -> int:
        key = _CACHE_PREFIX + name
        timeout = max(1, int(ttl + 0.999))
        if cache.add(key, 1, timeout=timeout):
            count = 1
        else:
            try:
                count = cache.incr(key)
            except ValueError:  # expired between add and incr: this hit starts a new count
                cache.set(key, 1, timeout=timeout)
                count = 1
            cache.touch(key, timeout)
        cache.set(key + ":at", now, timeout=timeout)
        return int(count)

    def read(self, names: list[str], *, now: float) -> dict[str, Hits]:
        keys = [_CACHE_PREFIX + name + suffix for name in names for suffix in ("", ":at")]
        found: dict[str, Any] = cache.get_many(keys)
        result = {}
        for name in names:
            count = found.get(_CACHE_PREFIX + name)
            if count:
                result[name] = Hits(int(count), float(found.get(_CACHE_PREFIX + name + ":at", now)))
        return result

    def clear(self, name: str) -> None:
        cache.delete_many([_CACHE_PREFIX + name, _CACHE_PREFIX + name + ":at"])


class DatabaseCounterStore:
    """Counts in the ``registry_counter`` table, one statement per hit."""

    shared_cache = False

    def __init__(self) -> None:
        self._hits = 0

    def hit(self, name: str, *, ttl: float, now: float) -> int:
        table = Counter._meta.db_table
        alias = router.db_for_write(Counter)
        with connections[alias].cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (name, count, last_at, expires_at) "  # noqa: S608 - our table
                "VALUES (%s, 1, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                f"count = CASE WHEN {table}.expires_at < excluded.last_at THEN 1 "
                f"ELSE {table}.count + 1 END, "
                "last_at = excluded.last_at, expires_at = excluded.expires_at RETURNING count",
                [name, now, now + ttl],
            )
            row = cursor.fetchone()
        self._hits += 1
        if self._hits % CLEANUP_EVERY == 0:
            Counter.objects.using(alias).filter(expires_at__lt=now).delete()
        return int(row[0]) if row else 1

    def read(self, names: list[str], *, now: float) -> dict[str, Hits]:
        rows = Counter.objects.filter(name__in=names, expires_at__gte=now)
        return {row.name: Hits(row.count, row.last_at) for row in rows}

    def clear(self, name: str) -> None:
        Counter.objects.filter(name=name).delete()


class Counters:
    """The counter store of this process, chosen from the cache settings at first use."""

    def __init__(self) -> None:
        self._store: CounterStore | None = None

    @property
    def store(self) -> CounterStore:
        """Return the store: the cache if it is shared, otherwise the database."""
        if self._store is None:
            backend = settings.CACHES.get("default", {}).get("BACKEND", "")
            shared = backend in SHARED_CACHE_BACKENDS
            self._store = CacheCounterStore() if shared else DatabaseCounterStore()
        return self._store

    def hit(self, name: str, *, ttl: float, now: float | None = None) -> int:
        """Count one hit of ``name``; return the count, 1 if it was absent or had expired."""
        return self.store.hit(name, ttl=ttl, now=time.time() if now is None else now)

    def read(self, names: list[str], now: float | None = None) -> dict[str, Hits]:
        """Return the live counts among ``names``; a name without one is absent."""
        return self.store.read(names, now=time.time() if now is None else now)

    def clear(self, name: str) -> None:
        """Forget the count of ``name``."""
        self.store.clear(name)

    def reset(self) -> None:
        """Choose the store again at next use (the cache settings changed)."""
        self._store = None


counters = Counters()


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":
        counters.reset()


setting_changed.connect(_settings_changed, dispatch_uid="registry.counters.settings")
