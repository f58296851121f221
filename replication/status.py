"""Replication status per location, computed from the placement table."""

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from .models import AuditKind, AuditRun, Blob, Placement, PlacementState, StorageLocation
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
    lost: int  # the store answered "not found" or a wrong size; a repair is queued
    corrupt: int  # the store returned wrong bytes; a repair is queued
    unrecoverable: int  # blobs placed here with no good copy left anywhere
    missing: int  # blobs that target the location and have no placement there yet
    bytes_present: int
    coverage: float | None  # share of the location's target blobs present there
    oldest_pending_seconds: float | None
    server_side_copies: int
    streamed_copies: int
    #: Verification time of the least recently verified present copy (where the scrub is).
    oldest_verified_at: datetime | None
    last_audit: "RunSummary | None"
    last_scrub: "RunSummary | None"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class RunSummary:
    """What the last audit or scrub of a location found."""

    started_at: datetime
    finished_at: datetime | None
    deep: bool
    objects_seen: int
    bytes_read: int
    verified: int
    lost: int
    corrupt: int
    repaired: int
    orphans: int
    orphans_deleted: int
    error: str

    @classmethod
    def of(cls, run: AuditRun) -> "RunSummary":
        return cls(**{name: getattr(run, name) for name in cls.__dataclass_fields__})


def last_runs(kind: str) -> dict[int, RunSummary]:
    """Return the last run of ``kind`` per location pk (one query)."""
    latest = AuditRun.objects.filter(kind=kind).values("location_id").annotate(last=Max("pk"))
    runs = AuditRun.objects.filter(pk__in=latest.values("last"))
    return {run.location_id: RunSummary.of(run) for run in runs}


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
            lost=Count("pk", filter=Q(state=PlacementState.LOST)),
            corrupt=Count("pk", filter=Q(state=PlacementState.CORRUPT)),
            unrecoverable=Count("pk", filter=Q(blob__unrecoverable_at__isnull=False)),
            oldest_verified=Min("verified_at", filter=Q(state=PlacementState.PRESENT)),
            bytes_present=Sum("blob__size", filter=Q(state=PlacementState.PRESENT)),
            oldest_pending=Min("created_at", filter=Q(state=PlacementState.PENDING)),
            server=Count("pk", filter=Q(state=PlacementState.PRESENT, copy_method="server")),
            stream=Count("pk", filter=Q(state=PlacementState.PRESENT, copy_method="stream")),
        )
    }
    now = timezone.now()
    audits, scrubs = last_runs(AuditKind.AUDIT), last_runs(AuditKind.SCRUB)
    result = []
    for location in StorageLocation.objects.order_by("rank", "location_id"):
        row: dict[str, Any] = rows.get(location.pk, {})
        present = int(row.get("present", 0))
        # Coverage counts only copies verified present: a lost or corrupt copy is wanted too.
        not_present = sum(
            int(row.get(k, 0)) for k in ("pending", "copying", "failed", "lost", "corrupt")
        )
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
                lost=int(row.get("lost", 0)),
                corrupt=int(row.get("corrupt", 0)),
                unrecoverable=int(row.get("unrecoverable", 0)),
                missing=missing,
                bytes_present=int(row.get("bytes_present") or 0),
                coverage=(present / wanted if wanted else 1.0) if is_target else None,
                oldest_pending_seconds=(now - oldest).total_seconds() if oldest else None,
                server_side_copies=int(row.get("server", 0)),
                streamed_copies=int(row.get("stream", 0)),
                oldest_verified_at=row.get("oldest_verified"),
                last_audit=audits.get(location.pk),
                last_scrub=scrubs.get(location.pk),
            )
        )
    return result


def blobs_unrecoverable_count() -> int:
    """Return how many blobs have no good copy left in any location."""
    return Blob.objects.filter(unrecoverable_at__isnull=False).count()
