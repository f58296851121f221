"""Heartbeats: every web and worker process says who it is and which locations it reaches.

Each process writes one ``InstanceHeartbeat`` row (host, role, storage preference, version, the
outcome of its last probe of every location, and its database replica's state and lag). The
``/superuser`` status tab shows them as a matrix of instances by locations, so a region that
cannot reach some engine shows before it breaks replication. Web processes beat from
:class:`HeartbeatMiddleware` (in a background thread, never delaying a request); a worker beats
from a thread started on ``worker_ready``, and the ``replication.heartbeat`` task is there for
beat schedules.
"""

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from importlib import metadata
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from quay_geo.replica import replica_status, replicas

from . import health
from .config import probes_run
from .models import InstanceHeartbeat, StorageLocation
from .selectors import preference_of_instance
from .services import placements_rearm

logger = logging.getLogger(__name__)

#: A probe from a heartbeat must be quick: it runs every interval in every process.
PROBE_TIMEOUT = 3.0
#: Rows not seen for this long are deleted.
FORGET_AFTER = timedelta(days=1)

_lock = threading.Lock()
_last_probe: dict[str, float] = {}
_last_beat: dict[str, float] = {}
_running: set[str] = set()


def heartbeat_interval() -> float:
    """Return the seconds between two heartbeats of a process (0 or less: no heartbeats)."""
    return float(getattr(settings, "QUAY_GEO_HEARTBEAT_SECONDS", 30.0))


def instance_id(role: str) -> str:
    """Return this process's identity: host, process id and role."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


def _version() -> str:
    try:
        return metadata.version("quay-geo")
    except metadata.PackageNotFoundError:
        return "dev"


def _preference() -> str:
    wanted = str(getattr(settings, "QUAY_DISTRIBUTED_STORAGE_PREFERENCE", "") or "")
    if wanted.strip():
        return " ".join(wanted.replace(",", " ").split())
    try:
        return " ".join(location.location_id for location in preference_of_instance())
    except Exception:  # noqa: BLE001 - a heartbeat reports; it must never raise over a preference
        return ""


def _reachability(timeout: float) -> dict[str, dict[str, Any]]:
    """Probe every location in parallel; return ``{location ID: {ok, error, at}}``."""
    locations = list(StorageLocation.objects.order_by("rank", "location_id"))
    jobs = {loc.location_id: (loc.kind, loc.location_id, loc.engine_options()) for loc in locations}
    at = timezone.now().isoformat()
    results = probes_run(jobs, timeout=timeout)
    for location_id, error in results.items():
        # A failed probe opens the location's breaker in this process: uploads go elsewhere
        # and reads try other copies first until it answers again.
        if error is None:
            health.location_succeeded(location_id)
        else:
            health.location_failed(location_id, reason=error, trip=True)
    return {
        location_id: {"ok": error is None, "error": error or "", "at": at}
        for location_id, error in results.items()
    }


def recovered(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Return the locations whose probe failed last time and succeeds now."""
    return [
        location_id
        for location_id, result in after.items()
        if result.get("ok") and (before.get(location_id) or {}).get("ok") is False
    ]


def heartbeat_record(
    *, role: str, probe: bool = True, timeout: float = PROBE_TIMEOUT
) -> InstanceHeartbeat:
    """Write this process's heartbeat; probe every location at most once per interval."""
    key = instance_id(role)
    now = time.monotonic()
    interval = max(heartbeat_interval(), 1.0)
    previous = InstanceHeartbeat.objects.filter(instance_id=key).first()
    reachable = previous.reachable if previous is not None else {}
    if probe and now - _last_probe.get(key, -interval) >= interval:
        _last_probe[key] = now
        reachable, before = _reachability(timeout), reachable
        placements_rearm(location_ids=recovered(before, reachable))
    replicas.monitor_ensure()  # a worker serves no request that would start it
    beat, _ = InstanceHeartbeat.objects.update_or_create(
        instance_id=key,
        defaults={
            "host": socket.gethostname(),
            "role": role,
            "preference": _preference()[:500],
            "version": _version()[:32],
            "reachable": reachable,
            "replica": replica_status(),
            "seen_at": timezone.now(),
        },
    )
    InstanceHeartbeat.objects.filter(seen_at__lt=timezone.now() - FORGET_AFTER).delete()
    return beat


def _beat_safely(role: str) -> None:
    try:
        heartbeat_record(role=role, probe=True)
    except Exception:
        logger.exception("could not record the heartbeat of this %s process", role)
    finally:
        close_old_connections()
        with _lock:
            _running.discard(role)


def heartbeat_maybe(role: str) -> bool:
    """Start a background heartbeat if the last one is an interval old; return True if started."""
    interval = heartbeat_interval()
    if interval <= 0:
        return False
    now = time.monotonic()
    with _lock:
        if role in _running or now - _last_beat.get(role, -interval) < interval:
            return False
        _running.add(role)
        _last_beat[role] = now
    threading.Thread(target=_beat_safely, args=(role,), name="heartbeat", daemon=True).start()
    return True


class HeartbeatMiddleware:
    """Record the web process's heartbeat, at most once per interval, off the request path."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        heartbeat_maybe("web")
        return self.get_response(request)


@shared_task(name="replication.heartbeat", ignore_result=True)
def heartbeat_task() -> str:
    """Record the heartbeat of the worker that runs this task."""
    return heartbeat_record(role="worker", probe=True).instance_id


_worker_stop = threading.Event()


def _worker_loop() -> None:
    while not _worker_stop.is_set():
        _beat_safely("worker")
        _worker_stop.wait(max(heartbeat_interval(), 1.0))


@worker_ready.connect
def _worker_started(**kwargs: Any) -> None:
    if heartbeat_interval() > 0:
        threading.Thread(target=_worker_loop, name="heartbeat", daemon=True).start()


@worker_shutdown.connect
def _worker_stopped(**kwargs: Any) -> None:
    _worker_stop.set()
    try:
        InstanceHeartbeat.objects.filter(instance_id=instance_id("worker")).delete()
    except Exception:  # noqa: BLE001 - shutting down: the row will go stale by itself
        logger.warning("could not remove the heartbeat of this worker")
