"""Replication status per location, computed from the placement table."""

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Min, Q, Sum
from django.utils import timezone

from .models import Placement, PlacementState, StorageLocation
from .targets import blobs_missing_at, target_locations


@dataclass(frozen=True)
class LocationStatus:
    location_id: str
    kind: str
    is_target: bool
    present: int
    pending: int
    copying: int
    failed: int
    missing: int  # blobs that target the location and have no placement there yet
    bytes_present: int
    coverage: float | None  # share of the location's target blobs present there
    oldest_pending_seconds: float | None
    server_side_copies: int
    streamed_copies: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def replication_status() -> list[LocationStatus]:
    """Return the status of every location, in stored preference order."""
    targets = {loc.pk for loc in target_locations()}
    rows: dict[int, dict[str, Any]] = {
        row["location_id"]: dict(row)
        for row in Placement.objects.values("location_id").annotate(
            present=Count("pk", filter=Q(state=PlacementState.PRESENT)),
            pending=Count("pk", filter=Q(state=PlacementState.PENDING)),
            copying=Count("pk", filter=Q(state=PlacementState.COPYING)),
            failed=Count("pk", filter=Q(state=PlacementState.FAILED)),
            bytes_present=Sum("blob__size", filter=Q(state=PlacementState.PRESENT)),
            oldest_pending=Min("created_at", filter=Q(state=PlacementState.PENDING)),
            server=Count("pk", filter=Q(state=PlacementState.PRESENT, copy_method="server")),
            stream=Count("pk", filter=Q(state=PlacementState.PRESENT, copy_method="stream")),
        )
    }
    now = timezone.now()
    result = []
    for location in StorageLocation.objects.order_by("rank", "location_id"):
        row: dict[str, Any] = rows.get(location.pk, {})
        present = int(row.get("present", 0))
        not_present = sum(int(row.get(k, 0)) for k in ("pending", "copying", "failed"))
        is_target = location.pk in targets
        missing = blobs_missing_at(location).count() if is_target else 0
        wanted = present + not_present + missing
        oldest: datetime | None = row.get("oldest_pending")
        result.append(
            LocationStatus(
                location_id=location.location_id,
                kind=location.kind,
                is_target=is_target,
                present=present,
                pending=int(row.get("pending", 0)),
                copying=int(row.get("copying", 0)),
                failed=int(row.get("failed", 0)),
                missing=missing,
                bytes_present=int(row.get("bytes_present") or 0),
                coverage=(present / wanted if wanted else 1.0) if is_target else None,
                oldest_pending_seconds=(now - oldest).total_seconds() if oldest else None,
                server_side_copies=int(row.get("server", 0)),
                streamed_copies=int(row.get("stream", 0)),
            )
        )
    return result
