"""What a save changed, as the audit log records it: every secret masked."""

from typing import TYPE_CHECKING, Any

from ..models import ReplicationSettings, StorageLocation

if TYPE_CHECKING:
    from .service import StorageConfig

SECRET_MASK = "••••"  # noqa: S105 - the mask shown instead of a secret


def snapshot(location: StorageLocation) -> dict[str, Any]:
    """Return a location as the audit log shows it: every secret masked."""
    options: dict[str, Any] = dict(location.options)
    options.update({name: SECRET_MASK for name in location.secrets})
    return {
        "kind": location.kind,
        "options": options,
        "replicate_by_default": location.replicate_by_default,
        "serve_mode": location.serve_mode,
    }


def changes_of(
    config: "StorageConfig",
    settings_row: ReplicationSettings,
    existing: dict[int, StorageLocation],
    saved: list[StorageLocation],
    removed: list[StorageLocation],
) -> dict[str, Any]:
    """Return what the save changed, with every secret value masked."""
    changes: dict[str, Any] = {}
    if settings_row.storage_replication_enabled != config.replication_enabled:
        changes["replication_enabled"] = [
            settings_row.storage_replication_enabled,
            config.replication_enabled,
        ]
    if removed:
        changes["removed"] = [loc.location_id for loc in removed]
    for row in saved:
        old = existing.get(row.pk)
        if old is None:
            changes.setdefault("added", {})[row.location_id] = snapshot(row)
            continue
        if old.location_id != row.location_id:
            changes.setdefault("renamed", {})[old.location_id] = row.location_id
        diff = _diff(old, row)
        if diff:
            changes.setdefault("changed", {})[row.location_id] = diff
    old_order = [pk for pk, _ in sorted(existing.items(), key=lambda item: item[1].rank)]
    new_order = [row.pk for row in saved]
    if [pk for pk in old_order if pk in new_order] != [pk for pk in new_order if pk in old_order]:
        changes["order"] = [row.location_id for row in saved]
    return changes


def _diff(old: StorageLocation, new: StorageLocation) -> dict[str, list[Any]]:
    """Return ``{field: [before, after]}`` for one location; secrets show as masks."""
    before, after = snapshot(old), snapshot(new)
    diff = {
        name: [before[name], after[name]]
        for name in ("kind", "replicate_by_default", "serve_mode")
        if before[name] != after[name]
    }
    old_values = old.engine_options() if old.kind == new.kind else {}
    new_values = new.engine_options()
    for name in sorted(set(before["options"]) | set(after["options"])):
        secret = name in old.secrets or name in new.secrets
        if secret and old_values.get(name) != new_values.get(name):
            diff[f"options.{name}"] = [
                SECRET_MASK if name in old.secrets else None,
                SECRET_MASK if name in new.secrets else None,
            ]
        elif not secret and before["options"].get(name) != after["options"].get(name):
            diff[f"options.{name}"] = [before["options"].get(name), after["options"].get(name)]
    return diff
