"""Panel and API actions that wrap one replication service each, with an audit entry."""

import functools
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from registry.models import Namespace
from replication import tasks
from replication.backfill import backfill_start
from replication.models import AuditEntry, BackfillRun, Placement, PlacementState
from replication.services import namespace_targets_set, placement_retry


def _actor(user: Any) -> str:
    return str(user.get_username()) if user is not None else ""


def namespace_targets_update(
    *, namespace: Namespace, location_ids: Iterable[str], user: Any
) -> list[str]:
    """Set a namespace's extra target locations, audit it and reconcile at once; return them."""
    wanted = sorted(set(location_ids))
    before = sorted(namespace.replication_targets.values_list("location__location_id", flat=True))
    with transaction.atomic():
        namespace_targets_set(namespace=namespace, location_ids=wanted, user=user)
        after = sorted(
            namespace.replication_targets.values_list("location__location_id", flat=True)
        )
        if before != after:
            AuditEntry.objects.create(
                actor=_actor(user),
                action="namespace_targets_set",
                changes={"namespace": namespace.name, "locations": [before, after]},
            )
        # The reconciler would create the placements within a minute; do it now.
        transaction.on_commit(tasks.reconcile.delay)
    return after


def backfills_launch(*, location_ids: Iterable[str | None], user: Any) -> list[BackfillRun]:
    """Start one backfill per location (None: every target) in the background; return the runs."""
    wanted = list(dict.fromkeys(location_ids))
    runs = []
    with transaction.atomic():
        for location_id in wanted:
            run = backfill_start(location_id=location_id, started_by=_actor(user))
            transaction.on_commit(functools.partial(tasks.backfill.delay, run.pk))
            runs.append(run)
        if runs:
            AuditEntry.objects.create(
                actor=_actor(user),
                action="backfill_start",
                changes={"runs": [run.pk for run in runs], "locations": wanted},
            )
    return runs


def failed_placements_retry(
    *, placement_ids: Iterable[int] | None = None, location_id: str | None = None
) -> int:
    """Retry the given failed placements, or every failed one (of one location); return how many."""
    if placement_ids is None:
        failed = Placement.objects.filter(state=PlacementState.FAILED)
        if location_id:
            failed = failed.filter(location__location_id=location_id)
        placement_ids = failed.values_list("pk", flat=True)
    return placement_retry(placement_ids=list(placement_ids))
