"""The reconciler: a lost broker message or a dead worker never means a lost replica."""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .backfill import backfill_plan
from .models import DAMAGED_STATES, Placement, PlacementState, ReplicationSettings
from .services import placements_enqueue

logger = logging.getLogger(__name__)


def _lost_after() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "QUAY_GEO_RECONCILE_LOST_AFTER", 300)))


def placements_reconcile() -> dict[str, int]:
    """Expire stale leases, re-enqueue lost or due work, and plan placements for new targets."""
    now = timezone.now()
    counts = {"expired": 0, "lost": 0, "retried": 0, "planned": 0}
    with transaction.atomic():
        expired = list(
            Placement.objects.select_for_update(skip_locked=True)
            .filter(state=PlacementState.COPYING, lease_expires_at__lt=now)
            .values_list("pk", flat=True)
        )
        Placement.objects.filter(pk__in=expired).update(
            state=PlacementState.PENDING, lease_expires_at=None, enqueued_at=None
        )
        counts["expired"] = len(expired)

        lost = list(
            Placement.objects.filter(state=PlacementState.PENDING)
            .exclude(enqueued_at__gt=now - _lost_after())
            .values_list("pk", flat=True)
        )
        counts["lost"] = len(lost) - len(expired)

        # Repairs whose message was lost (an audit run with --no-repair queued none: not these).
        repairs = list(
            Placement.objects.filter(state__in=DAMAGED_STATES, enqueued_at__isnull=False)
            .exclude(enqueued_at__gt=now - _lost_after())
            .values_list("pk", flat=True)
        )
        lost += repairs

        due = list(
            Placement.objects.select_for_update(skip_locked=True)
            .filter(state=PlacementState.FAILED, error_permanent=False, next_attempt_at__lte=now)
            .values_list("pk", flat=True)
        )
        Placement.objects.filter(pk__in=due).update(state=PlacementState.PENDING)
        counts["retried"] = len(due)
        placements_enqueue(placement_ids=lost + due, batched=len(lost) + len(due) > 100)

    row = ReplicationSettings.load()
    if row.storage_replication_enabled and row.reconciled_targets_version != row.targets_version:
        version = row.targets_version
        counts["planned"] = backfill_plan(dry_run=False).total
        ReplicationSettings.objects.filter(pk=1).update(reconciled_targets_version=version)
    if any(counts.values()):
        logger.info("reconcile: %s", counts)
    return counts
