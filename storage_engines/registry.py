"""The table of engines and the one factory that builds them.

The table names each class by its import path: an engine's module (and its SDK: boto3,
google-cloud-storage, python-swiftclient, tens of MB each) is imported the first time a location
of that kind is used, so a web process that serves one kind of store does not carry the others.
"""

from collections.abc import Mapping
from functools import cache
from typing import Any

from django.utils.module_loading import import_string

from .base import StorageEngine
from .errors import UnknownEngineKind
from .options import options_clean

ENGINES: dict[str, str] = {
    "s3": "storage_engines.s3.S3Engine",
    "radosgw": "storage_engines.radosgw.RadosGWEngine",
    "gcs": "storage_engines.gcs.GCSEngine",
    "swift": "storage_engines.swift.SwiftEngine",
    "local": "storage_engines.local.LocalEngine",
    "memory": "storage_engines.memory.MemoryEngine",
}

#: The kinds an operator may configure (the in-memory engine is for tests only).
CONFIGURABLE_KINDS = ("s3", "radosgw", "gcs", "swift", "local")


@cache
def engine_class(kind: str) -> type[StorageEngine]:
    """Return the engine class of a kind, or raise UnknownEngineKind naming it."""
    try:
        path = ENGINES[kind]
    except KeyError:
        raise UnknownEngineKind(
            f"unknown storage engine kind {kind!r}; known kinds: {', '.join(sorted(ENGINES))}"
        ) from None
    engine: type[StorageEngine] = import_string(path)
    return engine


def engine_create(*, kind: str, location_id: str, options: Mapping[str, Any]) -> StorageEngine:
    """Validate ``options`` with the engine's own declaration and return a new engine."""
    cls = engine_class(kind)
    return cls(location_id=location_id, options=options_clean(cls.options_form, options))
