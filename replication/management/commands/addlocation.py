"""Add a storage location from the command line: probed, then stored, as the panel does."""

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from replication.config import LocationSpec, location_add, save_result_messages
from replication.models import StorageLocation
from storage_engines.registry import CONFIGURABLE_KINDS, ENGINES


def _option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CommandError(f"--option takes NAME=VALUE, got {text!r}")
    return name, value


class Command(BaseCommand):
    help = (
        "Add a storage location (engine options as --option NAME=VALUE, as the engine declares "
        "them; see /superuser for the same form). Probes it unless --no-probe; nothing is stored "
        "if the probe or any rule of the panel's save fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("location_id", metavar="ID")
        parser.add_argument("--kind", required=True, choices=sorted(ENGINES))
        parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE")
        parser.add_argument("--default", action="store_true", help="Replicate to it by default.")
        parser.add_argument("--serve-mode", choices=["redirect", "proxy"], default="redirect")
        parser.add_argument("--no-probe", action="store_true", help="Skip the live probe.")
        parser.add_argument(
            "--if-missing", action="store_true", help="Do nothing if the location exists."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        location_id = options["location_id"]
        if options["if_missing"] and StorageLocation.objects.filter(location_id=location_id):
            self.stdout.write(f"location {location_id} exists; left as it is")
            return
        if options["kind"] not in CONFIGURABLE_KINDS and options["kind"] != "memory":
            raise CommandError(f"engine kind {options['kind']} cannot be configured")
        spec = LocationSpec(
            location_id=location_id,
            kind=options["kind"],
            options=dict(_option(text) for text in options["option"]),
            replicate_by_default=options["default"],
            serve_mode=options["serve_mode"],
        )
        ids = [*StorageLocation.objects.values_list("location_id", flat=True), location_id]
        result = location_add(
            spec=spec,
            actor=f"addlocation ({os.environ.get('USER') or 'unknown user'})",
            probe=not options["no_probe"],
        )
        for warning in result.warnings:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))
        if not result.ok:
            raise CommandError(
                f"location {location_id} not added:\n  "
                + "\n  ".join(save_result_messages(result, ids))
            )
        label = StorageLocation.objects.get(location_id=location_id).get_kind_display()
        self.stdout.write(
            f"added location {location_id} ({label}, config version {result.version})"
        )
