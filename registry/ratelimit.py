"""A small per-client request limiter for the registry API, kept in Django's cache.

Each client (the token's user, else the remote address) may make
``QUAY_GEO_RATE_LIMIT_PER_MINUTE`` requests per fixed one-minute window; 0 (the default) turns
the limiter off. Beyond it the answer is ``TOOMANYREQUESTS`` (429) with ``Retry-After`` set to
the seconds left in the window. Counters live in the default cache: configure a shared cache
(Redis) so that every web process counts the same requests.
"""

import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from quay_geo.proxies import client_address

from . import errors

WINDOW_SECONDS = 60


def limit_per_minute() -> int:
    """Return the configured limit; 0 means no limit."""
    return int(getattr(settings, "QUAY_GEO_RATE_LIMIT_PER_MINUTE", 0) or 0)


def client_key(request: HttpRequest, user_id: int | None) -> str:
    """Return who is counted for a request: the user, else the client's address."""
    if user_id is not None:
        return f"user:{user_id}"
    return f"ip:{client_address(request)}"


def rate_check(*, client: str, now: float | None = None) -> None:
    """Count one request of ``client``; raise TooManyRequests once over the limit."""
    limit = limit_per_minute()
    if limit <= 0:
        return
    now = time.time() if now is None else now
    window = int(now // WINDOW_SECONDS)
    key = f"quay-geo:ratelimit:{client}:{window}"
    cache.add(key, 0, timeout=WINDOW_SECONDS + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr: this request opens a new count
        cache.set(key, 1, timeout=WINDOW_SECONDS + 5)
        count = 1
    if count > limit:
        retry_after = max(1, math.ceil((window + 1) * WINDOW_SECONDS - now))
        raise errors.TooManyRequests(
            {"limit": limit, "window_seconds": WINDOW_SECONDS},
            message=f"more than {limit} requests per minute; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
