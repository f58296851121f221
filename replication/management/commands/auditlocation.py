"""Audit one storage location against its own listing (and repair what it finds)."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from replication.inventory import location_audit
from replication.models import AuditRun, StorageLocation
from replication.status import RunSummary


class Command(BaseCommand):
    help = (
        "List a location's objects and compare them with its placements: lost and corrupt "
        "copies are marked and repaired, unreferenced objects reported (and deleted once older "
        "than QUAY_GEO_GC_GRACE_SECONDS)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("location", help="The location ID to audit.")
        parser.add_argument(
            "--deep", action="store_true", help="Also read and hash every present object."
        )
        parser.add_argument(
            "--no-repair",
            action="store_true",
            help="Only report: mark what is wrong, queue no repair, delete no orphan.",
        )
        parser.add_argument("--json", action="store_true", help="Print the result as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        location = StorageLocation.objects.filter(location_id=options["location"]).first()
        if location is None:
            raise CommandError(f"no storage location {options['location']!r}")

        def progress(run: AuditRun) -> None:
            if not options["json"]:
                self.stdout.write(
                    f"  {run.objects_seen} objects, {run.lost} lost, {run.corrupt} corrupt, "
                    f"{run.orphans} orphans so far"
                )

        if not options["json"]:
            self.stdout.write(f"auditing {location.location_id} ({location.kind})")
        run = location_audit(
            location=location,
            deep=options["deep"],
            repair=not options["no_repair"],
            progress=progress,
        )
        summary = RunSummary.of(run)
        if options["json"]:
            self.stdout.write(
                json.dumps({"location": location.location_id, **summary.__dict__}, default=str)
            )
        else:
            self.stdout.write(
                f"{location.location_id}: {run.objects_seen} objects, {run.verified} verified, "
                f"{run.lost} lost, {run.corrupt} corrupt, {run.repaired} repairs queued, "
                f"{run.orphans} orphans ({run.orphans_deleted} deleted)"
            )
        if run.error:
            raise CommandError(f"the audit stopped: {run.error}")
