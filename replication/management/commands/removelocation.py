"""Remove a storage location without losing the only copy of any blob."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from replication.locations import (
    LocationInUse,
    location_remove,
    location_replicate_sole_copies,
)


class Command(BaseCommand):
    help = "Remove a storage location, its placements and namespace settings in one transaction."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("location_id", metavar="ID")
        parser.add_argument(
            "--replicate-first",
            action="store_true",
            help="Copy the blobs whose only copy is there to another location, wait, then remove.",
        )
        parser.add_argument("--timeout", type=float, default=3600, help="With --replicate-first.")

    def handle(self, *args: Any, **options: Any) -> None:
        location_id = options["location_id"]
        try:
            if options["replicate_first"]:
                copied = location_replicate_sole_copies(
                    location_id=location_id, timeout=options["timeout"]
                )
                self.stdout.write(f"replicated {copied} blobs away from {location_id}")
            removed = location_remove(location_id=location_id)
        except LocationInUse as exc:
            raise CommandError(str(exc)) from exc
        except LookupError as exc:
            raise CommandError(str(exc.args[0])) from exc
        self.stdout.write(f"removed location {location_id} ({removed} placements dropped)")
