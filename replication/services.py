"""Writes about where bytes live: locations, blob commits, placements and their tasks."""

import logging
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .models import (
    Blob,
    NamespaceReplication,
    Placement,
    PlacementState,
    ReplicationSettings,
    StorageLocation,
)
from .selectors import config_recheck
from .targets import LOCAL_REFUSED, targets_of_blobs

logger = logging.getLogger(__name__)


def config_version_bump(*, user: Any = None, targets_changed: bool = False) -> int:
    """Increment the configuration version so every instance reloads it; return the new one."""
    ReplicationSettings.load()
    changes: dict[str, Any] = {
        "config_version": F("config_version") + 1,
        "updated_at": timezone.now(),
        "updated_by": user,
    }
    if targets_changed:
        changes["targets_version"] = F("targets_version") + 1
    ReplicationSettings.objects.filter(pk=1).update(**changes)
    config_recheck()
    return ReplicationSettings.load().config_version


def location_create(
    *,
    location_id: str,
    kind: str,
    options: dict[str, Any],
    replicate_by_default: bool = False,
    rank: int | None = None,
    serve_mode: str = "redirect",
    probe: bool = False,
    actor: str = "location_create",
) -> StorageLocation:
    """Add a location through the one validated save; raise ValidationError if it is refused.

    Unprobed unless ``probe``: the programmatic path of tests and fixtures. ``addlocation``,
    the panel and the API probe before anything is stored.
    """
    from .config import LocationSpec, location_add, save_result_messages

    spec = LocationSpec(
        location_id=location_id,
        kind=kind,
        options=options,
        replicate_by_default=replicate_by_default,
        serve_mode=serve_mode,
    )
    ids = list(StorageLocation.objects.values_list("location_id", flat=True))
    result = location_add(spec=spec, actor=actor, rank=rank, probe=probe)
    if not result.ok:
        ids.insert(len(ids) if rank is None else rank, location_id)
        raise ValidationError(save_result_messages(result, ids))
    return StorageLocation.objects.get(location_id=location_id)


def replication_enable(*, enabled: bool, user: Any = None) -> None:
    """Turn storage replication on or off; refused while a local location exists."""
    if enabled and StorageLocation.objects.filter(kind="local").exists():
        raise ValidationError(LOCAL_REFUSED)
    with transaction.atomic():
        ReplicationSettings.load()
        ReplicationSettings.objects.filter(pk=1).update(storage_replication_enabled=enabled)
        config_version_bump(user=user, targets_changed=True)


def namespace_targets_set(*, namespace: Any, location_ids: Iterable[str], user: Any = None) -> None:
    """Make ``location_ids`` the extra target locations of a namespace."""
    wanted = list(StorageLocation.objects.filter(location_id__in=list(location_ids)))
    local = [loc.location_id for loc in wanted if loc.kind == "local"]
    if local:
        raise ValidationError(LOCAL_REFUSED)
    with transaction.atomic():
        NamespaceReplication.objects.filter(namespace=namespace).exclude(
            location__in=wanted
        ).delete()
        for location in wanted:
            NamespaceReplication.objects.get_or_create(namespace=namespace, location=location)
        config_version_bump(user=user, targets_changed=True)


def blob_commit(*, digest: str, size: int, sha256: str, location: StorageLocation) -> Blob:
    """Record that ``location`` holds verified bytes of a blob, then plan its replication."""
    with transaction.atomic():
        blob, _ = Blob.objects.get_or_create(
            digest=digest, defaults={"size": size, "sha256": sha256}
        )
        if blob.unrecoverable_at is not None:
            Blob.objects.filter(pk=blob.pk).update(unrecoverable_at=None)
            Placement.objects.filter(
                blob=blob, state=PlacementState.FAILED, lost_at__isnull=False
            ).update(
                state=PlacementState.PENDING,
                attempts=0,
                error_permanent=False,
                given_up_at=None,
                enqueued_at=None,
            )
        Placement.objects.update_or_create(
            blob=blob,
            location=location,
            defaults={
                "state": PlacementState.PRESENT,
                "verified_at": timezone.now(),
                "last_error": "",
                "error_permanent": False,
                "lease_expires_at": None,
                "next_attempt_at": None,
            },
        )
        placements_ensure(blob_ids=[blob.pk])
    return blob


def placements_ensure(*, blob_ids: Iterable[int], priority: bool = False) -> list[int]:
    """Create the missing ``pending`` placements of these blobs and enqueue them on commit."""
    targets = targets_of_blobs(blob_ids)
    if not targets:
        return []
    existing = set(
        Placement.objects.filter(blob_id__in=list(targets)).values_list("blob_id", "location_id")
    )
    new = [
        Placement(blob_id=blob_id, location_id=location_id, state=PlacementState.PENDING)
        for blob_id, location_ids in targets.items()
        for location_id in location_ids
        if (blob_id, location_id) not in existing
    ]
    Placement.objects.bulk_create(new, ignore_conflicts=True)
    created = list(
        Placement.objects.filter(
            blob_id__in=list(targets), state=PlacementState.PENDING, enqueued_at__isnull=True
        ).values_list("pk", flat=True)
    )
    placements_enqueue(placement_ids=created, priority=priority)
    return created


#: Placements per message when tasks are sent in batches and their sizes are unknown (the
#: reconciler's catch-up): one broker round trip per placement bounded the planning of a million
#: blobs to about 1,100 per second.
BATCH_SIZE = 50
#: With known sizes (a backfill), a message carries up to this many placements or this many
#: bytes, whichever comes first: few messages for many small blobs, while the copying of a few
#: hundred MiB still spreads over several worker threads (a message is copied by one thread,
#: one placement after another) and a message never takes long enough to be redelivered.
BATCH_SIZE_SIZED = 200
BATCH_BYTES = 256 << 20
#: A set of placements sent together is cut into at least this many messages (when it has that
#: many placements), so that its copies spread over as many worker threads: in batches of 64,
#: the 202 copies of bench case 2 kept 4 processes unevenly busy.
BATCH_SPREAD = 16


def placements_enqueue(
    *, placement_ids: Iterable[int], priority: bool = False, batched: bool = False
) -> None:
    """Hand replication tasks to the broker once the transaction commits.

    One task per placement, or with ``batched`` one task per ``BATCH_SIZE`` placements of the
    same location (backfills, where the number of messages is what costs).
    """
    ids = list(placement_ids)
    if not ids:
        return

    def send() -> None:
        routes = dict(
            Placement.objects.filter(pk__in=ids).values_list("pk", "location__location_id")
        )
        # Marked before sending: the update must not hold the row while a worker claims it.
        Placement.objects.filter(pk__in=list(routes)).update(enqueued_at=timezone.now())
        by_location: dict[str, list[int]] = {}
        for placement_id, location_id in routes.items():
            by_location.setdefault(location_id, []).append(placement_id)
        for location_id, members in by_location.items():
            _tasks_send(members, location_id, priority=priority, batched=batched)

    transaction.on_commit(send, robust=True)


def placements_enqueue_marked(*, sizes: dict[int, int], location_id: str) -> None:
    """Send batched tasks on commit for placements of one location already marked enqueued.

    ``sizes`` maps each placement id to its blob's size. The backfill's path: its INSERT sets
    ``enqueued_at`` and returns the ids, so nothing is read back or updated per page.
    """
    if sizes:
        ids = sorted(sizes)
        transaction.on_commit(
            lambda: _tasks_send(ids, location_id, priority=False, batched=True, sizes=sizes),
            robust=True,
        )


def _batches(ids: list[int], sizes: dict[int, int] | None) -> list[list[int]]:
    """Cut ``ids`` into the placement lists of batch messages (see ``BATCH_SIZE_SIZED``), the
    heaviest in bytes first (stable among equals).

    Longest first is the classic way to finish a set of jobs early on a few workers: a big blob
    copied last keeps one process busy after the rest are done (bench case 2: the second
    256 MiB blob of 202 started at 4.5 s of 7.7 s when messages went out in blob order).
    """
    most = BATCH_SIZE if sizes is None else BATCH_SIZE_SIZED
    most = max(1, min(most, -(-len(ids) // BATCH_SPREAD)))
    weighed: list[tuple[int, list[int]]] = []
    chunk: list[int] = []
    weight = 0
    for placement_id in ids:
        chunk.append(placement_id)
        weight += sizes.get(placement_id, 0) if sizes else 0
        if len(chunk) >= most or weight >= BATCH_BYTES:
            weighed.append((weight, chunk))
            chunk, weight = [], 0
    if chunk:
        weighed.append((weight, chunk))
    weighed.sort(key=lambda item: -item[0])
    return [chunk for _, chunk in weighed]


def _tasks_send(
    ids: list[int],
    location_id: str,
    *,
    priority: bool,
    batched: bool,
    sizes: dict[int, int] | None = None,
) -> None:
    """Send the tasks of placements of one location; unmark what could not be sent."""
    from .tasks import replicate_batch_send, replicate_blob_send, task_producer

    sent: set[int] = set()
    try:
        with task_producer() as producer:
            if batched:
                for chunk in _batches(ids, sizes):
                    replicate_batch_send(chunk, location_id, producer=producer)
                    sent.update(chunk)
            else:
                for placement_id in ids:
                    replicate_blob_send(
                        placement_id, location_id, priority=priority, producer=producer
                    )
                    sent.add(placement_id)
    except Exception:
        # A broker outage must not fail the push: the reconciler sends these later.
        unsent = [placement_id for placement_id in ids if placement_id not in sent]
        logger.exception(
            "broker unavailable: %s replication task(s) left for the reconciler", len(unsent)
        )
        Placement.objects.filter(pk__in=unsent).update(enqueued_at=None)


def tasks_send(ids: list[int], location_id: str) -> None:
    """Send one replication task per placement of one location now (a background sender's)."""
    _tasks_send(ids, location_id, priority=False, batched=False)


def placement_retry(*, placement_ids: Iterable[int]) -> int:
    """Send failed placements back to ``pending`` and enqueue them; return how many."""
    ids = list(
        Placement.objects.filter(
            pk__in=list(placement_ids), state=PlacementState.FAILED
        ).values_list("pk", flat=True)
    )
    with transaction.atomic():
        Placement.objects.filter(pk__in=ids).update(
            state=PlacementState.PENDING,
            attempts=0,
            error_permanent=False,
            given_up_at=None,
            next_attempt_at=None,
            enqueued_at=None,
        )
        placements_enqueue(placement_ids=ids)
    return len(ids)


def placements_rearm(*, location_ids: Iterable[str]) -> int:
    """Send the placements that gave up on these locations back to ``pending``; return how many.

    Called when a location's probe succeeds after a failed one: the store that made them give
    up answers again, so each gets a fresh budget of attempts, once per such recovery.
    """
    wanted = list(location_ids)
    if not wanted:
        return 0
    with transaction.atomic():
        ids = list(
            Placement.objects.select_for_update(skip_locked=True)
            .filter(
                location__location_id__in=wanted,
                state=PlacementState.FAILED,
                given_up_at__isnull=False,
            )
            .values_list("pk", flat=True)
        )
        Placement.objects.filter(pk__in=ids).update(
            state=PlacementState.PENDING,
            attempts=0,
            error_permanent=False,
            given_up_at=None,
            next_attempt_at=None,
            enqueued_at=None,
        )
        placements_enqueue(placement_ids=ids, batched=len(ids) > 100)
    if ids:
        logger.info("%s placement(s) that gave up on %s re-armed", len(ids), ", ".join(wanted))
    return len(ids)


def placement_prioritize(*, blob: Blob, location: StorageLocation) -> bool:
    """Put the copy of a blob into ``location`` at the front of the queue; True if one was sent.

    Called when a pull found the instance's own location without the blob. Only a location the
    blob targets gets a copy; the claim in the task keeps a duplicate message harmless.
    """
    targets = targets_of_blobs([blob.pk]).get(blob.pk, set())
    if location.pk not in targets:
        return False
    placement, _ = Placement.objects.get_or_create(blob=blob, location=location)
    if placement.state == PlacementState.PRESENT:
        return False
    if placement.state == PlacementState.FAILED and placement.error_permanent:
        return False
    placements_enqueue(placement_ids=[placement.pk], priority=True)
    return True
