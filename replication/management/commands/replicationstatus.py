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
        header = f"{'location':<20} {'present':>9} {'pending':>9} {'copying':>8} {'failed':>7} {'missing':>9} {'bytes':>14} {'coverage':>9} {'oldest pending':>15}"
        self.stdout.write(header)
        for row in rows:
            coverage = "-" if row.coverage is None else f"{100 * row.coverage:.1f}%"
            oldest = "-" if row.oldest_pending_seconds is None else f"{row.oldest_pending_seconds:.0f}s"
            self.stdout.write(
                f"{row.location_id:<20} {row.present:>9} {row.pending:>9} {row.copying:>8} "
                f"{row.failed:>7} {row.missing:>9} {row.bytes_present:>14} {coverage:>9} {oldest:>15}"
            )
