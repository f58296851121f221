"""Import the storage configuration of a Red Hat Quay config.yaml."""

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from replication.config import CARD, storage_config_save
from replication.quayconfig import CONFIG, QuayConfigError, quay_config_read


class Command(BaseCommand):
    help = (
        "Replace the storage configuration with the one of a Red Hat Quay config.yaml "
        "(FEATURE_STORAGE_REPLICATION, DISTRIBUTED_STORAGE_CONFIG, DISTRIBUTED_STORAGE_PREFERENCE, "
        "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS, FEATURE_PROXY_STORAGE). Validated like the "
        "/superuser panel: all or nothing. Locations missing from the file are removed; a secret "
        "missing from the file keeps its stored value."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="config.yaml to read ('-' for standard input).")
        parser.add_argument("--no-probe", action="store_true", help="Skip the live engine probes.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Validate (and probe) only; store nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["path"] == "-":
                data = yaml.safe_load(sys.stdin)
            else:
                data = yaml.safe_load(Path(options["path"]).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise CommandError(f"cannot read {options['path']}: {exc}") from exc
        try:
            imported = quay_config_read(data)
        except QuayConfigError as exc:
            raise CommandError(str(exc)) from exc
        for note in imported.notes:
            self.stdout.write(f"note: {note}")
        config = imported.config
        result = storage_config_save(
            config=config,
            actor=f"importquayconfig ({os.environ.get('USER') or 'unknown user'})",
            probe=not options["no_probe"],
            dry_run=options["dry_run"],
        )
        for warning in result.warnings:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))
        if not result.ok:
            lines = list(result.general)
            for index, fields in sorted(result.errors.items()):
                location_id = config.locations[index].location_id
                sources = imported.sources.get(location_id, {})
                for name, messages in fields.items():
                    key = f"{CONFIG}.{location_id}"
                    if name != CARD:
                        key += f".{sources.get(name, name)}"
                    lines.extend(f"{key}: {message}" for message in messages)
            raise CommandError("nothing imported:\n  " + "\n  ".join(lines))
        ids = ", ".join(spec.location_id for spec in config.locations)
        if options["dry_run"]:
            self.stdout.write(self.style.SUCCESS(f"valid: {ids} (nothing stored: --dry-run)"))
            return
        self.stdout.write(self.style.SUCCESS(f"imported {ids} (config version {result.version})"))
        if result.new_defaults:
            self.stdout.write(
                f"new default targets: {', '.join(result.new_defaults)}; copy existing images "
                "with `manage.py backfillreplication`"
            )
