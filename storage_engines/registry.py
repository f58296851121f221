"""The table of engines and the one factory that builds them."""

from collections.abc import Mapping
from typing import Any

from .base import StorageEngine
from .errors import UnknownEngineKind
from .gcs import GCSEngine
from .local import LocalEngine
from .memory import MemoryEngine
from .options import options_clean
from .radosgw import RadosGWEngine
from .s3 import S3Engine
from .swift import SwiftEngine

ENGINES: dict[str, type[StorageEngine]] = {
    "s3": S3Engine,
    "radosgw": RadosGWEngine,
    "gcs": GCSEngine,
    "swift": SwiftEngine,
    "local": LocalEngine,
    "memory": MemoryEngine,
}

#: The kinds an operator may configure (the in-memory engine is for tests only).
CONFIGURABLE_KINDS = ("s3", "radosgw", "gcs", "swift", "local")


def engine_class(kind: str) -> type[StorageEngine]:
    """Return the engine class of a kind, or raise UnknownEngineKind naming it."""
    try:
        return ENGINES[kind]
    except KeyError:
        raise UnknownEngineKind(
            f"unknown storage engine kind {kind!r}; known kinds: {', '.join(sorted(ENGINES))}"
        ) from None


def engine_create(*, kind: str, location_id: str, options: Mapping[str, Any]) -> StorageEngine:
    """Validate ``options`` with the engine's own declaration and return a new engine."""
    cls = engine_class(kind)
    return cls(location_id=location_id, options=options_clean(cls.options_form, options))
