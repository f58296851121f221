"""Read the storage configuration, validate all of it, and save it in one go.

The ``/superuser`` panel, the JSON API, ``importquayconfig`` and ``addlocation`` (through
:func:`location_add`) all save through :func:`storage_config_save`, so one set of rules applies
everywhere: nothing is stored unless every location passes its engine's own options form, the
ID rules, the replication rules, the removal rule and (unless told otherwise) a live probe run
in parallel; then the rows, the audit entry and the version bump go in one transaction. A failed
probe stores nothing and bumps nothing, so no process ever caches a location that was not kept.
"""

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import IntegrityError, transaction

from storage_engines.errors import InvalidOptions
from storage_engines.options import options_clean
from storage_engines.registry import CONFIGURABLE_KINDS, engine_class

from ..locations import LocationInUse, blobs_only_at, location_remove
from ..models import (
    AuditEntry,
    InstanceHeartbeat,
    Placement,
    PlacementState,
    ReplicationSettings,
    ServeMode,
    StorageLocation,
)
from ..services import config_version_bump
from ..targets import LOCAL_REFUSED
from .audit import changes_of
from .probes import PROBE_TIMEOUT, probes_run

logger = logging.getLogger(__name__)

LOCATION_ID = re.compile(r"^[A-Za-z0-9_-]+$")
#: The card-level key of an error that belongs to no single field.
CARD = "__all__"
#: Options that say where the bytes are: changing one strands what the location holds.
LOCATING_OPTIONS = frozenset(
    {
        "s3_bucket",
        "bucket_name",
        "swift_container",
        "storage_path",
        "endpoint_url",
        "hostname",
        "port",
        "api_endpoint",
        "auth_url",
    }
)
NO_DEFAULT_WARNING = (
    "Storage replication is enabled but no location is marked “Replicate to storage engine by "
    "default”: nothing will replicate, except to the extra locations of namespaces."
)


@dataclass
class LocationSpec:
    """One storage location as an editor wants it to be."""

    location_id: str
    kind: str
    #: Engine options; a blank secret keeps the stored one (same kind), unless cleared.
    options: dict[str, Any] = field(default_factory=dict)
    replicate_by_default: bool = False
    serve_mode: str = ServeMode.REDIRECT
    #: The stored row this spec edits (a rename keeps it); None for a new location or when the
    #: row is to be found by location ID.
    pk: int | None = None
    delete: bool = False
    secrets_clear: frozenset[str] = frozenset()
    #: Read side only: the names of the secrets stored for this location.
    secrets_stored: frozenset[str] = frozenset()


@dataclass
class StorageConfig:
    """Replication on or off, and every location in preference order."""

    replication_enabled: bool
    locations: list[LocationSpec]
    #: The config version the edit started from; a save fails if it moved meanwhile.
    version: int | None = None


@dataclass
class SaveResult:
    """What a save did, or why it stored nothing."""

    #: Per index of ``StorageConfig.locations``: field name (or CARD) -> messages.
    errors: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    #: Errors that belong to no card (a location removed by omission, a concurrent edit).
    general: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    saved: bool = False
    #: Location IDs that became default replication targets with this save.
    new_defaults: list[str] = field(default_factory=list)
    version: int | None = None
    changes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.general

    def add(self, index: int, name: str, message: str) -> None:
        self.errors.setdefault(index, {}).setdefault(name, []).append(message)


def storage_config_read() -> StorageConfig:
    """Return the stored configuration; secrets are named, never returned."""
    row = ReplicationSettings.load()
    return StorageConfig(
        replication_enabled=row.storage_replication_enabled,
        version=row.config_version,
        locations=[
            LocationSpec(
                location_id=loc.location_id,
                kind=loc.kind,
                options=dict(loc.options),
                replicate_by_default=loc.replicate_by_default,
                serve_mode=loc.serve_mode,
                pk=loc.pk,
                secrets_stored=frozenset(loc.secrets),
            )
            for loc in StorageLocation.objects.order_by("rank", "location_id")
        ],
    )


def storage_config_save(
    *,
    config: StorageConfig,
    actor: str,
    user: Any = None,
    probe: bool = True,
    probe_timeout: float = PROBE_TIMEOUT,
    dry_run: bool = False,
    probe_only: frozenset[str] | None = None,
    extra_kinds: frozenset[str] = frozenset(),
) -> SaveResult:
    """Validate the whole configuration and, only if all of it is valid, store it atomically.

    With ``dry_run`` everything is checked (probes included) and nothing is stored.
    ``probe_only``: the location IDs to probe (None: all), so that adding one location is not
    refused because another one is down. ``extra_kinds``: engine kinds allowed besides the
    configurable ones (``addlocation`` may add the in-memory engine of tests).
    """
    result = SaveResult()
    existing = {loc.pk: loc for loc in StorageLocation.objects.all()}
    settings_row = ReplicationSettings.load()
    _version_check(config, settings_row.config_version, result)
    _pks_resolve(config, existing, result)
    cleaned = _validate(config, existing, result, extra_kinds)
    removed = _removals(config, existing, result)
    if probe:
        jobs = {
            index: (spec.kind, spec.location_id, cleaned[index])
            for index, spec in enumerate(config.locations)
            if index in cleaned
            and index not in result.errors
            and (probe_only is None or spec.location_id in probe_only)
        }
        for index, message in probes_run(jobs, timeout=probe_timeout).items():
            if message:
                result.add(index, CARD, message)
    _warnings(config, cleaned, existing, removed, result)
    if not result.ok or dry_run:
        return result
    try:
        _store(config, cleaned, existing, removed, settings_row, actor, user, result)
    except LocationInUse as exc:
        result.general.append(str(exc))
    except _VersionMoved as exc:
        result.general.append(str(exc))
    except IntegrityError:
        result.general.append("Another save changed the locations at the same time; try again.")
    return result


class _VersionMoved(Exception):
    pass


def _version_message(seen: int, current: int) -> str:
    return (
        f"The storage configuration changed since this page was loaded (version {seen} is now "
        f"{current}). Reload it and make your changes again."
    )


def _version_check(config: StorageConfig, current: int, result: SaveResult) -> None:
    if config.version is not None and config.version != current:
        result.general.append(_version_message(config.version, current))


def _pks_resolve(
    config: StorageConfig, existing: dict[int, StorageLocation], result: SaveResult
) -> None:
    """Give a spec without a row the row of the same location ID, unless another spec holds it."""
    claimed = {spec.pk for spec in config.locations if spec.pk is not None}
    by_id = {loc.location_id: loc.pk for loc in existing.values()}
    for index, spec in enumerate(config.locations):
        if spec.pk is not None:
            if spec.pk not in existing:
                result.add(index, CARD, "This location was removed meanwhile; reload the page.")
            continue
        pk = by_id.get(spec.location_id.strip())
        if pk is not None and pk not in claimed:
            spec.pk = pk
            claimed.add(pk)


def _validate(
    config: StorageConfig,
    existing: dict[int, StorageLocation],
    result: SaveResult,
    extra_kinds: frozenset[str] = frozenset(),
) -> dict[int, dict[str, Any]]:
    """Check every kept location; return the cleaned engine options by spec index."""
    if not any(not spec.delete for spec in config.locations):
        result.general.append("Configure at least one storage location.")
    seen: set[str] = set()
    cleaned: dict[int, dict[str, Any]] = {}
    for index, spec in enumerate(config.locations):
        if spec.delete:
            continue
        spec.location_id = spec.location_id.strip()
        row = existing.get(spec.pk) if spec.pk is not None else None
        if not spec.location_id:
            result.add(index, "location_id", "This field is required.")
        elif not LOCATION_ID.match(spec.location_id) or len(spec.location_id) > 64:
            result.add(
                index, "location_id", "Use up to 64 letters, digits, '_' and '-' (no spaces)."
            )
        elif spec.location_id in seen:
            result.add(index, "location_id", "Location ID must be unique.")
        seen.add(spec.location_id)
        if spec.serve_mode not in ServeMode.values:
            result.add(index, "serve_mode", f"Choose one of: {', '.join(ServeMode.values)}.")
        allowed = set(CONFIGURABLE_KINDS) | extra_kinds | ({row.kind} if row is not None else set())
        if spec.kind not in allowed:
            result.add(index, "kind", f"Choose a storage engine ({', '.join(CONFIGURABLE_KINDS)}).")
            continue
        if spec.kind == "local" and config.replication_enabled:
            result.add(index, "kind", LOCAL_REFUSED)
        try:
            cleaned[index] = options_clean(
                engine_class(spec.kind).options_form, _options_merged(spec, row)
            )
        except InvalidOptions as exc:
            for name, messages in exc.errors.items():
                for message in messages:
                    result.add(index, name, message)
    return cleaned


def _options_merged(spec: LocationSpec, row: StorageLocation | None) -> dict[str, Any]:
    """Return the spec's options with each blank secret replaced by the stored one."""
    options = dict(spec.options)
    secret_names = engine_class(spec.kind).options_form.secret_names()
    stored = row.engine_options() if row is not None and row.kind == spec.kind else {}
    for name in secret_names:
        if options.get(name) in (None, ""):
            options.pop(name, None)
            if name in stored and name not in spec.secrets_clear:
                options[name] = stored[name]
    return options


def _removals(
    config: StorageConfig, existing: dict[int, StorageLocation], result: SaveResult
) -> list[StorageLocation]:
    """Return the rows to remove; refuse those that hold the only copy of some blobs."""
    kept = {spec.pk for spec in config.locations if spec.pk is not None and not spec.delete}
    deleting = {spec.pk: index for index, spec in enumerate(config.locations) if spec.delete}
    removed = [loc for pk, loc in existing.items() if pk not in kept]
    for location in removed:
        sole = blobs_only_at(location).count()
        if not sole:
            continue
        message = (
            f"{location.location_id} holds the only copy of {sole} blob(s): it cannot be removed "
            "until they are replicated elsewhere (manage.py removelocation "
            f"{location.location_id} --replicate-first)."
        )
        if location.pk in deleting:
            result.add(deleting[location.pk], CARD, message)
        else:
            result.general.append(message)
    return removed


def _warnings(
    config: StorageConfig,
    cleaned: dict[int, dict[str, Any]],
    existing: dict[int, StorageLocation],
    removed: list[StorageLocation],
    result: SaveResult,
) -> None:
    kept = [(index, spec) for index, spec in enumerate(config.locations) if not spec.delete]
    if config.replication_enabled and not any(
        spec.replicate_by_default and spec.kind != "local" for _, spec in kept
    ):
        result.warnings.append(NO_DEFAULT_WARNING)
    for index, spec in kept:
        row = existing.get(spec.pk) if spec.pk is not None else None
        if row is None or index not in cleaned:
            continue
        if row.kind != spec.kind:
            what = "its storage engine"
        else:
            what = ", ".join(
                name
                for name in sorted(LOCATING_OPTIONS & set(cleaned[index]))
                if _blank_none(cleaned[index][name]) != _blank_none(row.options.get(name))
            )
        held = (
            Placement.objects.filter(location=row, state=PlacementState.PRESENT).count()
            if what
            else 0
        )
        if held:
            result.warnings.append(
                f"{spec.location_id}: {what} changed while it holds {held} blob(s); copy its "
                "objects to the new place, or pulls served from it will fail."
            )
    gone = {loc.location_id for loc in removed} | {
        existing[spec.pk].location_id
        for _, spec in kept
        if spec.pk in existing and existing[spec.pk].location_id != spec.location_id
    }
    if gone:
        for beat in InstanceHeartbeat.objects.exclude(preference=""):
            named = set(re.split(r"[\s,]+", beat.preference)) & gone
            if named:
                result.warnings.append(
                    f"Instance {beat.host} ({beat.role}) prefers {', '.join(sorted(named))} "
                    "(QUAY_DISTRIBUTED_STORAGE_PREFERENCE), which will no longer exist: update "
                    "its environment."
                )


def _blank_none(value: Any) -> Any:
    return None if value in (None, "") else value


def _default_targets(enabled: bool, locations: Iterable[StorageLocation]) -> set[int]:
    """Return the primary keys of the locations every blob must reach."""
    return {
        loc.pk for loc in locations if enabled and loc.replicate_by_default and loc.kind != "local"
    }


def _store(
    config: StorageConfig,
    cleaned: dict[int, dict[str, Any]],
    existing: dict[int, StorageLocation],
    removed: list[StorageLocation],
    settings_row: ReplicationSettings,
    actor: str,
    user: Any,
    result: SaveResult,
) -> None:
    before_targets = _default_targets(settings_row.storage_replication_enabled, existing.values())
    kept = [(index, spec) for index, spec in enumerate(config.locations) if not spec.delete]
    with transaction.atomic():
        locked = ReplicationSettings.objects.select_for_update().get(pk=settings_row.pk)
        if config.version is not None and locked.config_version != config.version:
            raise _VersionMoved(_version_message(config.version, locked.config_version))
        for location in removed:
            location_remove(location_id=location.location_id)
        for _, spec in kept:
            if spec.pk in existing and existing[spec.pk].location_id != spec.location_id:
                # Out of the way first, so that two locations may swap IDs in one save.
                StorageLocation.objects.filter(pk=spec.pk).update(location_id=f"~{spec.pk}")
        saved: list[StorageLocation] = []
        for rank, (index, spec) in enumerate(kept):
            row = (
                StorageLocation.objects.get(pk=spec.pk)
                if spec.pk in existing
                else StorageLocation()
            )
            row.location_id = spec.location_id
            row.kind = spec.kind
            row.replicate_by_default = spec.replicate_by_default
            row.serve_mode = spec.serve_mode
            row.rank = rank
            row.set_engine_options(
                {name: value for name, value in cleaned[index].items() if value not in (None, "")}
            )
            row.save()
            saved.append(row)
        ReplicationSettings.objects.filter(pk=settings_row.pk).update(
            storage_replication_enabled=config.replication_enabled
        )
        after_targets = _default_targets(config.replication_enabled, saved)
        result.version = config_version_bump(
            user=user if getattr(user, "pk", None) else None,
            targets_changed=before_targets != after_targets or bool(removed),
        )
        result.changes = changes_of(config, settings_row, existing, saved, removed)
        AuditEntry.objects.create(actor=actor, action="storage_config_save", changes=result.changes)
    result.saved = True
    result.new_defaults = [
        row.location_id for row in saved if row.pk in after_targets - before_targets
    ]
    logger.info(
        "storage configuration version %s saved by %s; new default targets: %s",
        result.version,
        actor,
        ", ".join(result.new_defaults) or "none",
    )
