"""Small formatting filters of the panel."""

from typing import Any

from django import template
from django.template.defaultfilters import filesizeformat

register = template.Library()

#: Shown for "nothing" (an en dash).
NONE = "\u2013"


@register.filter
def duration(seconds: Any) -> str:
    """Return ``1 h 5 min``, ``3 min 20 s`` or ``12 s``; a dash for nothing."""
    if seconds is None or seconds == "":
        return NONE
    total = int(float(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@register.filter
def rate(bytes_per_second: Any) -> str:
    """Return a byte rate such as ``1.2 MB/s``; a dash when nothing moved."""
    value = float(bytes_per_second or 0)
    if value <= 0:
        return NONE
    return f"{filesizeformat(value)}/s"


@register.filter
def percent(fraction: Any) -> str:
    """Return a share (0..1) as ``97.5 %``; a dash for None."""
    if fraction is None:
        return NONE
    return f"{100 * float(fraction):.1f} %".replace(".0 %", " %")


@register.filter
def share_width(fraction: Any) -> str:
    """Return a 0..1 share as a CSS percentage width, clamped."""
    return f"{max(0.0, min(100.0, 100 * float(fraction or 0))):.1f}%"


@register.filter
def short_digest(digest: str) -> str:
    """Return ``sha256:0123456789ab…`` for a long digest."""
    algorithm, _, hexpart = str(digest).partition(":")
    return f"{algorithm}:{hexpart[:12]}…" if len(hexpart) > 12 else str(digest)


def _value(value: Any) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"{name}={_value(value)}" for name, value in options.items())


@register.filter
def audit_lines(entry: Any) -> list[str]:
    """Return an audit entry's changes as short readable lines (secrets stay masked)."""
    changes = entry.changes if isinstance(entry.changes, dict) else {}
    if entry.action == "namespace_targets_set":
        before, after = changes.get("locations", [[], []])
        return [
            f"Namespace {changes.get('namespace')}: {', '.join(before) or 'defaults only'} → "
            f"{', '.join(after) or 'defaults only'}"
        ]
    if entry.action == "backfill_start":
        where = ", ".join(item or "every target" for item in changes.get("locations", []))
        return [f"Backfill started for {where}"]
    lines = []
    if "replication_enabled" in changes:
        before, after = changes["replication_enabled"]
        lines.append(
            f"Storage replication: {'on' if before else 'off'} → {'on' if after else 'off'}"
        )
    for location_id, snapshot in changes.get("added", {}).items():
        default = ", default target" if snapshot.get("replicate_by_default") else ""
        options = _options(snapshot.get("options", {}))
        lines.append(f"Added {location_id} ({snapshot.get('kind')}{default}): {options}")
    for old, new in changes.get("renamed", {}).items():
        lines.append(f"Renamed {old} → {new}")
    for location_id, diff in changes.get("changed", {}).items():
        parts = [
            f"{name.removeprefix('options.')} {_value(a)} → {_value(b)}"
            for name, (a, b) in diff.items()
        ]
        lines.append(f"Changed {location_id}: {'; '.join(parts)}")
    if changes.get("removed"):
        lines.append(f"Removed {', '.join(changes['removed'])}")
    if changes.get("order"):
        lines.append(f"Preference order: {', '.join(changes['order'])}")
    return lines or ["No visible change (saved as it was)"]
