"""The scrub: present copies re-read and hashed, least recently verified first, on a budget.

Every ``QUAY_GEO_SCRUB_SECONDS`` each location reads its share of
``QUAY_GEO_SCRUB_BYTES_PER_DAY``. A slice stops once it has read its share; what the last copy
read went over is taken from the next slice, so a day stays within one copy of the budget.
A copy whose bytes hash to the blob's SHA-256 is verified now; one that does not (or is
missing) is marked corrupt (or lost) and repaired.
"""

import hashlib
import logging

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from storage_engines.base import StorageEngine
from storage_engines.errors import ObjectNotFound, StorageError
from storage_engines.keys import content_key

from .models import AuditKind, AuditRun, Placement, PlacementState, StorageLocation
from .repair import Damage, placements_damage
from .selectors import location_engine

logger = logging.getLogger(__name__)

#: Copies read per query.
PAGE = 100


def slice_budget(location: StorageLocation) -> int:
    """Return the bytes this slice may read: the day's share minus the last slice's excess."""
    per_day = int(getattr(settings, "QUAY_GEO_SCRUB_BYTES_PER_DAY", 10 * 1024**3))
    period = float(getattr(settings, "QUAY_GEO_SCRUB_SECONDS", 3600.0))
    share = int(per_day * min(period, 86400.0) / 86400.0)
    last = AuditRun.objects.filter(location=location, kind=AuditKind.SCRUB).order_by("-pk").first()
    excess = max(0, last.bytes_read - share) if last is not None else 0
    return max(0, share - excess)


def location_scrub(*, location: StorageLocation, budget: int | None = None) -> AuditRun:
    """Re-read present copies of ``location`` within ``budget`` bytes; record and return the run."""
    budget = slice_budget(location) if budget is None else budget
    run = AuditRun.objects.create(location=location, kind=AuditKind.SCRUB)
    engine = location_engine(location)
    try:
        while run.bytes_read < budget:
            rows = list(
                Placement.objects.filter(
                    location=location, state=PlacementState.PRESENT, verified_at__lt=run.started_at
                )
                .order_by(F("verified_at").asc(nulls_first=True), "pk")
                .values_list("pk", "blob__digest", "blob__size", "blob__sha256")[:PAGE]
            )
            if not rows:
                break
            for pk, digest, size, sha256 in rows:
                if run.bytes_read >= budget:
                    break
                _scrub_one(run, engine, pk, digest, size, sha256)
            run.save()
    except StorageError as exc:
        run.error = str(exc)[:2000]
        logger.warning("scrub of %s stopped: %s", location, exc)
    run.finished_at = timezone.now()
    run.save()
    return run


def _scrub_one(
    run: AuditRun, engine: StorageEngine, pk: int, digest: str, size: int, sha256: str
) -> None:
    """Read one copy whole and compare its SHA-256 with the blob's."""
    hashed, read = hashlib.sha256(), 0
    try:
        with engine.read(content_key(digest)) as stream:
            for chunk in stream:
                hashed.update(chunk)
                read += len(chunk)
    except ObjectNotFound:
        found = [Damage(pk, digest, PlacementState.LOST, f"not found by the scrub ({run.pk})")]
    else:
        if read == size and hashed.hexdigest() == sha256:
            Placement.objects.filter(pk=pk, state=PlacementState.PRESENT).update(
                verified_at=timezone.now()
            )
            run.verified += 1
            found = []
        else:
            reason = f"the scrub ({run.pk}) read {read} bytes whose SHA-256 is not the blob's"
            found = [Damage(pk, digest, PlacementState.CORRUPT, reason)]
    run.objects_seen += 1
    run.bytes_read += read
    result = placements_damage(found=found)
    for damage in found:
        if damage.placement_id in result.marked and damage.state == PlacementState.LOST:
            run.lost += 1
        elif damage.placement_id in result.marked:
            run.corrupt += 1
    run.repaired += len(result.repairs)
