"""Celery tasks: thin adapters that take ids and call one idempotent service."""

import logging
from contextlib import AbstractContextManager
from typing import Any

from celery import current_app, shared_task

from .copying import BatchContext, LeaseKeeper, batch_read, blob_replicate

logger = logging.getLogger(__name__)

#: Placements a pull found missing in the instance's own location jump this short queue.
PRIORITY_QUEUE = "replicate.priority"


def queue_of(location_id: str) -> str:
    """Return the queue of replication tasks into one location (e.g. ``replicate.eu_gcs``)."""
    return f"replicate.{location_id}"


def task_producer() -> AbstractContextManager[Any]:
    """Return one broker producer for a run of sends (one connection, not one per message)."""
    return current_app.producer_or_acquire()


def replicate_blob_send(
    placement_id: int,
    location_id: str,
    *,
    priority: bool = False,
    countdown: float | None = None,
    producer: Any = None,
) -> None:
    """Send one replication task to the queue of its target location."""
    replicate_blob.apply_async(
        args=[placement_id],
        queue=PRIORITY_QUEUE if priority else queue_of(location_id),
        countdown=countdown,
        producer=producer,
    )


def replicate_batch_send(
    placement_ids: list[int], location_id: str, *, producer: Any = None
) -> None:
    """Send one task that replicates several placements into one location, one after another."""
    replicate_batch.apply_async(
        args=[placement_ids], queue=queue_of(location_id), producer=producer
    )


def _replicate_one(placement_id: int, batch: BatchContext | None = None) -> str:
    outcome = blob_replicate(placement_id=placement_id, batch=batch)
    if outcome.status == "retry" and outcome.retry_in is not None:
        from .models import Placement

        location_id = (
            Placement.objects.filter(pk=placement_id)
            .values_list("location__location_id", flat=True)
            .first()
        )
        if location_id is not None:
            replicate_blob_send(placement_id, location_id, countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="replication.replicate_blob", acks_late=True, ignore_result=True)
def replicate_blob(placement_id: int) -> str:
    """Replicate one placement; transient failures come back after a jittered backoff."""
    return _replicate_one(placement_id)


@shared_task(name="replication.replicate_batch", acks_late=True, ignore_result=True)
def replicate_batch(placement_ids: list[int]) -> dict[str, int]:
    """Replicate placements of one backfill batch in turn (one message, many copies).

    The rows, their blobs' present copies and the preference are read once for the batch; each
    placement is still claimed only when its turn comes, so a worker that dies mid-batch leaves
    the rest ``pending`` for the reconciler, and other workers are never kept waiting.
    """
    counts: dict[str, int] = {}
    with LeaseKeeper() as lease:
        batch = batch_read(placement_ids, lease)
        for placement_id in placement_ids:
            status = _replicate_one(placement_id, batch)
            counts[status] = counts.get(status, 0) + 1
    return counts


@shared_task(name="replication.reconcile", ignore_result=True)
def reconcile() -> dict[str, int]:
    """Bring placements back in line with their targets and recover lost tasks."""
    from .reconcile import placements_reconcile

    return placements_reconcile()


@shared_task(name="replication.backfill", ignore_result=True)
def backfill(run_id: int) -> int:
    """Plan and enqueue a backfill started from the panel."""
    from .backfill import backfill_execute

    return backfill_execute(run_id=run_id)


@shared_task(name="replication.collect_garbage", ignore_result=True)
def collect_garbage() -> dict[str, int]:
    """Delete unreferenced blobs and their bytes; abort abandoned uploads."""
    from .gc import garbage_collect

    return garbage_collect()


@shared_task(name="replication.audit_locations", ignore_result=True)
def audit_locations() -> int:
    """Send one audit task per location (the beat entry); return how many."""
    from .models import StorageLocation

    ids = list(StorageLocation.objects.values_list("pk", flat=True))
    for location_pk in ids:
        audit_location.delay(location_pk)
    return len(ids)


@shared_task(name="replication.audit_location", ignore_result=True)
def audit_location(location_pk: int, deep: bool = False) -> int | None:
    """Audit one location against its listing; return the audit run's id."""
    from .inventory import location_audit
    from .models import StorageLocation

    location = StorageLocation.objects.filter(pk=location_pk).first()
    if location is None:
        return None
    return location_audit(location=location, deep=deep).pk


@shared_task(name="replication.scrub_locations", ignore_result=True)
def scrub_locations() -> int:
    """Send one scrub slice per location (the beat entry); return how many."""
    from .models import StorageLocation

    ids = list(StorageLocation.objects.values_list("pk", flat=True))
    for location_pk in ids:
        scrub_location.delay(location_pk)
    return len(ids)


@shared_task(name="replication.scrub_location", ignore_result=True)
def scrub_location(location_pk: int) -> int | None:
    """Re-read one slice of a location's present copies; return the scrub run's id."""
    from .models import StorageLocation
    from .scrub import location_scrub

    location = StorageLocation.objects.filter(pk=location_pk).first()
    if location is None:
        return None
    return location_scrub(location=location).pk
