"""Copies found lost or corrupt: mark them so, queue their repair, and say when none is left.

A placement says ``present`` only while its bytes are there and right (docs/architecture.md,
"Geography"). Whoever finds otherwise (a pull, an audit, a scrub) calls ``placements_damage``:
the copy leaves ``present`` with the reason and the time, the cached facts of the blob are
dropped in this process, and the normal replication task copies it again from a verified copy
(``replication.copying.placement_claim`` takes lost and corrupt placements). A blob with no
present copy left is marked unrecoverable, loudly: pulls then answer ``BLOB_UNKNOWN``.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from .models import Blob, Placement, PlacementState, StorageLocation
from .selectors import blob_facts_forget
from .services import placements_enqueue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Damage:
    """What was found wrong with one present copy."""

    placement_id: int
    digest: str
    state: str  # PlacementState.LOST or PlacementState.CORRUPT
    reason: str


@dataclass(frozen=True)
class DamageResult:
    """What ``placements_damage`` changed."""

    marked: list[int]  # placements that left "present" now
    repairs: list[int]  # placements whose repair was queued
    unrecoverable: list[str]  # digests with no present copy left


def placements_damage(*, found: Iterable[Damage], repair: bool = True) -> DamageResult:
    """Mark present copies lost or corrupt, queue their repair; return what changed.

    Only a copy still ``present`` changes (two finders of the same loss mark it once). A few
    statements per call whatever the number of copies (an audit calls it once per page).
    """
    found = list(found)
    if not found:
        return DamageResult([], [], [])
    now = timezone.now()
    with transaction.atomic():
        present = set(
            Placement.objects.select_for_update()
            .filter(pk__in=[d.placement_id for d in found], state=PlacementState.PRESENT)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        changed = [damage for damage in found if damage.placement_id in present]
        marked = [damage.placement_id for damage in changed]
        if changed:
            Placement.objects.filter(pk__in=marked).update(
                state=Case(*(When(pk=d.placement_id, then=Value(d.state)) for d in changed)),
                lost_reason=Case(
                    *(When(pk=d.placement_id, then=Value(d.reason[:2000])) for d in changed)
                ),
                lost_at=now,
                attempts=0,
                last_error="",
                error_permanent=False,
                given_up_at=None,
                enqueued_at=None,
                next_attempt_at=None,
                updated_at=now,
            )
        for damage in changed:
            logger.warning(
                "copy %s of %s is %s: %s",
                damage.placement_id,
                damage.digest,
                damage.state,
                damage.reason,
            )
        unrecoverable = _unrecoverable_mark(marked, now)
        repairs = (
            []
            if not repair
            else list(
                Placement.objects.filter(pk__in=marked)
                .exclude(blob__digest__in=unrecoverable)
                .values_list("pk", flat=True)
            )
        )
        placements_enqueue(placement_ids=repairs, priority=True)
    blob_facts_forget(sorted({d.digest for d in found}))
    return DamageResult(marked, repairs, unrecoverable)


def placement_damage_at(
    *, blob: Blob, location: StorageLocation, state: str, reason: str
) -> DamageResult:
    """Mark the present copy of ``blob`` in ``location`` lost or corrupt (the pull path's call:
    its placements may come from the region cache, without ids) and queue its repair."""
    placement_id = (
        Placement.objects.filter(blob_id=blob.pk, location_id=location.pk)
        .values_list("pk", flat=True)
        .first()
    )
    if placement_id is None:
        blob_facts_forget([blob.digest])
        return DamageResult([], [], [])
    return placements_damage(found=[Damage(placement_id, blob.digest, state, reason)])


def _unrecoverable_mark(placement_ids: list[int], now: datetime) -> list[str]:
    """Mark the blobs of these placements that have no present copy left; return their digests."""
    if not placement_ids:
        return []
    blobs = Blob.objects.filter(placements__pk__in=placement_ids).exclude(
        placements__state=PlacementState.PRESENT
    )
    digests = sorted(set(blobs.values_list("digest", flat=True)))
    Blob.objects.filter(digest__in=digests, unrecoverable_at__isnull=True).update(
        unrecoverable_at=now
    )
    for digest in digests:
        logger.error(
            "blob %s is unrecoverable: no location holds a good copy; pulls answer BLOB_UNKNOWN "
            "until it is pushed again",
            digest,
        )
    return digests


def placement_verified(*, placement_id: int) -> None:
    """Record that a present copy's bytes were read and found right just now."""
    Placement.objects.filter(pk=placement_id, state=PlacementState.PRESENT).update(
        verified_at=timezone.now()
    )
