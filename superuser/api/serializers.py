"""Request and response shapes of the superuser API (they also document the OpenAPI schema)."""

from typing import Any

from rest_framework import serializers

from replication.config import CARD, LocationSpec, SaveResult, StorageConfig


class LocationSerializer(serializers.Serializer):
    id = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Primary key of a stored location. Give it to rename that location; without "
        "it a location is matched by location_id.",
    )
    location_id = serializers.CharField(max_length=64, help_text="Letters, digits, '_' and '-'.")
    kind = serializers.CharField(help_text="Engine kind: s3, radosgw, gcs, swift or local.")
    options = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        default=dict,
        help_text="Engine options as the engine declares them. Secrets are never returned; on "
        "write, an omitted or empty secret keeps the stored one.",
    )
    replicate_by_default = serializers.BooleanField(required=False, default=False)
    serve_mode = serializers.CharField(
        required=False, default="redirect", help_text="redirect or proxy."
    )
    clear_secrets = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        default=list,
        write_only=True,
        help_text="Names of stored secrets to remove.",
    )
    secrets_stored = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="Names of the secrets stored."
    )


class StorageConfigSerializer(serializers.Serializer):
    storage_replication_enabled = serializers.BooleanField()
    config_version = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="On read, the current version. On write (optional), the version the change "
        "is based on: the save fails if someone saved in between.",
    )
    locations = LocationSerializer(many=True, help_text="Every location, in preference order.")

    def to_config(self) -> StorageConfig:
        data: dict[str, Any] = self.validated_data
        return StorageConfig(
            replication_enabled=data["storage_replication_enabled"],
            version=data.get("config_version"),
            locations=[
                LocationSpec(
                    location_id=item["location_id"],
                    kind=item["kind"],
                    options=dict(item.get("options") or {}),
                    replicate_by_default=item.get("replicate_by_default", False),
                    serve_mode=item.get("serve_mode", "redirect"),
                    pk=item.get("id"),
                    secrets_clear=frozenset(item.get("clear_secrets") or ()),
                )
                for item in data["locations"]
            ],
        )


def config_data(config: StorageConfig) -> dict[str, Any]:
    """Return a stored configuration as the API shows it (secret names only)."""
    return {
        "storage_replication_enabled": config.replication_enabled,
        "config_version": config.version,
        "locations": [
            {
                "id": spec.pk,
                "location_id": spec.location_id,
                "kind": spec.kind,
                "options": spec.options,
                "replicate_by_default": spec.replicate_by_default,
                "serve_mode": spec.serve_mode,
                "secrets_stored": sorted(spec.secrets_stored),
            }
            for spec in config.locations
        ],
    }


def result_errors(result: SaveResult, config: StorageConfig) -> dict[str, Any]:
    """Return a refused save's errors, per location (by index and ID) and field."""
    return {
        "saved": False,
        "general": result.general,
        "warnings": result.warnings,
        "locations": [
            {
                "index": index,
                "location_id": config.locations[index].location_id,
                "errors": {
                    ("card" if name == CARD else name): messages
                    for name, messages in fields.items()
                },
            }
            for index, fields in sorted(result.errors.items())
        ],
    }


class SaveErrorSerializer(serializers.Serializer):
    saved = serializers.BooleanField()
    general = serializers.ListField(child=serializers.CharField())
    warnings = serializers.ListField(child=serializers.CharField())
    locations = serializers.ListField(
        child=serializers.DictField(),
        help_text="One entry per location with errors: index, location_id and errors by field "
        "('card' for the location as a whole, e.g. a failed probe).",
    )


class SaveResultSerializer(serializers.Serializer):
    saved = serializers.BooleanField()
    config_version = serializers.IntegerField()
    warnings = serializers.ListField(child=serializers.CharField())
    new_default_locations = serializers.ListField(
        child=serializers.CharField(),
        help_text="Locations that became default targets: a backfill copies existing images.",
    )
    config = StorageConfigSerializer()


class NamespaceTargetsSerializer(serializers.Serializer):
    name = serializers.CharField(read_only=True)
    kind = serializers.CharField(read_only=True)
    locations = serializers.ListField(
        child=serializers.CharField(), help_text="Extra target location IDs of the namespace."
    )


class NamespacePageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    page = serializers.IntegerField()
    pages = serializers.IntegerField()
    results = NamespaceTargetsSerializer(many=True)


class RetrySerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(), required=False, help_text="Failed placements to retry."
    )
    all = serializers.BooleanField(
        required=False, default=False, help_text="Retry every failed one."
    )
    location_id = serializers.CharField(
        required=False, allow_blank=True, help_text="With all: only this location's."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("ids") and not attrs.get("all"):
            raise serializers.ValidationError("Give ids, or all: true.")
        return attrs


class RetryResultSerializer(serializers.Serializer):
    retried = serializers.IntegerField()


class BackfillStartSerializer(serializers.Serializer):
    location_id = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, help_text="Empty: every target location."
    )


class BackfillSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    location_id = serializers.CharField(allow_null=True)
    started_at = serializers.DateTimeField()
    started_by = serializers.CharField()
    planned = serializers.IntegerField()
    present = serializers.IntegerField()
    failed = serializers.IntegerField()
    remaining = serializers.IntegerField()
    percent = serializers.FloatField()
    planning = serializers.BooleanField()
    done = serializers.BooleanField()


class StatusSerializer(serializers.Serializer):
    locations = serializers.ListField(child=serializers.DictField())
    failed_total = serializers.IntegerField()
    failed = serializers.ListField(child=serializers.DictField())
    backfills = BackfillSerializer(many=True)
    instances = serializers.ListField(child=serializers.DictField())
