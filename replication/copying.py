"""Replicate one placement: claim it, copy from the best source, verify, then mark it present."""

import contextlib
import hashlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connections
from django.db.models import F, Q
from django.utils import timezone

from storage_engines.base import CopyResult, StorageEngine
from storage_engines.errors import (
    ObjectNotFound,
    StorageError,
    StoragePermanentError,
    StorageUnavailable,
)
from storage_engines.keys import content_key

from . import health
from .models import DAMAGED_STATES, Blob, Placement, PlacementState, StorageLocation
from .repair import placement_damage_at
from .selectors import location_engine, preference_of_instance

logger = logging.getLogger(__name__)


class VerificationFailed(StorageError):
    """The target holds bytes whose size or SHA-256 differ from the blob's."""


class SourceCorrupt(VerificationFailed):
    """The source returned bytes whose SHA-256 is not the blob's: that copy is corrupt."""


class NoSource(StoragePermanentError):
    """No location holds a present copy of the blob."""


@dataclass(frozen=True)
class Outcome:
    """What one run of the replication of a placement did."""

    status: str  # present | skipped | retry | failed
    detail: str = ""
    retry_in: float | None = None


def lease_seconds() -> int:
    return int(getattr(settings, "QUAY_GEO_REPLICATION_LEASE_SECONDS", 300))


def max_attempts() -> int:
    return int(getattr(settings, "QUAY_GEO_REPLICATION_MAX_ATTEMPTS", 8))


def give_up_attempts() -> int:
    return int(getattr(settings, "QUAY_GEO_REPLICATION_GIVE_UP_ATTEMPTS", 24))


def backoff_seconds(attempts: int) -> float:
    """Return the delay before attempt ``attempts + 1``: exponential, jittered, capped."""
    base = float(getattr(settings, "QUAY_GEO_REPLICATION_BACKOFF_BASE", 5))
    ceiling = float(getattr(settings, "QUAY_GEO_REPLICATION_BACKOFF_MAX", 3600))
    delay = min(ceiling, base * (2 ** max(0, attempts - 1)))
    return delay * random.uniform(0.5, 1.0)


def placement_claim(
    placement_id: int, known: Placement | None = None
) -> tuple[Placement, int] | None:
    """Mark the placement ``copying`` under a lease; None if there is nothing to do.

    One ``UPDATE`` decides: only a placement that is pending, lost or corrupt (a repair), failed
    for a transient reason, or copying under an expired lease is taken. A concurrent claim of
    the same row waits for the other's statement and then finds the live lease (READ COMMITTED
    re-checks the condition), so exactly one worker wins.

    ``known``: the row as a batch read it (with its blob and location). The claim then also
    requires the attempts counter it saw, so one statement suffices: if the row moved since, the
    claim starts over from the database.
    """
    now = timezone.now()
    claimable = (
        Q(state__in=[PlacementState.PENDING, *DAMAGED_STATES])
        | Q(state=PlacementState.FAILED, error_permanent=False)
        | Q(state=PlacementState.COPYING, lease_expires_at__isnull=True)
        | Q(state=PlacementState.COPYING, lease_expires_at__lte=now)
    )
    rows = Placement.objects.filter(claimable, pk=placement_id)
    if known is not None:
        rows = rows.filter(attempts=known.attempts)
    taken = rows.update(
        state=PlacementState.COPYING,
        attempts=F("attempts") + 1,
        lease_expires_at=now + timedelta(seconds=lease_seconds()),
        updated_at=now,
    )
    if not taken:
        return None if known is None else placement_claim(placement_id)
    if known is not None:
        known.state, known.attempts = PlacementState.COPYING, known.attempts + 1
        return known, known.attempts
    placement = Placement.objects.select_related("blob", "location").get(pk=placement_id)
    return placement, placement.attempts


class LeaseKeeper:
    """Renew the lease of the placement being copied, from one background thread.

    One keeper serves a whole batch: ``holding`` names the placement whose copy runs now, and
    the thread renews that one every third of the lease. Renewing only matches the claim's token,
    so a renewal that races the end of a copy changes nothing.
    """

    def __init__(self) -> None:
        self._held: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @contextmanager
    def holding(self, placement_id: int, token: int) -> Iterator[None]:
        self._held = (placement_id, token)
        try:
            yield
        finally:
            self._held = None

    def _run(self) -> None:
        interval = max(1.0, lease_seconds() / 3)
        try:
            while not self._stop.wait(interval):
                held = self._held
                if held is None:
                    continue
                Placement.objects.filter(
                    pk=held[0], state=PlacementState.COPYING, attempts=held[1]
                ).update(lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds()))
        finally:
            connections.close_all()  # this thread's own connection, not left to the collector


@dataclass
class BatchContext:
    """What a batch read once for all its placements: rows, present copies, the preference."""

    rows: dict[int, Placement]
    present: dict[int, set[int]]  # blob id -> location pks holding a present copy
    preference: list[StorageLocation]
    lease: LeaseKeeper


def sources_for(
    placement: Placement,
    present: set[int] | None = None,
    preference: list[StorageLocation] | None = None,
) -> list[StorageLocation]:
    """Return the present locations of the blob, in this worker's preference order.

    ``present`` and ``preference``: what a batch read at its start, instead of two queries per
    placement. A copy that went away since fails this attempt as transient; the retry reads anew.
    """
    if present is None:
        present = set(
            Placement.objects.filter(
                blob_id=placement.blob_id, state=PlacementState.PRESENT
            ).values_list("location_id", flat=True)
        )
    if preference is None:
        preference = preference_of_instance()
    return [loc for loc in preference if loc.pk in present and loc.pk != placement.location_id]


def copy_verified(
    *,
    source: StorageEngine,
    target: StorageEngine,
    key: str,
    size: int,
    sha256: str,
    source_md5: bool = True,
) -> CopyResult:
    """Copy ``key`` and check it; raise VerificationFailed on a mismatch.

    A streamed copy: the SHA-256 of the bytes read from the source must be the blob's, and the
    target must have taken ``size`` bytes. A server-side copy is the store's own copy of bytes
    verified at push; the store's success is its check (asking the target for its size after
    every copy cost a request per blob: bench case 2). With ``QUAY_GEO_REPLICATION_VERIFY=
    readback`` every copy is also stat'ed and read back whole, its SHA-256 compared.

    ``source_md5``: let a target that checks MD5s (Swift) use the one the source store gives
    (an S3 ETag) instead of hashing. Retries pass False: should a store's ETag not be the MD5 it
    looks like, the target refuses the copy once, and the retry hashes the bytes itself.
    """
    result = source.copy_to(key, target, size=size, source_md5=source_md5)
    if result.method == "stream":
        if result.sha256 != sha256:
            raise SourceCorrupt(
                f"{source.location_id} returned {result.size} bytes of {key} whose SHA-256 is "
                f"{result.sha256}, not the blob's"
            )
        if result.size != size:
            raise VerificationFailed(
                f"{target.location_id} took {result.size} bytes, expected {size}"
            )
    if getattr(settings, "QUAY_GEO_REPLICATION_VERIFY", "stream") != "readback":
        return result
    found = target.stat(key)
    if found is None or found.size != size:
        raise VerificationFailed(
            f"{target.location_id} holds {None if found is None else found.size} bytes, "
            f"expected {size}"
        )
    digest = hashlib.sha256()
    with target.read(key) as stream:
        for chunk in stream:
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise VerificationFailed(f"bytes read back from {target.location_id} differ")
    return result


def batch_read(placement_ids: list[int], lease: LeaseKeeper) -> BatchContext:
    """Read the rows of a batch, their blobs' present copies and the preference: three queries."""
    rows = Placement.objects.select_related("blob", "location").in_bulk(placement_ids)
    present: dict[int, set[int]] = {}
    blob_ids = {row.blob_id for row in rows.values()}
    for blob_id, location_pk in Placement.objects.filter(
        blob_id__in=blob_ids, state=PlacementState.PRESENT
    ).values_list("blob_id", "location_id"):
        present.setdefault(blob_id, set()).add(location_pk)
    return BatchContext(rows, present, preference_of_instance(), lease)


def blob_replicate(*, placement_id: int, batch: BatchContext | None = None) -> Outcome:
    """Run the replication of one placement once; the caller retries on ``retry``.

    ``batch``: what ``replicate_batch`` read for all its placements; per placement there are
    then two statements (the claim and the result) around the copy.
    """
    known = batch.rows.get(placement_id) if batch is not None else None
    claimed = placement_claim(placement_id, known)
    if claimed is None:
        return Outcome("skipped")
    placement, token = claimed
    blob, target_location = placement.blob, placement.location
    key = content_key(blob.digest)
    started = time.monotonic()
    try:
        target = location_engine(target_location)
        if batch is not None and placement is known:
            sources = sources_for(placement, batch.present.get(blob.pk, set()), batch.preference)
        else:
            sources = sources_for(placement)
        if not sources:
            raise NoSource(f"no location holds a present copy of {blob.digest}")
        result, last_error = None, None
        with contextlib.ExitStack() as stack:
            lease = batch.lease if batch is not None else stack.enter_context(LeaseKeeper())
            stack.enter_context(lease.holding(placement.pk, token))
            for source_location in sources:
                if not health.location_healthy(source_location.location_id):
                    continue
                try:
                    result = copy_verified(
                        source=location_engine(source_location),
                        target=target,
                        key=key,
                        size=blob.size,
                        sha256=blob.sha256,
                        source_md5=token == 1,
                    )
                    break
                except StorageError as exc:  # another source may still work
                    last_error = exc
                    if isinstance(exc, SourceCorrupt | ObjectNotFound):
                        _source_damaged(blob, source_location, exc)
                    logger.warning(
                        "copy of %s from %s failed: %s", blob.digest, source_location, exc
                    )
        if result is None:
            raise last_error or StorageUnavailable("every source location is unhealthy")
    except StoragePermanentError as exc:
        return _finish_failed(placement, token, str(exc), permanent=True)
    except VerificationFailed as exc:
        _discard(target_location, key)
        return _finish_failed(placement, token, str(exc), permanent=False)
    except (StorageError, OSError) as exc:
        return _finish_failed(placement, token, str(exc), permanent=False)
    now = timezone.now()
    updated = Placement.objects.filter(
        pk=placement.pk, state=PlacementState.COPYING, attempts=token
    ).update(
        state=PlacementState.PRESENT,
        verified_at=now,
        lease_expires_at=None,
        next_attempt_at=None,
        last_error="",
        error_permanent=False,
        given_up_at=None,
        copy_method=result.method,
        copy_seconds=time.monotonic() - started,
        updated_at=now,
    )
    if not updated:
        return Outcome("skipped", "lease lost to another worker")
    logger.info(
        "replicated %s to %s (%s, %s bytes)", blob.digest, target_location, result.method, blob.size
    )
    return Outcome("present", result.method)


def _source_damaged(blob: Blob, location: StorageLocation, exc: StorageError) -> None:
    """Mark a source that lost the blob or gave wrong bytes; its own repair is queued."""
    state = PlacementState.CORRUPT if isinstance(exc, SourceCorrupt) else PlacementState.LOST
    placement_damage_at(blob=blob, location=location, state=state, reason=str(exc))


def _discard(location: StorageLocation, key: str) -> None:
    """Delete bytes that failed verification, so a later copy starts clean."""
    try:
        location_engine(location).delete(key)
    except StorageError as exc:
        logger.warning("could not delete unverified %s from %s: %s", key, location, exc)


def _finish_failed(placement: Placement, token: int, reason: str, *, permanent: bool) -> Outcome:
    """Record a failed attempt; past the give-up ceiling a transient failure is kept failed.

    A placement that gave up is marked permanent (nothing retries it by itself: not the task,
    the reconciler, a pull or a stray message) with ``given_up_at`` set, so that an operator's
    retry or the next healthy probe of its location after a failed one can re-arm it.
    """
    exhausted = placement.attempts >= max_attempts()
    given_up = not permanent and placement.attempts >= give_up_attempts()
    if given_up:
        reason = f"gave up after {placement.attempts} attempts: {reason}"
    delay = backoff_seconds(placement.attempts)
    now = timezone.now()
    Placement.objects.filter(pk=placement.pk, state=PlacementState.COPYING, attempts=token).update(
        state=PlacementState.FAILED,
        last_error=reason[:2000],
        error_permanent=permanent or given_up,
        given_up_at=now if given_up else None,
        lease_expires_at=None,
        next_attempt_at=None if permanent or given_up else now + timedelta(seconds=delay),
        updated_at=now,
    )
    logger.warning(
        "replication of %s to %s failed (attempt %s, %s): %s",
        placement.blob.digest,
        placement.location,
        placement.attempts,
        "permanent" if permanent else "given up" if given_up else "transient",
        reason,
    )
    if permanent or given_up:
        return Outcome("failed", reason)
    if exhausted:
        return Outcome("failed", f"{reason} (retried by the reconciler after backoff)")
    return Outcome("retry", reason, retry_in=delay)
