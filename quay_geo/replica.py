"""Reads from the region's PostgreSQL streaming replica, writes to the primary.

With ``DATABASE_REPLICA_URL`` set, the database alias ``replica`` names a hot standby near this
instance. :class:`ReplicaRouter` sends every write to ``default`` (the primary) and a read to
``replica`` only when all of these hold:

* the read runs inside a request that :class:`ReplicaMiddleware` admitted: a GET or HEAD of the
  registry API (``/v2/``) by a client whose last write the replica has replayed. Everything
  else (the panel, uploads, Celery tasks, management commands, threads) reads the primary;
* the replica is usable: the monitor's last check succeeded and the replica had replayed every
  commit of the primary no longer than ``DATABASE_REPLICA_MAX_LAG_SECONDS`` ago;
* the context is not inside :func:`primary_pinned`.

The monitor is one daemon thread per process, started by the first request. Every
``DATABASE_REPLICA_CHECK_SECONDS`` it notes the time ``t``, asks the primary for its WAL
position, then asks the replica how far it has replayed: at or past that position, the replica
holds every commit acknowledged before ``t`` ("caught up to t"). The lag is the time since.

Read-your-writes: after a write request that succeeded, the client (the token's user, else the
address) is marked in Django's cache with the time of the write; its reads go to the primary
while the replica is not caught up to that time. The cache is per process unless
``QUAY_GEO_REGION_CACHE_URL`` names a Redis shared by the region's processes.

A replica that fails within a request (a connection error, a query cancelled by recovery) is
marked down and the view answers again from the primary, in the same request.
"""

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.http import HttpRequest, HttpResponseBase

logger = logging.getLogger(__name__)

PRIMARY = "default"
REPLICA = "replica"
#: Requests whose reads may go to the replica: reads of the registry API.
READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REPLICA_PATH_PREFIX = "/v2/"
_MARK_PREFIX = "quay-geo:written:"
#: A write mark outlives the lag bound by this much (clock differences between hosts).
_MARK_MARGIN_SECONDS = 60

T = TypeVar("T")


def _lsn(text: str) -> int:
    """Return a PostgreSQL LSN ("16/B374D848") as an integer."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


class ReplicaHandler:
    """This process's view of its replica: the monitor's findings and who may read it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._may_read_replica: ContextVar[bool] = ContextVar(
            "quay_geo_may_read_replica", default=False
        )
        self._monitor: threading.Thread | None = None
        self._monitor_pid = 0
        self._stop = threading.Event()
        self._caught_up_to: float | None = None
        self._checked_at: float | None = None
        self._error = ""

    def reset(self) -> None:
        """Stop the monitor and forget every finding (for tests)."""
        self._stop.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join(timeout=5)
        with self._lock:
            self._monitor, self._monitor_pid = None, 0
            self._stop = threading.Event()
            self._caught_up_to = self._checked_at = None
            self._error = ""

    # --- configuration ---------------------------------------------------------------------

    def configured(self) -> bool:
        """Return whether a replica alias is configured."""
        return REPLICA in connections.settings

    def separate(self) -> bool:
        """Return whether the replica is another database than the primary (not a test mirror)."""
        if not self.configured():
            return False
        replica, primary = connections.settings[REPLICA], connections.settings[PRIMARY]
        return any(replica.get(key) != primary.get(key) for key in ("HOST", "PORT", "NAME"))

    @staticmethod
    def max_lag() -> float:
        return float(getattr(settings, "DATABASE_REPLICA_MAX_LAG_SECONDS", 5.0))

    @staticmethod
    def period() -> float:
        return max(float(getattr(settings, "DATABASE_REPLICA_CHECK_SECONDS", 1.0)), 0.05)

    # --- findings ----------------------------------------------------------------------------

    def lag(self, now: float | None = None) -> float | None:
        """Return the seconds since the replica was last known caught up; None if never."""
        caught_up_to = self._caught_up_to
        if caught_up_to is None:
            return None
        return max(0.0, (time.time() if now is None else now) - caught_up_to)

    def state(self) -> str:
        """Return ``none``, ``unchecked``, ``down``, ``lagging`` or ``ok``."""
        if not self.separate():
            return "none"
        if self._checked_at is None:
            return "unchecked"
        if self._error:
            return "down"
        lag = self.lag()
        if lag is None or lag > self.max_lag():
            return "lagging"
        return "ok"

    def usable(self) -> bool:
        """Return whether reads may go to the replica as far as its health and lag go."""
        return self.state() == "ok"

    def caught_up_with(self, written_at: float) -> bool:
        """Return whether the replica holds every commit acknowledged before ``written_at``."""
        caught_up_to = self._caught_up_to
        return caught_up_to is not None and caught_up_to >= written_at

    def mark_down(self, reason: str) -> None:
        """Record that the replica failed; reads skip it until a check succeeds."""
        self.record(error=self._redacted(reason) or "failed", caught_up_to=None)

    def record(self, *, error: str, caught_up_to: float | None) -> None:
        """Record the outcome of a check: an error (down), or the time it was caught up to."""
        with self._lock:
            was_down = bool(self._error)
            self._checked_at = time.time()
            self._error = error
            if caught_up_to is not None:
                self._caught_up_to = caught_up_to
        if error and not was_down:
            logger.warning("database replica is down, reading the primary: %s", error)
        elif was_down and not error:
            logger.info("database replica answers again")

    @staticmethod
    def _redacted(text: str) -> str:
        password = str(connections.settings.get(REPLICA, {}).get("PASSWORD") or "")
        return text.replace(password, "***").strip() if password else text.strip()

    # --- the monitor -------------------------------------------------------------------------

    def check(self) -> None:
        """Ask the primary, then the replica, how far the replica has replayed; record it."""
        started = time.time()  # before the primary answers: every commit acked by then counts
        try:
            with connections[PRIMARY].cursor() as cursor:
                cursor.execute("SELECT pg_current_wal_lsn()")
                primary_lsn = str(cursor.fetchone()[0])
        except DatabaseError as exc:
            # Unknown how far the replica is: its last catch-up ages until the bound ends it.
            logger.warning("replica check: the primary does not answer: %s", exc)
            connections[PRIMARY].close()
            return
        try:
            with connections[REPLICA].cursor() as cursor:
                cursor.execute("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text")
                in_recovery, replayed = cursor.fetchone()
        except DatabaseError as exc:
            self.record(error=self._redacted(str(exc)) or type(exc).__name__, caught_up_to=None)
            with contextlib.suppress(DatabaseError):
                connections[REPLICA].close()
            return
        caught_up = not in_recovery or (
            replayed is not None and _lsn(replayed) >= _lsn(primary_lsn)
        )
        self.record(error="", caught_up_to=started if caught_up else None)

    def monitor_ensure(self) -> None:
        """Start this process's monitor thread unless it runs (a fork starts its own)."""
        if not self.separate():
            return
        pid = os.getpid()
        monitor = self._monitor
        if monitor is not None and self._monitor_pid == pid and monitor.is_alive():
            return
        with self._lock:
            monitor = self._monitor
            if monitor is not None and self._monitor_pid == pid and monitor.is_alive():
                return
            thread = threading.Thread(
                target=self._monitor_loop, args=(self._stop,), name="replica-monitor", daemon=True
            )
            self._monitor, self._monitor_pid = thread, pid
        thread.start()

    def _monitor_loop(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.check()
                except Exception:  # a monitor that dies would leave the replica "ok" forever
                    logger.exception("replica check failed")
                    self.record(error="the check itself failed", caught_up_to=None)
                stop.wait(self.period())
        finally:
            connections.close_all()  # this thread's connections only (they are per thread)

    # --- routing -----------------------------------------------------------------------------

    def reads_replica(self) -> bool:
        """Return whether a read in the current context goes to the replica."""
        return self._may_read_replica.get() and self.usable()

    @contextlib.contextmanager
    def replica_allowed(self, allowed: bool) -> Iterator[None]:
        """Let reads in the block go to the replica (when usable) or not."""
        token = self._may_read_replica.set(allowed)
        try:
            yield
        finally:
            self._may_read_replica.reset(token)

    def primary_pinned(self) -> contextlib.AbstractContextManager[None]:
        """Return a context manager in which every read goes to the primary."""
        return self.replica_allowed(False)

    # --- read-your-writes --------------------------------------------------------------------

    def write_record(self, client: str, at: float | None = None) -> None:
        """Record that ``client`` wrote at ``at`` (now by default)."""
        timeout = int(self.max_lag()) + _MARK_MARGIN_SECONDS
        try:
            cache.set(_MARK_PREFIX + client, time.time() if at is None else at, timeout=timeout)
        except Exception:  # noqa: BLE001 - a cache outage must not fail a write that succeeded
            logger.warning("could not record the write of %s in the cache", client)

    def client_pinned(self, client: str) -> bool:
        """Return whether ``client`` wrote something the replica may not have replayed yet."""
        try:
            written_at = cache.get(_MARK_PREFIX + client)
        except Exception:  # noqa: BLE001 - without the mark, the primary is the safe answer
            logger.warning("could not read the write mark of %s from the cache", client)
            return True
        return written_at is not None and not self.caught_up_with(float(written_at))

    # --- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return what the status tab shows of the replica; never its password."""
        if not self.configured():
            return {"configured": False, "state": "none"}
        db = connections.settings[REPLICA]
        lag = self.lag()
        checked_at = self._checked_at
        return {
            "configured": True,
            "host": str(db.get("HOST") or ""),
            "port": str(db.get("PORT") or ""),
            "dbname": str(db.get("NAME") or ""),
            "state": self.state(),
            "lag_seconds": None if lag is None else round(lag, 3),
            "max_lag_seconds": self.max_lag(),
            "checked_at": (
                None if checked_at is None else datetime.fromtimestamp(checked_at, UTC).isoformat()
            ),
            "error": self._error,
        }


replicas = ReplicaHandler()


def primary_pinned() -> contextlib.AbstractContextManager[None]:
    """Return a context manager in which every read goes to the primary."""
    return replicas.primary_pinned()


def replica_status() -> dict[str, Any]:
    """Return this process's replica: host, port, database, state, lag; never the password."""
    return replicas.status()


def replica_failed(exc: BaseException) -> bool:
    """Return whether ``exc`` is the replica failing under a read routed to it."""
    return (
        isinstance(exc, OperationalError | InterfaceError)
        and replicas.reads_replica()
        and connections[REPLICA].errors_occurred
    )


def read_or_primary(fn: Callable[[], T], *, not_found: tuple[type[BaseException], ...] = ()) -> T:
    """Return ``fn()``; on a miss (None or ``not_found``) read on the replica, ask the primary."""
    if not replicas.reads_replica():
        return fn()
    try:
        result = fn()
    except not_found:
        with primary_pinned():
            return fn()
    if result is None:
        with primary_pinned():
            return fn()
    return result


class ReplicaRouter:
    """Writes and migrations to the primary; reads to the replica when the context allows."""

    def db_for_read(self, model: type, **hints: Any) -> str:
        return REPLICA if replicas.reads_replica() else PRIMARY

    def db_for_write(self, model: type, **hints: Any) -> str:
        return PRIMARY

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # one database, two copies of it

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == PRIMARY


def client_of(request: HttpRequest) -> str:
    """Return whose writes a request makes or reads: the token's user, else the address."""
    # Imported here: the router loads before the apps whose models these modules import.
    from registry.ratelimit import client_key

    identity = getattr(request, "_quay_geo_identity", None)  # cached by registry.auth
    user = getattr(identity, "user", None)
    if user is not None:
        return client_key(request, user.pk)
    return client_key(request, _token_user_id(request))


def _token_user_id(request: HttpRequest) -> int | None:
    """Return the ``uid`` claim of a valid bearer token, without touching the database."""
    from registry.auth import service_of
    from registry.tokens import TokenInvalid, token_verify

    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    try:
        return token_verify(token=credentials.strip(), audience=service_of(request)).user_id
    except TokenInvalid:
        return None


class ReplicaMiddleware:
    """Admit registry reads to the replica, mark writers, answer again when the replica fails."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not replicas.separate():
            return self.get_response(request)
        replicas.monitor_ensure()
        admitted = (
            request.method in READ_METHODS
            and request.path.startswith(REPLICA_PATH_PREFIX)
            and not replicas.client_pinned(client_of(request))
        )
        with replicas.replica_allowed(admitted):
            response = self.get_response(request)
        if request.method in WRITE_METHODS and response.status_code < 400:
            replicas.write_record(client_of(request))
        return response

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., HttpResponseBase],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        if not replicas.reads_replica():
            return None  # Django calls the view as usual
        # Set only by an error of this request from here on: a stale flag belongs to a
        # connection closed when the request started.
        connections[REPLICA].errors_occurred = False
        try:
            return view_func(request, *view_args, **view_kwargs)
        except (OperationalError, InterfaceError) as exc:
            if not connections[REPLICA].errors_occurred:
                raise
            replicas.mark_down(str(exc))
            with contextlib.suppress(DatabaseError):
                connections[REPLICA].close()
            logger.warning(
                "the replica failed on %s %s; answering from the primary",
                request.method,
                request.path,
            )
            with primary_pinned():
                return view_func(request, *view_args, **view_kwargs)
