"""The inventory audit: a location's listing merged with its placements, in key order.

Both sides are read page by page (the store's listing, ``list_page_size`` objects a request;
the placements by keyset on the digest, ``PAGE`` rows a query), so memory stays bounded
whatever the location holds. A content key ``sha256/ab/abcd...`` sorts like its digest
``sha256:abcd...`` (the same hex after the same algorithm), which is what lets the two merge.

* a present placement whose object is not listed is lost; one whose size differs is corrupt;
  with ``deep``, every present object is also read and hashed (right: verified now);
  their repair is queued unless ``repair`` is False, as is that of lost and corrupt copies an
  earlier audit left without one;
* a listed object no placement of the location refers to is an orphan: reported, and deleted
  once older than the garbage-collection grace period (never with ``repair`` False). Upload
  staging objects live under ``_uploads/``, outside the content prefixes, and are not listed.

Placements verified after the audit started are left alone: their object may have been
written after the listing passed its key.

One listing covers both algorithms (prefix ``sha``: ``sha256/`` keys sort before ``sha512/``
ones), so a million objects cost ceil(1,000,000 / 1,000) list requests, not one more for an
often empty ``sha512/``; keys of that listing under neither prefix are not content and are
skipped.
"""

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from storage_engines.base import ListedObject, StorageEngine
from storage_engines.errors import ObjectNotFound, StorageError
from storage_engines.keys import content_key

from .models import (
    DAMAGED_STATES,
    AuditKind,
    AuditRun,
    Placement,
    PlacementState,
    StorageLocation,
)
from .repair import Damage, placements_damage
from .selectors import location_engine
from .services import placements_enqueue

logger = logging.getLogger(__name__)

#: Placements read per query, and findings acted on per batch.
PAGE = 1000
ALGORITHMS = ("sha256", "sha512")


def gc_grace() -> timedelta:
    """Return how old an unreferenced object must be before it is deleted."""
    return timedelta(seconds=int(getattr(settings, "QUAY_GEO_GC_GRACE_SECONDS", 24 * 3600)))


class _Listing:
    """A store's listing under ``sha``, read one content prefix after the other."""

    def __init__(self, items: Iterator[ListedObject]) -> None:
        self._items = items
        self._head = next(items, None)

    def under(self, prefix: str) -> Iterator[ListedObject]:
        """Yield the listed objects under ``prefix``, skipping keys that sort before it."""
        while self._head is not None and self._head.key < prefix:
            self._head = next(self._items, None)
        while self._head is not None and self._head.key.startswith(prefix):
            item, self._head = self._head, next(self._items, None)
            yield item


@dataclass(frozen=True)
class _Row:
    pk: int
    state: str
    digest: str
    size: int
    sha256: str
    verified_at: datetime | None


@dataclass
class _Batch:
    """Findings waiting to be acted on together."""

    damage: list[Damage] = field(default_factory=list)
    verified: list[int] = field(default_factory=list)
    orphans: list[ListedObject] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.damage) + len(self.verified) + len(self.orphans)


def _placements(location: StorageLocation, algorithm: str) -> Iterator[_Row]:
    """Yield the location's placements of one digest algorithm in digest order, by keyset."""
    last = f"{algorithm}:"
    while True:
        rows = list(
            Placement.objects.filter(
                location=location, blob__digest__startswith=f"{algorithm}:", blob__digest__gt=last
            )
            .order_by("blob__digest")
            .values_list(
                "pk", "state", "blob__digest", "blob__size", "blob__sha256", "verified_at"
            )[:PAGE]
        )
        for row in rows:
            yield _Row(*row)
        if len(rows) < PAGE:
            return
        last = rows[-1][2]


def location_audit(
    *,
    location: StorageLocation,
    deep: bool = False,
    repair: bool = True,
    progress: Callable[[AuditRun], None] | None = None,
) -> AuditRun:
    """Audit ``location`` against its own listing; record and return the run."""
    run = AuditRun.objects.create(location=location, kind=AuditKind.AUDIT, deep=deep)
    engine = location_engine(location)
    try:
        listing = _Listing(iter(engine.list_objects("sha")))
        for algorithm in ALGORITHMS:
            _audit_prefix(run, engine, listing, algorithm, repair=repair, progress=progress)
        if repair:
            run.repaired += _repairs_unqueued(run)
    except StorageError as exc:
        run.error = str(exc)[:2000]
        logger.warning("audit of %s stopped: %s", location, exc)
    run.finished_at = timezone.now()
    run.save()
    logger.info(
        "audit of %s: %s objects, %s lost, %s corrupt, %s repairs, %s orphans (%s deleted)",
        location,
        run.objects_seen,
        run.lost,
        run.corrupt,
        run.repaired,
        run.orphans,
        run.orphans_deleted,
    )
    return run


def _audit_prefix(
    run: AuditRun,
    engine: StorageEngine,
    listed: _Listing,
    algorithm: str,
    *,
    repair: bool,
    progress: Callable[[AuditRun], None] | None,
) -> None:
    listing = listed.under(f"{algorithm}/")
    rows = _placements(run.location, algorithm)
    item, row = next(listing, None), next(rows, None)
    batch = _Batch()

    def flush(force: bool = False) -> None:
        nonlocal batch
        if force or len(batch) >= PAGE:
            _act(run, batch, repair=repair, progress=progress)
            batch = _Batch()

    while item is not None and row is not None:
        key = content_key(row.digest)
        if item.key < key:
            run.objects_seen += 1
            batch.orphans.append(item)
            item = next(listing, None)
        elif item.key > key:
            _check(run, engine, row, None, batch)
            row = next(rows, None)
        else:
            run.objects_seen += 1
            _check(run, engine, row, item, batch)
            item, row = next(listing, None), next(rows, None)
        flush()
    while item is not None:
        run.objects_seen += 1
        batch.orphans.append(item)
        item = next(listing, None)
        flush()
    while row is not None:
        _check(run, engine, row, None, batch)
        row = next(rows, None)
        flush()
    flush(force=True)


def _check(
    run: AuditRun, engine: StorageEngine, row: _Row, item: ListedObject | None, batch: _Batch
) -> None:
    """Compare one placement with what the listing says of its object."""
    if row.state != PlacementState.PRESENT:
        return  # not claimed present: its copy or repair owns the object
    if row.verified_at is not None and row.verified_at >= run.started_at:
        return  # verified since the audit started: the listing may predate it
    where = engine.location_id
    if item is None:
        reason = f"not in the listing of {where} (audit {run.pk})"
        batch.damage.append(Damage(row.pk, row.digest, PlacementState.LOST, reason))
    elif item.size != row.size:
        reason = f"{where} lists {item.size} bytes, expected {row.size} (audit {run.pk})"
        batch.damage.append(Damage(row.pk, row.digest, PlacementState.CORRUPT, reason))
    elif run.deep:
        digest = hashlib.sha256()
        try:
            with engine.read(item.key) as stream:
                for chunk in stream:
                    digest.update(chunk)
        except ObjectNotFound:
            reason = f"{where} listed it but could not read it (audit {run.pk})"
            batch.damage.append(Damage(row.pk, row.digest, PlacementState.LOST, reason))
            return
        run.bytes_read += row.size
        if digest.hexdigest() == row.sha256:
            batch.verified.append(row.pk)
        else:
            reason = f"{where} returned bytes whose SHA-256 is not the blob's (audit {run.pk})"
            batch.damage.append(Damage(row.pk, row.digest, PlacementState.CORRUPT, reason))


def _act(
    run: AuditRun,
    batch: _Batch,
    *,
    repair: bool,
    progress: Callable[[AuditRun], None] | None,
) -> None:
    """Mark a batch's damage, record its verifications, handle its orphans; save progress."""
    result = placements_damage(found=batch.damage, repair=repair)
    marked = set(result.marked)
    run.lost += sum(
        1 for d in batch.damage if d.placement_id in marked and d.state == PlacementState.LOST
    )
    run.corrupt += sum(
        1 for d in batch.damage if d.placement_id in marked and d.state == PlacementState.CORRUPT
    )
    run.repaired += len(result.repairs)
    if batch.verified:
        Placement.objects.filter(pk__in=batch.verified, state=PlacementState.PRESENT).update(
            verified_at=timezone.now()
        )
        run.verified += len(batch.verified)
    _orphans(run, batch.orphans, delete=repair)
    run.save()
    if progress is not None:
        progress(run)


def _repairs_unqueued(run: AuditRun) -> int:
    """Queue the repair of the location's lost and corrupt copies that have none (marked before
    this run, by an audit with ``repair`` False); return how many, a page per transaction."""
    queued, last = 0, 0
    while True:
        ids = list(
            Placement.objects.filter(
                location=run.location,
                state__in=DAMAGED_STATES,
                enqueued_at__isnull=True,
                lost_at__lt=run.started_at,
                pk__gt=last,
            )
            .order_by("pk")
            .values_list("pk", flat=True)[:PAGE]
        )
        if not ids:
            return queued
        with transaction.atomic():
            placements_enqueue(placement_ids=ids, batched=True)
        queued += len(ids)
        last = ids[-1]


def _orphans(run: AuditRun, orphans: list[ListedObject], *, delete: bool) -> None:
    """Count unreferenced objects; delete those older than the grace period."""
    if not orphans:
        return
    engine = location_engine(run.location)
    cutoff = timezone.now() - gc_grace()
    old = {o.key for o in orphans if delete and o.modified is not None and o.modified < cutoff}
    # Checked again just before deleting: a push may have recorded one since it was listed.
    referenced = {
        content_key(digest)
        for digest in Placement.objects.filter(
            location=run.location, blob__digest__in=[_digest_of(key) for key in old]
        ).values_list("blob__digest", flat=True)
    }
    for orphan in orphans:
        if orphan.key in referenced:
            continue  # recorded since it was listed: not an orphan
        run.orphans += 1
        if orphan.key in old:
            engine.delete(orphan.key)
            run.orphans_deleted += 1
            logger.info("audit of %s deleted orphan %s", run.location, orphan.key)
        else:
            logger.info("audit of %s found orphan %s", run.location, orphan.key)


def _digest_of(key: str) -> str:
    """Return the digest a content key stands for (``sha256/ab/abcd`` -> ``sha256:abcd``)."""
    algorithm, _, rest = key.partition("/")
    return f"{algorithm}:{rest.rpartition('/')[2]}"
