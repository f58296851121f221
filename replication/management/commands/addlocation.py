"""Add (or update) a storage location from the command line."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from replication.models import StorageLocation
from replication.selectors import location_engine
from replication.services import location_create
from storage_engines.errors import InvalidOptions, StorageError
from storage_engines.registry import CONFIGURABLE_KINDS, ENGINES


def _option(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CommandError(f"--option takes NAME=VALUE, got {text!r}")
    return name, value


class Command(BaseCommand):
    help = (
        "Add a storage location (engine options as --option NAME=VALUE, as the engine declares "
        "them; see /superuser for the same form). Probes it unless --no-probe."
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
        if StorageLocation.objects.filter(location_id=location_id).exists():
            if options["if_missing"]:
                self.stdout.write(f"location {location_id} exists; left as it is")
                return
            raise CommandError(f"location {location_id} already exists")
        if options["kind"] not in CONFIGURABLE_KINDS and options["kind"] != "memory":
            raise CommandError(f"engine kind {options['kind']} cannot be configured")
        engine_options = dict(_option(text) for text in options["option"])
        try:
            location = location_create(
                location_id=location_id,
                kind=options["kind"],
                options=engine_options,
                replicate_by_default=options["default"],
                serve_mode=options["serve_mode"],
            )
        except InvalidOptions as exc:
            raise CommandError(str(exc)) from exc
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        if not options["no_probe"]:
            try:
                location_engine(location).probe(timeout=5)
            except StorageError as exc:
                location.delete()
                raise CommandError(f"probe of {location_id} failed: {exc}") from exc
        self.stdout.write(f"added location {location_id} ({location.get_kind_display()})")
