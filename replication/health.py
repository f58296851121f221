"""A circuit breaker: a location that keeps failing is skipped for a while, by every process.

Where Django's default cache is shared (Redis: ``QUAY_GEO_REGION_CACHE_URL``), failures and the
open state live there, so a store one process found hung is skipped by the region's others
within ``SHARED_CHECK_SECONDS``. Otherwise (a per-process memory cache) each process keeps its
own breaker. The shared state is read at most once a second per location and process, so a
healthy pull pays no extra round trip to the cache on most requests.
"""

import logging
import threading
import time

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger(__name__)

#: How long a process trusts what it last read of the shared breaker, in seconds.
SHARED_CHECK_SECONDS = 1.0
_LOCAL_BACKENDS = ("locmem", "dummy", "filebased")


def _threshold() -> int:
    return int(getattr(settings, "QUAY_GEO_BREAKER_FAILURES", 3))


def _cooldown() -> float:
    return float(getattr(settings, "QUAY_GEO_BREAKER_SECONDS", 30))


def breaker_shared() -> bool:
    """Return whether Django's default cache is shared between processes (not in memory)."""
    backend = str(settings.CACHES.get("default", {}).get("BACKEND", "")).lower()
    return not any(kind in backend for kind in _LOCAL_BACKENDS)


class Breaker:
    """Failure counts and open-until times per location: in this process, and shared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}  # wall-clock seconds, comparable across hosts
        self._checked: dict[str, float] = {}  # monotonic time of the last shared read

    @staticmethod
    def _keys(location_id: str) -> tuple[str, str]:
        return f"breaker:failures:{location_id}", f"breaker:open:{location_id}"

    def healthy(self, location_id: str) -> bool:
        """Return False while the location's breaker is open here or, if shared, anywhere."""
        now = time.time()
        until = self._open_until.get(location_id)
        if until is not None and until > now:
            return False
        if not breaker_shared():
            return True
        checked = self._checked.get(location_id)
        if checked is not None and time.monotonic() - checked < SHARED_CHECK_SECONDS:
            return True
        shared_until = cache.get(self._keys(location_id)[1])
        with self._lock:
            self._checked[location_id] = time.monotonic()
            if shared_until is not None and float(shared_until) > now:
                self._open_until[location_id] = float(shared_until)
                return False
        return True

    def failed(self, location_id: str, *, reason: str, trip: bool) -> None:
        """Count a failure; open the breaker after several in a row, or at once if ``trip``."""
        failures_key, open_key = self._keys(location_id)
        cooldown = _cooldown()
        with self._lock:
            count = self._failures.get(location_id, 0) + 1
            self._failures[location_id] = count
        if breaker_shared():
            cache.add(failures_key, 0, timeout=cooldown)
            count = max(count, int(cache.incr(failures_key)))
        if not (trip or count >= _threshold()):
            return
        if self.healthy(location_id):
            logger.warning(
                "location %s marked unhealthy for %ss: %s", location_id, cooldown, reason
            )
        until = time.time() + cooldown
        with self._lock:
            self._open_until[location_id] = until
        if breaker_shared():
            cache.set(open_key, until, timeout=cooldown)

    def succeeded(self, location_id: str) -> None:
        """Close the location's breaker and forget its failures, here and shared."""
        if not (self._failures.get(location_id) or location_id in self._open_until):
            return
        with self._lock:
            self._failures.pop(location_id, None)
            self._open_until.pop(location_id, None)
        if breaker_shared():
            cache.delete_many(list(self._keys(location_id)))

    def reset(self) -> None:
        """Forget every failure this process knows of, and the shared ones it counted."""
        with self._lock:
            known = set(self._failures) | set(self._open_until) | set(self._checked)
            self._failures.clear()
            self._open_until.clear()
            self._checked.clear()
        if known and breaker_shared():
            cache.delete_many([key for location in known for key in self._keys(location)])


breaker = Breaker()


def location_healthy(location_id: str) -> bool:
    """Return False while the location's breaker is open."""
    return breaker.healthy(location_id)


def location_failed(location_id: str, *, reason: str, trip: bool = False) -> None:
    """Count a failed operation; open the breaker after several in a row, or at once if ``trip``."""
    breaker.failed(location_id, reason=reason, trip=trip)


def location_succeeded(location_id: str) -> None:
    """Reset the failure count of a location."""
    breaker.succeeded(location_id)


def breaker_reset() -> None:
    """Forget every failure (tests)."""
    breaker.reset()
