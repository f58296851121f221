"""Where a blob download comes from: a direct URL of a storage location, or a stream.

Candidates are the blob's present placements in this instance's preference order; when one
location fails, the next is tried within the same request. This is the one function the
georeplication work extends (health, priority replication).
"""

import concurrent.futures
import contextvars
import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings

from replication import health
from replication.models import Blob, Placement, PlacementState, ServeMode, StorageLocation
from replication.regioncache import content_ttl, region_cache
from replication.repair import placement_damage_at
from replication.selectors import (
    blob_facts_forget,
    location_engine,
    preference_of_instance,
    read_candidates,
)
from replication.services import placement_prioritize
from storage_engines.base import StorageEngine
from storage_engines.errors import (
    InvalidRange,
    ObjectNotFound,
    StorageError,
    StorageTimeout,
    StorageUnavailable,
)
from storage_engines.keys import content_key
from storage_engines.streams import ByteStream

from .. import errors
from ..ranges import ByteRange
from .problems import StorageFailed
from .streaming import db_release

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class BlobRedirect:
    """Send the client to a short-lived URL that needs no credentials of ours."""

    url: str


@dataclass(frozen=True)
class BlobStream:
    """Serve bytes through the registry; ``stream`` is None for a HEAD."""

    stream: ByteStream | None


def attempt_seconds() -> float:
    """Return how long one location may take to answer a HEAD or the start of a GET."""
    return float(getattr(settings, "QUAY_GEO_STORAGE_ATTEMPT_SECONDS", 4.0))


class StoreBudget:
    """Runs one storage call on a helper thread and stops waiting for it after its budget.

    The engines' own timeouts end a hung call soon after (a metadata call's read timeout);
    the budget bounds what a request waits for one location whatever an SDK retries, so that
    the next location is tried within seconds.
    """

    def __init__(self, workers: int = 16) -> None:
        self.workers = workers
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def call(self, action: Callable[[], T], *, seconds: float, location_id: str) -> T:
        """Return what ``action`` returns; raise StorageTimeout if it takes over ``seconds``."""
        context = contextvars.copy_context()  # the request id follows into the helper's logs
        future = self._executor().submit(context.run, action)
        try:
            return future.result(timeout=seconds)
        except concurrent.futures.TimeoutError:
            if not future.cancel():
                future.add_done_callback(_late_result_close)
            raise StorageTimeout(f"{location_id} did not answer within {seconds:g} s") from None

    def _executor(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.workers, thread_name_prefix="store-call"
                )
            return self._pool

    def reset(self) -> None:
        """Stop the helper threads once their calls end (tests, forks)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


store_budget = StoreBudget()


def _bounded(engine: StorageEngine, action: Callable[[], T], seconds: float, within: str) -> T:
    """Run a storage call within its budget, on a helper thread only where it may hang."""
    if not engine.remote:  # local disk: no thread hand-off on the metadata path
        return action()
    return store_budget.call(action, seconds=seconds, location_id=within)


def _late_result_close(future: "concurrent.futures.Future[Any]") -> None:
    """Close what a call returned after its request stopped waiting (an opened stream)."""
    if future.exception() is None:
        close = getattr(future.result(), "close", None)
        if callable(close):
            close()


def direct_url_ttl() -> int:
    """Return how long a direct URL stays valid, in seconds."""
    return int(getattr(settings, "QUAY_GEO_DIRECT_URL_TTL", 600))


def _own_copy_hurry(
    blob: Blob, holders: list[StorageLocation], preference: list[StorageLocation]
) -> None:
    """Move the copy into this instance's first location to the front of the queue if missing.

    Once per blob and location per ``QUAY_GEO_CACHE_SECONDS`` in the region: a far region pulling
    what it lacks must not write to the primary on every request while the copy is on its way.
    """
    if not preference or preference[0] in holders:
        return
    key = f"hurried:{blob.digest}:{preference[0].pk}"
    if region_cache.get(key):
        return
    region_cache.set(key, True, ttl=content_ttl())
    placement_prioritize(blob=blob, location=preference[0])


class CopyDamaged(StorageError):
    """A present copy is not what its placement says: missing, or of a wrong size."""


def _object_check(engine: StorageEngine, key: str, blob: Blob) -> None:
    """Raise ObjectNotFound or CopyDamaged unless the store holds ``blob.size`` bytes at ``key``."""
    found = engine.stat(key)
    if found is None:
        raise ObjectNotFound(f"{key} not found in {engine.location_id}")
    if found.size != blob.size:
        raise CopyDamaged(f"{engine.location_id} holds {found.size} bytes, expected {blob.size}")


def blob_source_open(
    *,
    blob: Blob,
    method: str,
    byte_range: ByteRange | None,
    present: list[Placement] | None = None,
) -> BlobRedirect | BlobStream:
    """Return where the bytes of ``blob`` come from; raise StorageFailed if nowhere.

    A present copy found missing or of a wrong size is marked lost (its repair queued) and the
    next location is tried in the same request. A streamed body is hashed on its way out; wrong
    bytes mark the copy corrupt and cut the response (see ``_verified``).

    The database connection is released before a body is streamed (a download may be long);
    a ``HEAD`` or a redirect keeps it for the next request (reconnecting cost more than the
    rest of such a request).
    """
    preference = preference_of_instance()  # a PreferenceError surfaces as it always did
    placements = read_candidates(blob, preference, present)
    _own_copy_hurry(blob, [p.location for p in placements], preference)
    failures: list[StorageError] = []
    found = _first_source(blob, method, byte_range, placements, failures)
    if found is None and present is not None:
        # The caller's placements may be the region cache's, older than copies made since:
        # before answering that nothing holds the blob, ask the database for the others.
        blob_facts_forget([blob.digest])
        tried = {p.location_id for p in placements}
        others = [p for p in read_candidates(blob, preference) if p.location_id not in tried]
        found = _first_source(blob, method, byte_range, others, failures)
    if found is not None:
        return found
    if not failures or all(isinstance(exc, ObjectNotFound) for exc in failures):
        raise errors.BlobUnknown({"digest": blob.digest})
    raise StorageFailed({"digest": blob.digest})


def _first_source(
    blob: Blob,
    method: str,
    byte_range: ByteRange | None,
    placements: list[Placement],
    failures: list[StorageError],
) -> BlobRedirect | BlobStream | None:
    """Return the first of ``placements`` that serves the blob, None if none; note failures."""
    key = content_key(blob.digest)
    seconds = attempt_seconds()
    for placement in placements:
        location = placement.location
        engine = location_engine(location)
        within = location.location_id
        check = functools.partial(_object_check, engine, key, blob)
        try:
            if location.serve_mode == ServeMode.REDIRECT:
                url = engine.direct_url(key, expires_in=direct_url_ttl(), method=method)
                if url:
                    # A URL is signed without asking the store: check the store holds the bytes
                    # (distribution stats too) so that a lost copy sends us to the next location.
                    _bounded(engine, check, seconds, within)
                    health.location_succeeded(location.location_id)
                    return BlobRedirect(url)
            if method == "HEAD":
                _bounded(engine, check, seconds, within)
                health.location_succeeded(location.location_id)
                return BlobStream(None)
            offset, length = (byte_range.first, byte_range.length) if byte_range else (0, None)
            db_release()
            opened = functools.partial(engine.read, key, offset=offset, length=length)
            stream = _bounded(engine, opened, seconds, within)
            health.location_succeeded(location.location_id)
            return BlobStream(_verified(stream, blob, location, length or blob.size - offset))
        except (ObjectNotFound, CopyDamaged, InvalidRange) as exc:
            # InvalidRange: the range was checked against the blob's size, so the object is short.
            logger.warning("blob %s not served from %s: %s", blob.digest, location, exc)
            placement_damage_at(
                blob=blob, location=location, state=PlacementState.LOST, reason=str(exc)
            )
            failures.append(ObjectNotFound(str(exc)))
        except StorageError as exc:
            logger.warning("blob %s not served from %s: %s", blob.digest, location, exc)
            if isinstance(exc, StorageUnavailable):
                # A hung store costs every request its whole budget: skip it at once.
                health.location_failed(
                    location.location_id, reason=str(exc), trip=isinstance(exc, StorageTimeout)
                )
            failures.append(exc)
    return None


class BodyCut(Exception):
    """The bytes a store returned are not the blob's: the response is cut, never completed."""


def _verified(stream: ByteStream, blob: Blob, location: StorageLocation, length: int) -> ByteStream:
    """Return ``stream`` checked on its way out: the last chunk is held back until the bytes are
    known right, so a client never receives a complete wrong body.

    A whole body is hashed against the blob's SHA-256, a range is counted. On a mismatch the
    copy is marked corrupt (the next request reads another one) and BodyCut is raised inside the
    WSGI iteration: the server drops the connection before Content-Length bytes were sent.
    A local file sent with sendfile() passes unchecked (the audit and the scrub check it).
    """
    if stream.file is not None:
        return stream
    whole = length == blob.size

    def chunks() -> Iterator[bytes]:
        digest = hashlib.sha256() if whole else None
        held, size = b"", 0
        for chunk in stream:
            size += len(chunk)
            if digest is not None:
                digest.update(chunk)
            if size > length:
                break
            if held:
                yield held
            held = chunk
        problem = None
        if size != length:
            problem = f"{location.location_id} returned {size} bytes, expected {length}"
        elif digest is not None and digest.hexdigest() != blob.sha256:
            problem = f"{location.location_id} returned bytes whose SHA-256 is not the blob's"
        if problem is not None:
            logger.error("blob %s: %s; response cut", blob.digest, problem)
            placement_damage_at(
                blob=blob, location=location, state=PlacementState.CORRUPT, reason=problem
            )
            raise BodyCut(problem)
        if held:
            yield held

    return ByteStream(chunks(), stream.close)
