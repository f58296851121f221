"""Add one location: the command line's path into the one validated write of the configuration."""

from typing import Any

from .probes import PROBE_TIMEOUT
from .service import CARD, LocationSpec, SaveResult, storage_config_read, storage_config_save


def location_add(
    *,
    spec: LocationSpec,
    actor: str,
    user: Any = None,
    rank: int | None = None,
    probe: bool = True,
    probe_timeout: float = PROBE_TIMEOUT,
) -> SaveResult:
    """Add one location to the stored configuration through :func:`storage_config_save`.

    Only the new location is probed; the others are validated as they are stored. ``rank``:
    its place in the preference order (None: last).
    """
    config = storage_config_read()
    if any(loc.location_id == spec.location_id.strip() for loc in config.locations):
        result = SaveResult()
        result.general.append(f"Location {spec.location_id} already exists.")
        return result
    config.locations.insert(len(config.locations) if rank is None else rank, spec)
    return storage_config_save(
        config=config,
        actor=actor,
        user=user,
        probe=probe,
        probe_timeout=probe_timeout,
        probe_only=frozenset({spec.location_id.strip()}),
        extra_kinds=frozenset({"memory"}),
    )


def save_result_messages(result: SaveResult, config_ids: list[str]) -> list[str]:
    """Return a save's errors as lines ``<location ID>: <field>: <message>`` (general first)."""
    lines = list(result.general)
    for index, fields in sorted(result.errors.items()):
        for name, messages in fields.items():
            prefix = config_ids[index] if name == CARD else f"{config_ids[index]}: {name}"
            lines.extend(f"{prefix}: {message}" for message in messages)
    return lines
