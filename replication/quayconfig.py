"""Red Hat Quay's storage keys of ``config.yaml``, mapped to and from quay-geo's configuration.

Quay's driver parameters mostly carry the names of quay-geo's engine options already; the few
that differ are mapped explicitly below, and anything that cannot be mapped is refused with the
key that holds it (Quay itself falls back to a silent in-memory store for an unknown driver).
"""

import math
from dataclasses import dataclass, field
from typing import Any

from storage_engines.registry import engine_class

from .config import LocationSpec, StorageConfig

FEATURE = "FEATURE_STORAGE_REPLICATION"
CONFIG = "DISTRIBUTED_STORAGE_CONFIG"
PREFERENCE = "DISTRIBUTED_STORAGE_PREFERENCE"
DEFAULTS = "DISTRIBUTED_STORAGE_DEFAULT_LOCATIONS"
PROXY = "FEATURE_PROXY_STORAGE"
#: quay-geo's own key: the locations that stream pulls, when not all of them do.
PROXY_LOCATIONS = "QUAY_GEO_PROXY_STORAGE_LOCATIONS"
KEYS = (FEATURE, CONFIG, PREFERENCE, DEFAULTS, PROXY, PROXY_LOCATIONS)

DRIVERS = {
    "S3Storage": "s3",
    "RadosGWStorage": "radosgw",
    "GoogleCloudStorage": "gcs",
    "SwiftStorage": "swift",
    "LocalStorage": "local",
}
DRIVER_OF_KIND = {kind: driver for driver, kind in DRIVERS.items()}

#: Quay parameter -> quay-geo option, where the names differ.
RENAMED: dict[str, dict[str, str]] = {
    "gcs": {"boto_timeout": "connect_timeout", "minimum_chunk_size_mb": "chunk_size_mb"},
    "radosgw": {"maximum_chunk_size_mb": "maximum_chunk_size_gb"},
}
#: Quay parameters accepted and not used, with the reason shown to the operator.
IGNORED: dict[str, dict[str, str]] = {
    "radosgw": {"server_side_assembly": "quay-geo writes multipart uploads natively"},
    "gcs": {"signature_version": "the GCS engine signs requests itself"},
    "swift": {
        "simple_path_concat": "quay-geo always joins storage_path and keys with '/'",
        "retry_on_ratelimit": "rate-limited requests are retried like other transient errors",
    },
}


class QuayConfigError(ValueError):
    """A key of config.yaml cannot be mapped; the message names it."""


@dataclass
class Imported:
    """The configuration read from config.yaml, and notes about what was adapted or ignored."""

    config: StorageConfig
    notes: list[str] = field(default_factory=list)
    #: Per location ID: quay-geo option name -> the config.yaml parameter it came from.
    sources: dict[str, dict[str, str]] = field(default_factory=dict)


def _id_list(data: dict[str, Any], key: str, known: list[str]) -> list[str]:
    value = data.get(key) or []
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise QuayConfigError(f"{key}: give a list of location IDs")
    unknown = [item for item in value if item not in known]
    if unknown:
        raise QuayConfigError(f"{key}: {', '.join(map(repr, unknown))} is not defined in {CONFIG}")
    return list(dict.fromkeys(value))


def _options(
    location_id: str, driver: str, params: dict[str, Any], imported: Imported
) -> dict[str, Any]:
    kind = DRIVERS[driver]
    declared = set(engine_class(kind).options_form.base_fields)
    renamed, ignored = RENAMED.get(kind, {}), IGNORED.get(kind, {})
    options: dict[str, Any] = {}
    sources = imported.sources.setdefault(location_id, {})
    for name, value in params.items():
        key = f"{CONFIG}.{location_id}.{name}"
        if name in ignored:
            imported.notes.append(f"{key} ignored: {ignored[name]}.")
            continue
        target = renamed.get(name, name)
        if kind == "s3" and name in ("host", "port"):
            continue
        if target not in declared:
            raise QuayConfigError(
                f"{key}: {driver} has no parameter {name!r} that quay-geo can map"
            )
        if name == "maximum_chunk_size_mb" and value is not None:
            gigabytes = min(5, max(1, math.ceil(float(value) / 1024)))
            imported.notes.append(f"{key}={value} becomes maximum_chunk_size_gb={gigabytes}.")
            value = gigabytes
        options[target] = value
        sources[target] = name
    if kind == "s3" and params.get("host"):
        if params.get("endpoint_url"):
            raise QuayConfigError(
                f"{CONFIG}.{location_id}.host: give host (and port) or endpoint_url, not both"
            )
        port = params.get("port")
        # Quay's boto2-style host and port always mean HTTPS.
        options["endpoint_url"] = f"https://{params['host']}" + (f":{port}" if port else "")
        sources["endpoint_url"] = "host"
    elif kind == "s3" and params.get("port"):
        raise QuayConfigError(f"{CONFIG}.{location_id}.port: port needs host")
    return options


def quay_config_read(data: Any) -> Imported:
    """Return the storage configuration a parsed config.yaml describes; raise QuayConfigError."""
    if not isinstance(data, dict):
        raise QuayConfigError("config.yaml: the top level must be a mapping of keys")
    storages = data.get(CONFIG)
    if not isinstance(storages, dict) or not storages:
        raise QuayConfigError(
            f"{CONFIG}: give at least one location (ID: [Driver, {{parameters}}])"
        )
    imported = Imported(
        StorageConfig(replication_enabled=bool(data.get(FEATURE, False)), locations=[])
    )
    ids = [str(location_id) for location_id in storages]
    preference = _id_list(data, PREFERENCE, ids)
    defaults = set(_id_list(data, DEFAULTS, ids))
    proxied = set(ids) if data.get(PROXY) else set()
    if PROXY_LOCATIONS in data:
        proxied = set(_id_list(data, PROXY_LOCATIONS, ids))
    for location_id in preference + [i for i in ids if i not in preference]:
        entry = storages[location_id]
        if (
            not isinstance(entry, list | tuple)
            or len(entry) != 2
            or not isinstance(entry[1], dict | None)
        ):
            raise QuayConfigError(f"{CONFIG}.{location_id}: give [DriverName, {{parameters}}]")
        driver, params = str(entry[0]), entry[1] or {}
        if driver not in DRIVERS:
            raise QuayConfigError(
                f"{CONFIG}.{location_id}: storage driver {driver!r} is not supported by quay-geo "
                f"(supported: {', '.join(DRIVERS)})"
            )
        imported.config.locations.append(
            LocationSpec(
                location_id=location_id,
                kind=DRIVERS[driver],
                options=_options(location_id, driver, params, imported),
                replicate_by_default=location_id in defaults,
                serve_mode="proxy" if location_id in proxied else "redirect",
            )
        )
    ignored = sorted(str(key) for key in data if key not in KEYS)
    if ignored:
        imported.notes.append(f"Keys other than storage ignored: {', '.join(ignored)}.")
    return imported


def quay_config_write(
    config: StorageConfig, *, secrets: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Return the Quay keys of a configuration; secrets only those given, per location ID."""
    storages: dict[str, Any] = {}
    for spec in config.locations:
        if spec.kind not in DRIVER_OF_KIND:
            raise QuayConfigError(
                f"{spec.location_id}: Quay has no storage driver for kind {spec.kind!r}"
            )
        form_class = engine_class(spec.kind).options_form
        values = {**spec.options, **(secrets or {}).get(spec.location_id, {})}
        reverse = {ours: theirs for theirs, ours in RENAMED.get(spec.kind, {}).items()}
        params: dict[str, Any] = {}
        for name, field_ in form_class.base_fields.items():
            value = values.get(name)
            if value in (None, "") or (not field_.required and value == field_.initial):
                continue
            if name == "maximum_chunk_size_gb" and spec.kind == "radosgw":
                value = int(value) * 1024
            if name == "auth_version":
                value = int(value)
            params[reverse.get(name, name)] = value
        storages[spec.location_id] = [DRIVER_OF_KIND[spec.kind], params]
    proxied = [spec.location_id for spec in config.locations if spec.serve_mode == "proxy"]
    data: dict[str, Any] = {
        FEATURE: config.replication_enabled,
        CONFIG: storages,
        PREFERENCE: [spec.location_id for spec in config.locations],
        DEFAULTS: [spec.location_id for spec in config.locations if spec.replicate_by_default],
        PROXY: bool(config.locations) and len(proxied) == len(config.locations),
    }
    if proxied and len(proxied) != len(config.locations):
        data[PROXY_LOCATIONS] = proxied
    return data


def options_unknown_to_quay(kind: str) -> set[str]:
    """Return the option names of a kind that Quay's driver does not know."""
    quay_known = {
        "s3": {
            "storage_path",
            "s3_bucket",
            "s3_access_key",
            "s3_secret_key",
            "s3_region",
            "endpoint_url",
            "maximum_chunk_size_gb",
            "minimum_chunk_size_mb",
            "aws_session_token",
            "signature_version",
        },
        "radosgw": {
            "hostname",
            "is_secure",
            "storage_path",
            "access_key",
            "secret_key",
            "bucket_name",
            "region_name",
            "signature_version",
            "port",
            "minimum_chunk_size_mb",
            "maximum_chunk_size_gb",
        },
        "gcs": {
            "storage_path",
            "access_key",
            "secret_key",
            "bucket_name",
            "connect_timeout",
            "chunk_size_mb",
        },
        "swift": {
            "swift_container",
            "storage_path",
            "auth_url",
            "swift_user",
            "swift_password",
            "auth_version",
            "os_options",
            "ca_cert_path",
            "temp_url_key",
            "connect_timeout",
            "retry_count",
        },
        "local": {"storage_path"},
    }
    return set(engine_class(kind).options_form.base_fields) - quay_known.get(kind, set())
