"""Print replication status per location."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from replication.status import RunSummary, blobs_unrecoverable_count, replication_status


class Command(BaseCommand):
    help = "Print, per storage location: placements by state, bytes, coverage, oldest pending."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = replication_status()
        if options["json"]:
            self.stdout.write(json.dumps([row.as_dict() for row in rows], indent=2, default=str))
            return
        columns = (
            "present", "pending", "copying", "failed", "lost", "corrupt", "missing", "bytes",
            "coverage",
        )  # fmt: skip
        widths = (9, 9, 8, 7, 6, 8, 9, 14, 9)
        header = " ".join(f"{name:>{width}}" for name, width in zip(columns, widths, strict=True))
        self.stdout.write(f"{'location':<20} {header} {'oldest pending':>15}")
        for row in rows:
            coverage = "-" if row.coverage is None else f"{100 * row.coverage:.1f}%"
            oldest = (
                "-" if row.oldest_pending_seconds is None else f"{row.oldest_pending_seconds:.0f}s"
            )
            values = (
                row.present, row.pending, row.copying, row.failed, row.lost, row.corrupt,
                row.missing,
            )  # fmt: skip
            cells = " ".join(f"{v:>{w}}" for v, w in zip(values, widths, strict=False))
            self.stdout.write(
                f"{row.location_id:<20} {cells} {row.bytes_present:>14} {coverage:>9} {oldest:>15}"
            )
        self.stdout.write("")
        for row in rows:
            for kind, run in (("audit", row.last_audit), ("scrub", row.last_scrub)):
                self.stdout.write(f"{row.location_id:<20} last {kind}: {_run_text(run)}")
            verified = row.oldest_verified_at
            self.stdout.write(
                f"{row.location_id:<20} oldest verification: "
                + ("-" if verified is None else f"{verified:%Y-%m-%d %H:%M:%S} UTC")
            )
        unrecoverable = blobs_unrecoverable_count()
        if unrecoverable:
            self.stdout.write(f"UNRECOVERABLE blobs (no good copy left): {unrecoverable}")


def _run_text(run: RunSummary | None) -> str:
    if run is None:
        return "never"
    when = "running" if run.finished_at is None else f"{run.finished_at:%Y-%m-%d %H:%M:%S} UTC"
    text = (
        f"{when}, {run.objects_seen} objects, {run.bytes_read} bytes read, {run.lost} lost, "
        f"{run.corrupt} corrupt, {run.repaired} repairs queued, {run.orphans} orphans"
    )
    return f"{text}, error: {run.error}" if run.error else text
