"""Prometheus metrics computed from the placement table at scrape time.

Every web and worker process shares one database, so figures read from it are the same on
every instance; per-process counters would each see only their own part of the work.
"""

from collections.abc import Iterator

from django.db.models import Count, Q, Sum

from .models import Placement, PlacementState
from .status import LocationStatus, blobs_unrecoverable_count, replication_status


def _line(name: str, labels: dict[str, str], value: float) -> str:
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    # Every digit: "%g" keeps six, which puts a timestamp hours off and rounds a byte count.
    number = str(int(value)) if float(value).is_integer() else repr(float(value))
    return f"{name}{{{text}}} {number}"


def metrics_lines() -> Iterator[str]:
    """Yield the exposition lines of every replication metric."""
    rows = replication_status()
    gauges = [
        ("quay_geo_placements", "Placements by location and state.", "gauge"),
        (
            "quay_geo_placements_missing",
            "Blobs that target a location and have no placement yet.",
            "gauge",
        ),
        ("quay_geo_bytes_present", "Bytes of present placements per location.", "gauge"),
        ("quay_geo_coverage_ratio", "Share of a target location's blobs present there.", "gauge"),
        ("quay_geo_oldest_pending_seconds", "Age of the oldest pending placement.", "gauge"),
    ]
    for name, help_text, kind in gauges:
        yield f"# HELP {name} {help_text}"
        yield f"# TYPE {name} {kind}"
        for row in rows:
            labels = {"location": row.location_id}
            if name == "quay_geo_placements":
                for state in ("present", "pending", "copying", "failed", "lost", "corrupt"):
                    yield _line(name, {**labels, "state": state}, getattr(row, state))
            elif name == "quay_geo_placements_missing":
                yield _line(name, labels, row.missing)
            elif name == "quay_geo_bytes_present":
                yield _line(name, labels, row.bytes_present)
            elif name == "quay_geo_coverage_ratio" and row.coverage is not None:
                yield _line(name, labels, row.coverage)
            elif name == "quay_geo_oldest_pending_seconds":
                yield _line(name, labels, row.oldest_pending_seconds or 0)

    yield from _integrity_lines(rows)

    copies = (
        Placement.objects.filter(state=PlacementState.PRESENT)
        .exclude(copy_method="")
        .values("location__location_id", "copy_method")
        .annotate(n=Count("pk"), size=Sum("blob__size"), seconds=Sum("copy_seconds"))
    )
    yield "# HELP quay_geo_copies_total Verified replication copies by method (server or stream)."
    yield "# TYPE quay_geo_copies_total counter"
    copy_rows = list(copies)
    for copy in copy_rows:
        labels = {"location": copy["location__location_id"], "method": copy["copy_method"]}
        yield _line("quay_geo_copies_total", labels, copy["n"])
    yield "# HELP quay_geo_copied_bytes_total Bytes replicated into each location."
    yield "# TYPE quay_geo_copied_bytes_total counter"
    for copy in copy_rows:
        labels = {"location": copy["location__location_id"], "method": copy["copy_method"]}
        yield _line("quay_geo_copied_bytes_total", labels, copy["size"] or 0)
    yield "# HELP quay_geo_copy_seconds_total Time spent in verified copies."
    yield "# TYPE quay_geo_copy_seconds_total counter"
    for copy in copy_rows:
        labels = {"location": copy["location__location_id"], "method": copy["copy_method"]}
        yield _line("quay_geo_copy_seconds_total", labels, copy["seconds"] or 0)

    failures = (
        Placement.objects.filter(state=PlacementState.FAILED)
        .values("location__location_id")
        .annotate(
            permanent=Count("pk", filter=Q(error_permanent=True, given_up_at__isnull=True)),
            transient=Count("pk", filter=Q(error_permanent=False)),
            given_up=Count("pk", filter=Q(given_up_at__isnull=False)),
        )
    )
    yield "# HELP quay_geo_failed_placements Failed placements by location and reason class."
    yield "# TYPE quay_geo_failed_placements gauge"
    for failure in failures:
        for reason in ("permanent", "transient", "given_up"):
            yield _line(
                "quay_geo_failed_placements",
                {"location": failure["location__location_id"], "reason": reason},
                failure[reason],
            )


_RUN_FIELDS = (
    "objects_seen", "bytes_read", "verified", "lost", "corrupt", "repaired", "orphans",
    "orphans_deleted",
)  # fmt: skip


def _integrity_lines(rows: list[LocationStatus]) -> Iterator[str]:
    """Yield the unrecoverable blobs and the last audit and scrub of each location."""
    yield "# HELP quay_geo_unrecoverable_blobs Blobs with no good copy left in any location."
    yield "# TYPE quay_geo_unrecoverable_blobs gauge"
    yield f"quay_geo_unrecoverable_blobs {blobs_unrecoverable_count()}"
    for kind in ("audit", "scrub"):
        name = f"quay_geo_last_{kind}_timestamp_seconds"
        yield f"# HELP {name} When the last {kind} of a location finished (Unix time)."
        yield f"# TYPE {name} gauge"
        for row in rows:
            run = getattr(row, f"last_{kind}")
            if run is not None and run.finished_at is not None:
                yield _line(name, {"location": row.location_id}, run.finished_at.timestamp())
        name = f"quay_geo_last_{kind}_objects"
        yield f"# HELP {name} What the last {kind} of a location counted, by what."
        yield f"# TYPE {name} gauge"
        for row in rows:
            run = getattr(row, f"last_{kind}")
            if run is None:
                continue
            for field in _RUN_FIELDS:
                labels = {"location": row.location_id, "what": field}
                yield _line(name, labels, getattr(run, field))
    name = "quay_geo_oldest_verification_timestamp_seconds"
    yield (
        f"# HELP {name} When the least recently verified present copy of a location was read "
        "and found right (Unix time): how far the scrub has come round."
    )
    yield f"# TYPE {name} gauge"
    for row in rows:
        if row.oldest_verified_at is not None:
            yield _line(name, {"location": row.location_id}, row.oldest_verified_at.timestamp())
