"""Bring existing blobs to every location that should hold them."""

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from replication.backfill import (
    DEFAULT_BATCH_SIZE,
    backfill_execute,
    backfill_plan,
    backfill_progress,
    backfill_start,
)
from replication.models import ReplicationSettings


class Command(BaseCommand):
    help = (
        "Create the missing placements of existing blobs at their target locations and enqueue "
        "their replication. Running it twice does nothing the second time."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count per location; write nothing."
        )
        parser.add_argument("--location", metavar="ID", help="Only this target location.")
        parser.add_argument("--namespace", metavar="NAME", help="Only blobs of this namespace.")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N")
        parser.add_argument("--wait", action="store_true", help="Follow the copies until done.")
        parser.add_argument(
            "--timeout", type=float, default=0, help="With --wait: give up after this many seconds."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not ReplicationSettings.load().storage_replication_enabled:
            raise CommandError(
                "Storage replication is disabled: enable it in /superuser (Registry Storage) first."
            )
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            if options["dry_run"]:
                plan = backfill_plan(
                    dry_run=True,
                    location_id=options["location"],
                    namespace=options["namespace"],
                    batch_size=options["batch_size"],
                )
                for location_id, count in sorted(plan.per_location.items()):
                    self.stdout.write(f"{location_id}: {count} placements missing")
                self.stdout.write(f"dry run: {plan.total} placements missing, nothing written")
                return
            run = backfill_start(location_id=options["location"], namespace=options["namespace"])
            created = backfill_execute(run_id=run.pk, batch_size=options["batch_size"])
        except LookupError as exc:
            raise CommandError(str(exc.args[0])) from exc
        self.stdout.write(f"backfill run {run.pk}: {created} placements created and enqueued")
        if options["wait"] and created:
            self._follow(run.pk, options["timeout"])

    def _follow(self, run_id: int, timeout: float) -> None:
        tty = sys.stdout.isatty() and self.stdout._out is sys.stdout
        started = time.monotonic()
        while True:
            progress = backfill_progress(run_id=run_id)
            if tty:
                filled = int(progress.percent / 2.5)
                self.stdout.write(
                    f"\r[{'#' * filled}{'.' * (40 - filled)}] {progress.percent:5.1f}% "
                    f"{progress.present}/{progress.planned} present, {progress.failed} failed",
                    ending="",
                )
                self.stdout.flush()
            if progress.done:
                break
            if timeout and time.monotonic() - started > timeout:
                raise CommandError(
                    f"gave up after {timeout:g}s: {progress.remaining} placements still pending"
                )
            time.sleep(0.5)
        if tty:
            self.stdout.write("")
        self.stdout.write(
            f"backfill run {run_id} done: {progress.present} present, {progress.failed} failed "
            f"of {progress.planned} in {time.monotonic() - started:.1f}s"
        )
        if progress.failed:
            raise CommandError(
                f"{progress.failed} placements failed; see `manage.py replicationstatus`"
            )
