"""Reads about locations and placements, with the per-process engine cache."""

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connections

from quay_geo.checks import preference_ids
from storage_engines.base import StorageEngine
from storage_engines.registry import engine_create

from . import health
from .models import Blob, Placement, PlacementState, ReplicationSettings, StorageLocation
from .regioncache import content_ttl, region_cache

logger = logging.getLogger(__name__)


class PreferenceError(Exception):
    """The instance preference names a location that is not configured."""


@dataclass(frozen=True)
class LocationConfig:
    """One configuration version: its locations, in stored preference order."""

    version: int
    replication_enabled: bool
    locations: tuple[StorageLocation, ...]
    changed_at: datetime | None = None

    @property
    def key(self) -> tuple[int, datetime | None]:
        return (self.version, self.changed_at)

    def by_id(self) -> dict[str, StorageLocation]:
        return {location.location_id: location for location in self.locations}


_lock = threading.Lock()
_config: LocationConfig | None = None
#: When this process last asked the database for the configuration version (monotonic clock).
_config_checked_at = float("-inf")
#: Engines by (location ID, fingerprint of kind and options): a configuration change rebuilds
#: only the engines whose own settings changed.
_engines: dict[tuple[str, str], StorageEngine] = {}


def _fingerprint(location: StorageLocation) -> str:
    raw = json.dumps([location.kind, location.options, location.secrets], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


def config_check_seconds() -> float:
    """Return how long a process trusts its configuration before asking for the version again."""
    return float(getattr(settings, "QUAY_GEO_CONFIG_CHECK_SECONDS", 5.0))


def config_current() -> LocationConfig:
    """Return the current configuration, reloading it when its version changed.

    The version is asked at most every ``QUAY_GEO_CONFIG_CHECK_SECONDS``: the pull path of a far
    region must not ask the database on every request. A change made in this process is seen
    at once (``config_recheck``); elsewhere within that period.
    """
    global _config, _config_checked_at
    cached = _config
    if cached is not None and time.monotonic() - _config_checked_at < config_check_seconds():
        return cached
    row = ReplicationSettings.load()
    _config_checked_at = time.monotonic()
    # The change time is part of the key: a restored or emptied database can repeat a version.
    key = (row.config_version, row.updated_at)
    cached = _config
    if cached is not None and cached.key == key:
        return cached
    with _lock:
        if _config is None or _config.key != key:
            locations = tuple(StorageLocation.objects.order_by("rank", "location_id"))
            _config = LocationConfig(
                row.config_version, row.storage_replication_enabled, locations, row.updated_at
            )
            current = {(loc.location_id, _fingerprint(loc)) for loc in locations}
            for stale in [k for k in _engines if k not in current]:
                del _engines[stale]
        return _config


def location_engine(location: StorageLocation) -> StorageEngine:
    """Return the (cached) engine of a location, rebuilt when its settings change."""
    key = (location.location_id, _fingerprint(location))
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = engine_create(
                    kind=location.kind,
                    location_id=location.location_id,
                    options=location.engine_options(),
                )
                _engines[key] = engine
    return engine


def engines_warm() -> None:
    """Build the engine of every configured location now, so that no copy waits for it.

    A worker pool process calls this from a thread of its own as it starts
    (``quay_geo/celery.py``); the thread's database connection is closed at the end. Failures
    are logged: a location that cannot build its engine fails its copies with the reason instead.
    """
    try:
        for location in config_current().locations:
            try:
                location_engine(location).warm()
            except Exception:
                logger.exception("could not prepare the engine of %s", location.location_id)
    except Exception:
        logger.exception("could not read the storage locations to prepare their engines")
    finally:
        connections.close_all()


def preference_of_instance(config: LocationConfig | None = None) -> list[StorageLocation]:
    """Return every location, this instance's preferred ones first, then the stored order."""
    config = config or config_current()
    by_id = config.by_id()
    wanted = preference_ids(settings.QUAY_DISTRIBUTED_STORAGE_PREFERENCE)
    missing = [location_id for location_id in wanted if location_id not in by_id]
    if missing:
        raise PreferenceError(
            "QUAY_DISTRIBUTED_STORAGE_PREFERENCE names location(s) that are not configured: "
            + ", ".join(missing)
        )
    first = [by_id[location_id] for location_id in dict.fromkeys(wanted)]
    return first + [location for location in config.locations if location not in first]


def placements_present(
    blob: Blob,
    preference: list[StorageLocation] | None = None,
    present: list[Placement] | None = None,
) -> list[Placement]:
    """Return the blob's present placements ordered by this instance's preference.

    ``present``: the placements, when the caller has read them already (with their locations).
    """
    if preference is None:
        preference = preference_of_instance()
    order = {loc.pk: i for i, loc in enumerate(preference)}
    if present is None:
        present = list(
            Placement.objects.filter(blob=blob, state=PlacementState.PRESENT).select_related(
                "location"
            )
        )
    return sorted(present, key=lambda p: order.get(p.location_id, len(order)))


def config_recheck() -> None:
    """Make the next ``config_current`` ask the database (after a change made here)."""
    global _config_checked_at
    _config_checked_at = float("-inf")


def cache_clear() -> None:
    """Forget the cached configuration and engines (tests, or after a restore)."""
    global _config
    with _lock:
        _config = None
        _engines.clear()
    config_recheck()


def read_candidates(
    blob: Blob,
    preference: list[StorageLocation] | None = None,
    present: list[Placement] | None = None,
) -> list[Placement]:
    """Return the blob's present placements to read from: preferred and healthy ones first.

    Locations whose breaker is open go last instead of being dropped: trying a doubtful store
    beats answering that nothing holds the blob. ``preference`` and ``present`` save a caller
    that has them the configuration lookup and the placements query.
    """
    placements = placements_present(blob, preference, present)
    healthy = [p for p in placements if health.location_healthy(p.location.location_id)]
    return healthy + [p for p in placements if p not in healthy]


def upload_location_pick() -> StorageLocation:
    """Return the location new uploads go to: the first healthy one of the instance preference."""
    preference = preference_of_instance()
    if not preference:
        raise PreferenceError("no storage location is configured")
    for location in preference:
        if health.location_healthy(location.location_id):
            if location != preference[0]:
                logger.warning(
                    "preferred location %s is unhealthy; uploads go to %s",
                    preference[0].location_id,
                    location.location_id,
                )
            return location
    return preference[0]


def preference_check_at_start() -> None:
    """Raise PreferenceError if this process's preference cannot work; stops a process starting.

    A database without the tables yet (before the first migrate) is not an error here.
    """
    from django.db import DatabaseError

    try:
        config = config_current()
    except DatabaseError as exc:
        logger.warning("storage preference not checked: %s", exc)
        return
    preference = preference_of_instance(config)  # raises for an unknown location ID
    if config.replication_enabled and not preference:
        raise PreferenceError(
            "storage replication is enabled but no storage location is configured: add one "
            "in /superuser or turn replication off"
        )


# --- Blob facts in the region cache -------------------------------------------------------------


def _blob_key(digest: str) -> str:
    return f"b:{digest}"


def blob_facts_remember(blob: Blob, present: list[Placement]) -> None:
    """Cache a blob's size and the locations holding verified copies (``blob_facts_cached``)."""
    facts = (blob.pk, blob.digest, blob.size, blob.sha256, tuple(p.location_id for p in present))
    region_cache.set(_blob_key(blob.digest), facts, ttl=content_ttl())


def blob_facts_cached(digest: str) -> tuple[Blob, list[Placement]] | None:
    """Return a blob and its present placements from the region cache, None if not cached.

    The objects are rebuilt from the cached facts and the cached configuration: no query.
    A location removed since is left out; with none left the facts count as not cached.
    """
    facts = region_cache.get(_blob_key(digest))
    if facts is None:
        return None
    pk, digest, size, sha256, location_pks = facts
    by_pk = {location.pk: location for location in config_current().locations}
    blob = Blob(pk=pk, digest=digest, size=size, sha256=sha256)
    present = [
        Placement(blob=blob, location=by_pk[location_pk], state=PlacementState.PRESENT)
        for location_pk in location_pks
        if location_pk in by_pk
    ]
    return (blob, present) if present else None


def blob_facts_forget(digests: list[str]) -> None:
    """Drop the cached facts of these blobs (their placements or rows changed)."""
    region_cache.delete(_blob_key(digest) for digest in digests)
