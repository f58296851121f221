"""Reads behind the status tab: per-location counts, throughput, failures, backfills, instances."""

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Count, Sum
from django.utils import timezone

from replication.backfill import Progress, backfill_progress
from replication.heartbeat import heartbeat_interval
from replication.models import (
    BackfillRun,
    InstanceHeartbeat,
    Placement,
    PlacementState,
    StorageLocation,
)
from replication.status import LocationStatus, blobs_unrecoverable_count, replication_status

#: Throughput is measured over this window.
THROUGHPUT_SECONDS = 300
FAILED_SHOWN = 50
BACKFILLS_SHOWN = 5


@dataclass(frozen=True)
class LocationRow:
    status: LocationStatus
    copied_bytes: int  # copies verified in the throughput window
    copied_count: int

    @property
    def throughput(self) -> float:
        """Return bytes per second copied into the location over the window."""
        return self.copied_bytes / THROUGHPUT_SECONDS


@dataclass(frozen=True)
class BackfillRow:
    run: BackfillRun
    progress: Progress


@dataclass(frozen=True)
class Cell:
    ok: bool | None  # None: not probed yet
    error: str = ""


@dataclass
class InstanceRow:
    beat: InstanceHeartbeat
    stale: bool
    cells: list[Cell] = field(default_factory=list)


@dataclass
class StatusOverview:
    locations: list[LocationRow]
    failed: list[Placement]
    failed_total: int
    backfills: list[BackfillRow]
    instances: list[InstanceRow]
    location_ids: list[str]
    target_ids: list[str]
    generated_at: Any
    unrecoverable: int = 0


def throughput_by_location() -> dict[str, tuple[int, int]]:
    """Return, per location ID, the bytes and number of copies verified in the window."""
    since = timezone.now() - timedelta(seconds=THROUGHPUT_SECONDS)
    rows = (
        # Both times: a scrub re-verifies copies (verified_at) without copying them (updated_at).
        Placement.objects.filter(
            state=PlacementState.PRESENT, verified_at__gte=since, updated_at__gte=since
        )
        .exclude(copy_method="")
        .values("location__location_id")
        .annotate(total=Sum("blob__size"), count=Count("pk"))
    )
    return {
        row["location__location_id"]: (int(row["total"] or 0), int(row["count"])) for row in rows
    }


def instances_matrix(location_ids: list[str]) -> list[InstanceRow]:
    """Return every instance with its reachability of each location; stale ones flagged."""
    stale_before = timezone.now() - timedelta(seconds=max(3 * heartbeat_interval(), 90))
    rows = []
    for beat in InstanceHeartbeat.objects.order_by("role", "host", "instance_id"):
        cells = []
        for location_id in location_ids:
            seen = beat.reachable.get(location_id) if isinstance(beat.reachable, dict) else None
            cells.append(
                Cell(None)
                if not isinstance(seen, dict)
                else Cell(bool(seen.get("ok")), str(seen.get("error") or ""))
            )
        rows.append(InstanceRow(beat=beat, stale=beat.seen_at < stale_before, cells=cells))
    return rows


def status_overview() -> StatusOverview:
    """Return everything the status tab shows."""
    statuses = replication_status()
    copied = throughput_by_location()
    failed = Placement.objects.filter(state=PlacementState.FAILED)
    location_ids = [row.location_id for row in statuses]
    return StatusOverview(
        locations=[LocationRow(row, *copied.get(row.location_id, (0, 0))) for row in statuses],
        failed=list(
            failed.select_related("blob", "location").order_by("-updated_at", "pk")[:FAILED_SHOWN]
        ),
        failed_total=failed.count(),
        backfills=[
            BackfillRow(run, backfill_progress(run_id=run.pk))
            for run in BackfillRun.objects.select_related("location").order_by(
                "-started_at", "-pk"
            )[:BACKFILLS_SHOWN]
        ],
        instances=instances_matrix(location_ids),
        location_ids=location_ids,
        target_ids=[row.location_id for row in statuses if row.is_target],
        generated_at=timezone.now(),
        unrecoverable=blobs_unrecoverable_count(),
    )


def location_ids_all() -> list[str]:
    return list(
        StorageLocation.objects.order_by("rank", "location_id").values_list(
            "location_id", flat=True
        )
    )
