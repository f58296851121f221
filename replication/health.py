"""A per-process circuit breaker: a location that keeps failing is skipped for a while."""

import logging
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_failures: dict[str, int] = {}
_open_until: dict[str, float] = {}


def _threshold() -> int:
    return int(getattr(settings, "QUAY_GEO_BREAKER_FAILURES", 3))


def _cooldown() -> float:
    return float(getattr(settings, "QUAY_GEO_BREAKER_SECONDS", 30))


def location_healthy(location_id: str) -> bool:
    """Return False while the location's breaker is open."""
    until = _open_until.get(location_id)
    return until is None or until <= time.monotonic()


def location_failed(location_id: str, *, reason: str, trip: bool = False) -> None:
    """Count a failed operation; open the breaker after several in a row, or at once if ``trip``."""
    with _lock:
        count = _failures.get(location_id, 0) + 1
        _failures[location_id] = count
        if trip or count >= _threshold():
            if location_healthy(location_id):
                logger.warning(
                    "location %s marked unhealthy for %ss: %s", location_id, _cooldown(), reason
                )
            _open_until[location_id] = time.monotonic() + _cooldown()


def location_succeeded(location_id: str) -> None:
    """Reset the failure count of a location."""
    if _failures.get(location_id) or location_id in _open_until:
        with _lock:
            _failures.pop(location_id, None)
            _open_until.pop(location_id, None)


def breaker_reset() -> None:
    """Forget every failure (tests)."""
    with _lock:
        _failures.clear()
        _open_until.clear()
