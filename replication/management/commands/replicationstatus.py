"""Print replication status per location."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from replication.status import replication_status


class Command(BaseCommand):
    help = "Print, per storage location: placements by state, bytes, coverage, oldest pending."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    def handle(self, *args: Any, **options: Any) -> None:
        rows = replication_status()
        if options["json"]:
            self.stdout.write(json.dumps([row.as_dict() for row in rows], indent=2))
            return
        columns = ("present", "pending", "copying", "failed", "missing", "bytes", "coverage")
        widths = (9, 9, 8, 7, 9, 14, 9)
        header = " ".join(f"{name:>{width}}" for name, width in zip(columns, widths, strict=True))
        self.stdout.write(f"{'location':<20} {header} {'oldest pending':>15}")
        for row in rows:
            coverage = "-" if row.coverage is None else f"{100 * row.coverage:.1f}%"
            oldest = (
                "-" if row.oldest_pending_seconds is None else f"{row.oldest_pending_seconds:.0f}s"
            )
            values = (row.present, row.pending, row.copying, row.failed, row.missing)
            cells = " ".join(f"{v:>{w}}" for v, w in zip(values, widths, strict=False))
            self.stdout.write(
                f"{row.location_id:<20} {cells} {row.bytes_present:>14} {coverage:>9} {oldest:>15}"
            )
