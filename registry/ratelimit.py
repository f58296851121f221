"""A small per-client request limiter for the registry API, counted across processes.

Each client (the token's user, else the client's address) may make
``QUAY_GEO_RATE_LIMIT_PER_MINUTE`` requests per fixed one-minute window; 0 (the default) turns
the limiter off. Beyond it the answer is ``TOOMANYREQUESTS`` (429) with ``Retry-After`` set to
the seconds left in the window. Counts are shared by every process (``registry.counters``): in
the Redis cache when one is configured, otherwise in the database, one statement per request.
"""

import math
import time

from django.conf import settings
from django.http import HttpRequest

from quay_geo.proxies import client_address

from . import errors
from .counters import counters

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
    left = (window + 1) * WINDOW_SECONDS - now
    count = counters.hit(f"ratelimit:{client}:{window}", ttl=left + 5, now=now)
    if count > limit:
        retry_after = max(1, math.ceil(left))
        raise errors.TooManyRequests(
            {"limit": limit, "window_seconds": WINDOW_SECONDS},
            message=f"more than {limit} requests per minute; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
