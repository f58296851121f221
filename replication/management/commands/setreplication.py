"""Turn storage replication on or off."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from replication.services import replication_enable


class Command(BaseCommand):
    help = "Enable or disable storage replication (the panel's 'Enable Storage Replication')."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("state", choices=["on", "off"])

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            replication_enable(enabled=options["state"] == "on")
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(f"storage replication {options['state']}")
