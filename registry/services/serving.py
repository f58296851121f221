"""Where a blob download comes from: a direct URL of a storage location, or a stream.

Candidates are the blob's present placements in this instance's preference order; when one
location fails, the next is tried within the same request. This is the one function the
georeplication work extends (health, priority replication).
"""

import logging
from dataclasses import dataclass

from django.conf import settings

from replication import health
from replication.models import Blob, Placement, ServeMode, StorageLocation
from replication.selectors import (
    location_engine,
    preference_of_instance,
    read_candidates,
)
from replication.services import placement_prioritize
from storage_engines.errors import ObjectNotFound, StorageError, StorageUnavailable
from storage_engines.keys import content_key
from storage_engines.streams import ByteStream

from .. import errors
from ..ranges import ByteRange
from .problems import StorageFailed
from .streaming import db_release

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlobRedirect:
    """Send the client to a short-lived URL that needs no credentials of ours."""

    url: str


@dataclass(frozen=True)
class BlobStream:
    """Serve bytes through the registry; ``stream`` is None for a HEAD."""

    stream: ByteStream | None


def direct_url_ttl() -> int:
    """Return how long a direct URL stays valid, in seconds."""
    return int(getattr(settings, "QUAY_GEO_DIRECT_URL_TTL", 600))


def _own_copy_hurry(
    blob: Blob, holders: list[StorageLocation], preference: list[StorageLocation]
) -> None:
    """Move the copy into this instance's first location to the front of the queue if missing."""
    if preference and preference[0] not in holders:
        placement_prioritize(blob=blob, location=preference[0])


def blob_source_open(
    *,
    blob: Blob,
    method: str,
    byte_range: ByteRange | None,
    present: list[Placement] | None = None,
) -> BlobRedirect | BlobStream:
    """Return where the bytes of ``blob`` come from; raise StorageFailed if nowhere.

    The database connection is released before a body is streamed (a download may be long);
    a ``HEAD`` or a redirect keeps it for the next request (reconnecting cost more than the
    rest of such a request).
    """
    preference = preference_of_instance()  # a PreferenceError surfaces as it always did
    placements = read_candidates(blob, preference, present)
    candidates = [(p.location, location_engine(p.location)) for p in placements]
    _own_copy_hurry(blob, [location for location, _ in candidates], preference)
    key = content_key(blob.digest)
    failures: list[StorageError] = []
    for location, engine in candidates:
        try:
            if location.serve_mode == ServeMode.REDIRECT:
                url = engine.direct_url(key, expires_in=direct_url_ttl(), method=method)
                # A URL is signed without asking the store: check the store holds the bytes
                # (distribution stats too) so that a dead store sends us to the next location.
                if url and engine.stat(key) is None:
                    raise ObjectNotFound(f"{key} missing in {location.location_id}")
                if url:
                    health.location_succeeded(location.location_id)
                    return BlobRedirect(url)
            if method == "HEAD":
                return BlobStream(None)
            offset, length = (byte_range.first, byte_range.length) if byte_range else (0, None)
            db_release()
            stream = engine.read(key, offset=offset, length=length)
            health.location_succeeded(location.location_id)
            return BlobStream(stream)
        except StorageError as exc:
            logger.warning("blob %s not served from %s: %s", blob.digest, location, exc)
            if isinstance(exc, StorageUnavailable):
                health.location_failed(location.location_id, reason=str(exc))
            failures.append(exc)
    if not failures or all(isinstance(exc, ObjectNotFound) for exc in failures):
        raise errors.BlobUnknown({"digest": blob.digest})
    raise StorageFailed({"digest": blob.digest})
