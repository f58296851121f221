"""Heartbeats: every web and worker service says who it is and which locations its host reaches.

One ``InstanceHeartbeat`` row per service and host (host, role, storage preference, version, the
outcome of the host's last probe of every location, and its database replica's state and lag):
the gunicorn workers of one web service share one identity, and a Celery worker beats from its
main process, so the ``/superuser`` status tab counts services, not processes. Locations are
probed once per host and interval, whichever process of the host claims ``HostProbe`` first
(one conditional ``UPDATE``); the others reuse its result. Web processes beat from a background
thread started with :class:`HeartbeatMiddleware`, so an idle one stays fresh; a worker beats
from a thread started on ``worker_ready``, and the ``replication.heartbeat`` task is there for
beat schedules.
"""

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from quay_geo.replica import replica_status, replicas

from . import health
from .config import probes_run
from .models import HostProbe, InstanceHeartbeat, StorageLocation
from .selectors import preference_of_instance
from .services import placements_rearm

logger = logging.getLogger(__name__)

#: A probe from a heartbeat must be quick: it runs every interval on every host.
PROBE_TIMEOUT = 3.0
#: Rows not seen for this long are deleted.
FORGET_AFTER = timedelta(days=1)
#: A host's probe may be claimed this much before a full interval has passed, so that the
#: process that probed last period, beating a little early, still finds it claimable.
CLAIM_SLACK_SECONDS = 1.0
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def heartbeat_interval() -> float:
    """Return the seconds between two heartbeats of a process (0 or less: no heartbeats)."""
    return float(getattr(settings, "QUAY_GEO_HEARTBEAT_SECONDS", 30.0))


def _host() -> str:
    return socket.gethostname()


def instance_id(role: str) -> str:
    """Return this service's identity: host, role and its name (``QUAY_GEO_SERVICE_NAME``, by
    default the configured preference), not the pid."""
    name = str(getattr(settings, "QUAY_GEO_SERVICE_NAME", "") or "")
    if not name:
        wanted = str(getattr(settings, "QUAY_DISTRIBUTED_STORAGE_PREFERENCE", "") or "")
        name = ",".join(wanted.replace(",", " ").split())
    return f"{_host()}:{role}:{name}"[:200]


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


class _ProbeState:
    """What this process knows of its host's probe: the time of the last result it applied."""

    def __init__(self) -> None:
        self.applied_at: datetime | None = None

    def reset(self) -> None:
        self.applied_at = None


_probe_state = _ProbeState()


def probe_claim(*, who: str) -> bool:
    """Return True if this process is to probe for its host now (a conditional ``UPDATE``).

    Once an interval one process of the host moves ``claimed_at`` and probes; the others' update
    matches nothing. The host's first claim inserts its row (ignored if another process did).
    """
    host, now = _host(), timezone.now()
    claimable = now - timedelta(seconds=max(heartbeat_interval(), 1.0) - CLAIM_SLACK_SECONDS)

    def claim() -> bool:
        return bool(
            HostProbe.objects.filter(host=host, claimed_at__lte=claimable).update(
                claimed_at=now, claimed_by=who[:200]
            )
        )

    if claim():
        return True
    if HostProbe.objects.filter(host=host).exists():
        return False
    HostProbe.objects.bulk_create([HostProbe(host=host, claimed_at=_EPOCH)], ignore_conflicts=True)
    return claim()


def host_probe(*, who: str, timeout: float = PROBE_TIMEOUT) -> dict[str, dict[str, Any]]:
    """Return the host's last probe of every location; probe first if this process claims it.

    The prober re-arms placements that gave up on a location whose probe failed last time and
    succeeds now. Every process applies a result it has not seen yet to its breaker (a failed
    probe opens it; shared through Redis where configured, so this repeats what is known).
    """
    host = _host()
    probed_at: datetime | None
    if probe_claim(who=who):
        before = HostProbe.objects.filter(host=host).values_list("reachable", flat=True).first()
        reachable, probed_at = _reachability(timeout), timezone.now()
        HostProbe.objects.filter(host=host).update(reachable=reachable, probed_at=probed_at)
        placements_rearm(location_ids=recovered(before or {}, reachable))
    else:
        row = HostProbe.objects.filter(host=host).first()
        reachable = row.reachable if row is not None else {}
        probed_at = row.probed_at if row is not None else None
        if probed_at is None or probed_at == _probe_state.applied_at:
            return reachable
    _probe_state.applied_at = probed_at
    for location_id, result in reachable.items():
        # A failed probe opens the location's breaker: uploads go elsewhere and reads try
        # other copies first until it answers again.
        if result.get("ok"):
            health.location_succeeded(location_id)
        else:
            health.location_failed(location_id, reason=str(result.get("error")), trip=True)
    return reachable


def heartbeat_record(
    *, role: str, probe: bool = True, timeout: float = PROBE_TIMEOUT
) -> InstanceHeartbeat:
    """Write this service's heartbeat with its host's probe (probed at most once per interval)."""
    key = instance_id(role)
    if probe:
        reachable = host_probe(who=f"{key}:{os.getpid()}", timeout=timeout)
    else:
        previous = InstanceHeartbeat.objects.filter(instance_id=key).first()
        reachable = previous.reachable if previous is not None else {}
    replicas.monitor_ensure()  # a worker serves no request that would start it
    beat, _ = InstanceHeartbeat.objects.update_or_create(
        instance_id=key,
        defaults={
            "host": _host(),
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
        connections.close_all()  # this thread's own connections, not held between beats


class _Beater:
    """One background thread per process that beats every interval, started at most once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self.stop = threading.Event()

    def ensure(self, role: str) -> bool:
        """Start this process's heartbeat thread unless it runs; return True if started."""
        if self._pid == os.getpid() or heartbeat_interval() <= 0:
            return False
        with self._lock:
            if self._pid == os.getpid():
                return False
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, args=(role,), name="heartbeat", daemon=True
            )
        self._thread.start()
        return True

    def halt(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for a beat in progress to end."""
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, role: str) -> None:
        while not self.stop.is_set():
            _beat_safely(role)
            self.stop.wait(max(heartbeat_interval(), 1.0))


_beater = _Beater()


class HeartbeatMiddleware:
    """Start the web process's heartbeat thread when the application loads (or, after a fork,
    with the first request): it beats every interval, with or without traffic."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        _beater.ensure("web")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        _beater.ensure("web")
        return self.get_response(request)


@shared_task(name="replication.heartbeat", ignore_result=True)
def heartbeat_task() -> str:
    """Record the heartbeat of the worker that runs this task."""
    return heartbeat_record(role="worker", probe=True).instance_id


@worker_ready.connect
def _worker_started(**kwargs: Any) -> None:
    _beater.ensure("worker")  # worker_ready fires in the main process, not in pool children


@worker_shutdown.connect
def _worker_stopped(**kwargs: Any) -> None:
    _beater.halt()
    try:
        InstanceHeartbeat.objects.filter(instance_id=instance_id("worker")).delete()
    except Exception:  # noqa: BLE001 - shutting down: the row will go stale by itself
        logger.warning("could not remove the heartbeat of this worker")
