"""Process-level endpoints: health checks for load balancers, and Prometheus metrics.

``/health/endtoend`` writes, reads and deletes an object in every location: it probes at most
once per ``QUAY_GEO_HEALTH_CACHE_SECONDS`` (its answer kept in the default cache, shared by the
region's processes when Redis is configured), and names locations and their errors (endpoints,
buckets) only to a signed-in superuser or a caller with the metrics token; anyone else learns
ok or not.
"""

import concurrent.futures
import hmac
import threading
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse

from replication.metrics import metrics_lines
from replication.selectors import (
    PreferenceError,
    config_current,
    location_engine,
    preference_of_instance,
)
from storage_engines.errors import StorageError

PROBE_TIMEOUT = 5.0
ENDTOEND_CACHE_KEY = "health:endtoend"
#: One end-to-end probe at a time in a process: a burst of callers waits for its answer.
_endtoend_lock = threading.Lock()


def _database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


def _broker() -> dict[str, Any]:
    from quay_geo.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:  # noqa: BLE001 - any broker failure means unhealthy
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


def _probe_all(locations: list[Any]) -> dict[str, dict[str, Any]]:
    def probe(location: Any) -> dict[str, Any]:
        try:
            location_engine(location).probe(timeout=PROBE_TIMEOUT)
        except StorageError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True}

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(locations))) as pool:
        results = pool.map(probe, locations)
        return {loc.location_id: result for loc, result in zip(locations, results, strict=True)}


def _healthy(checks: dict[str, Any]) -> bool:
    return all(
        check.get("ok", False) if "ok" in check else all(v["ok"] for v in check.values())
        for check in checks.values()
    )


def _answer(checks: dict[str, Any], *, details: bool = True) -> JsonResponse:
    healthy = _healthy(checks)
    body = {"status": "ok" if healthy else "fail", **(checks if details else {})}
    return JsonResponse(body, status=200 if healthy else 503)


def _metrics_token_sent(request: HttpRequest) -> bool:
    token = getattr(settings, "QUAY_GEO_METRICS_TOKEN", "")
    sent = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())


def health_instance(request: HttpRequest) -> JsonResponse:
    """Answer whether this instance reaches its database, broker and preferred storage."""
    checks: dict[str, Any] = {"database": _database(), "broker": _broker()}
    if checks["database"]["ok"]:
        try:
            preferred = preference_of_instance()[:1]
        except PreferenceError as exc:
            checks["storage"] = {"configuration": {"ok": False, "error": str(exc)}}
        else:
            checks["storage"] = _probe_all(preferred)
    return _answer(checks)


def _endtoend_checks() -> dict[str, Any]:
    """Return the last end-to-end checks if still fresh, otherwise probe and keep them."""
    checks: dict[str, Any] | None = cache.get(ENDTOEND_CACHE_KEY)
    if checks is not None:
        return checks
    with _endtoend_lock:
        checks = cache.get(ENDTOEND_CACHE_KEY)
        if checks is not None:  # probed by another thread while this one waited
            return checks
        checks = {"database": _database()}
        if checks["database"]["ok"]:
            checks["storage"] = _probe_all(list(config_current().locations))
        lifetime = float(getattr(settings, "QUAY_GEO_HEALTH_CACHE_SECONDS", 30.0))
        if lifetime > 0:
            cache.set(ENDTOEND_CACHE_KEY, checks, timeout=lifetime)
    return checks


def health_endtoend(request: HttpRequest) -> JsonResponse:
    """Answer whether every configured location can be written, read and deleted."""
    user = getattr(request, "user", None)
    details = _metrics_token_sent(request) or bool(
        user is not None and user.is_authenticated and user.is_superuser
    )
    return _answer(_endtoend_checks(), details=details)


def metrics(request: HttpRequest) -> HttpResponse:
    """Serve the replication metrics in Prometheus' text format."""
    token = getattr(settings, "QUAY_GEO_METRICS_TOKEN", "")
    if token and request.headers.get("Authorization") != f"Bearer {token}":
        return HttpResponse("unauthorized\n", status=401, content_type="text/plain")
    body = "\n".join(metrics_lines()) + "\n"
    return HttpResponse(body, content_type="text/plain; version=0.0.4")
