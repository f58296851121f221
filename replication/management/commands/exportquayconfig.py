"""Write the storage configuration as the storage keys of a Red Hat Quay config.yaml."""

from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from replication.config import storage_config_read
from replication.models import StorageLocation
from replication.quayconfig import QuayConfigError, options_unknown_to_quay, quay_config_write


class Command(BaseCommand):
    help = (
        "Print the storage configuration as YAML with Quay's keys (FEATURE_STORAGE_REPLICATION, "
        "DISTRIBUTED_STORAGE_CONFIG, DISTRIBUTED_STORAGE_PREFERENCE, "
        "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS, FEATURE_PROXY_STORAGE). Secrets are left out "
        "unless --include-secrets is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--include-secrets",
            action="store_true",
            help="Also write keys, passwords and tokens (keep the output safe).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = storage_config_read()
        secrets = None
        if options["include_secrets"]:
            secrets = {
                location.location_id: {
                    name: value
                    for name, value in location.engine_options().items()
                    if name in location.secrets
                }
                for location in StorageLocation.objects.all()
            }
        try:
            data = quay_config_write(config, secrets=secrets)
        except QuayConfigError as exc:
            raise CommandError(str(exc)) from exc
        header = [f"# quay-geo storage configuration, version {config.version}"]
        if not options["include_secrets"]:
            header.append(
                "# Secrets are left out (--include-secrets writes them); importquayconfig keeps "
                "the stored ones."
            )
        extra = sorted(
            {name for spec in config.locations for name in options_unknown_to_quay(spec.kind)}
            & {name for params in data["DISTRIBUTED_STORAGE_CONFIG"].values() for name in params[1]}
        )
        if extra:
            header.append(f"# Parameters of quay-geo that Quay does not know: {', '.join(extra)}")
        self.stdout.write("\n".join(header))
        self.stdout.write(
            yaml.safe_dump(data, sort_keys=False, default_flow_style=False), ending=""
        )
