"""The region-local cache: facts the pull path reads on every request, kept near the process.

A far region must not pay an ocean per request (docs/architecture.md, "Geography"). What the
hot paths read is either content-addressed (a manifest's bytes, a blob's size) or changes
rarely and may be seen late for a bounded time (a tag's target, a user's flags, the locations
holding a blob). Those facts are cached here in two levels:

* level 1, a dictionary in this process (least recently used out first, bounded by entries and
  bytes), always on;
* level 2, Django's default cache when it is shared (Redis, ``QUAY_GEO_REGION_CACHE_URL``), so
  that the processes of a region fill and invalidate it together. A per-process cache
  (``LocMemCache``, the default) is not used as a second level: it would only copy level 1.

Every entry has a lifetime. Deletes are invalidated at once in the process that deletes (and in
the shared level 2); elsewhere an entry lives until its lifetime ends, which is what bounds how
soon another region sees a delete or a moved tag (docs/operations.md, "Caches").

Settings (read at call time): ``QUAY_GEO_CACHE_SECONDS`` (default 30) for content facts and
users, ``QUAY_GEO_TAG_CACHE_SECONDS`` (default 5) for tags; 0 turns that kind of entry off.
"""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache

logger = logging.getLogger(__name__)

#: Level 1 holds at most this many entries and about this many bytes (manifests dominate).
MAX_ENTRIES = 20_000
MAX_BYTES = 16 * 1024 * 1024
#: A value bigger than this is not kept in level 1 (a 4 MiB manifest would evict everything).
MAX_VALUE_BYTES = 256 * 1024
_KEY_PREFIX = "qg:"
_LOCAL_BACKENDS = ("LocMemCache", "DummyCache")


def content_ttl() -> float:
    """Return the lifetime of content facts and users, in seconds (0: not cached)."""
    return float(getattr(settings, "QUAY_GEO_CACHE_SECONDS", 30))


def tag_ttl() -> float:
    """Return the lifetime of a cached tag target, in seconds (0: not cached)."""
    return float(getattr(settings, "QUAY_GEO_TAG_CACHE_SECONDS", 5))


class RegionCache:
    """A two-level cache of short-lived facts; see the module docstring."""

    def __init__(self, *, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, int, Any]] = OrderedDict()
        self._bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._shared: BaseCache | None = None
        self._shared_known = False

    # --- level 2 ----------------------------------------------------------------------------

    def _level2(self) -> BaseCache | None:
        if not self._shared_known:
            backend = caches["default"]
            local = type(backend).__name__ in _LOCAL_BACKENDS
            self._shared = None if local else backend
            self._shared_known = True
        return self._shared

    def _level2_call(self, what: str, call: Any, default: Any = None) -> Any:
        """Run a level-2 operation; a failing shared cache is logged, never a failed request."""
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - any client error of the shared cache
            logger.warning("region cache: %s failed: %s", what, exc)
            return default

    # --- the API ----------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """Return the cached value of ``key``, None if absent or expired."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                if entry[0] > now:
                    self._entries.move_to_end(key)
                    return entry[2]
                self._drop(key)
        shared = self._level2()
        if shared is None:
            logger.debug("region cache: %s not cached", key)
            return None
        found = self._level2_call("get", lambda: shared.get(_KEY_PREFIX + key))
        if found is None:
            logger.debug("region cache: %s not cached in the region", key)
            return None
        expires_at, size, value = found
        remaining = expires_at - time.time()
        if remaining > 0:
            self._local_set(key, value, remaining, size)
            return value
        return None

    def set(
        self, key: str, value: Any, *, ttl: float, size: int = 64, local_only: bool = False
    ) -> None:
        """Keep ``value`` for ``ttl`` seconds (``size``: its approximate bytes); None is not kept.

        ``local_only``: never in the shared level (facts that must not leave the process).
        """
        if ttl <= 0 or value is None:
            return
        self._local_set(key, value, ttl, size)
        shared = None if local_only else self._level2()
        if shared is not None:
            entry = (time.time() + ttl, size, value)
            self._level2_call(
                "set", lambda: shared.set(_KEY_PREFIX + key, entry, timeout=max(1, int(ttl) + 1))
            )

    def delete(self, keys: Iterable[str]) -> None:
        """Forget ``keys`` here and in the shared level."""
        keys = list(keys)
        with self._lock:
            for key in keys:
                self._drop(key)
        shared = self._level2()
        if shared is not None and keys:
            self._level2_call(
                "delete", lambda: shared.delete_many([_KEY_PREFIX + key for key in keys])
            )

    def delete_prefix(self, prefix: str) -> None:
        """Forget every entry of this process whose key starts with ``prefix``."""
        with self._lock:
            for key in [key for key in self._entries if key.startswith(prefix)]:
                self._drop(key)

    def reset(self) -> None:
        """Forget everything this process holds and look at the cache settings again (tests)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
        self._shared = None
        self._shared_known = False

    def __len__(self) -> int:
        return len(self._entries)

    # --- level 1 ----------------------------------------------------------------------------

    def _local_set(self, key: str, value: Any, ttl: float, size: int) -> None:
        if size > MAX_VALUE_BYTES:
            return
        with self._lock:
            self._drop(key)
            self._entries[key] = (time.monotonic() + ttl, size, value)
            self._bytes += size
            while self._entries and (
                len(self._entries) > self._max_entries or self._bytes > self._max_bytes
            ):
                oldest = next(iter(self._entries))
                self._drop(oldest)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]


region_cache = RegionCache()
