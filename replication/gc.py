"""Garbage collection: rows first (a GET answers 404 at once), bytes after, retried until done."""

import logging
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from storage_engines.errors import StorageError
from storage_engines.keys import content_key

from .models import Blob, Placement, StorageLocation, Tombstone
from .selectors import blob_facts_forget, location_engine

logger = logging.getLogger(__name__)


def _grace() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "QUAY_GEO_GC_GRACE_SECONDS", 24 * 3600)))


def _upload_expiry() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "QUAY_GEO_UPLOAD_EXPIRY_SECONDS", 24 * 3600)))


def blobs_unreferenced_delete(*, batch_size: int = 1000) -> int:
    """Delete rows of blobs no manifest references, older than the grace period; tombstone bytes."""
    manifest_blob = apps.get_model("registry", "ManifestBlob")
    repository_blob = apps.get_model("registry", "RepositoryBlob")
    cutoff = timezone.now() - _grace()
    deleted = 0
    while True:
        with transaction.atomic():
            blobs = list(
                Blob.objects.select_for_update(skip_locked=True)
                .filter(created_at__lt=cutoff)
                .filter(~Exists(manifest_blob.objects.filter(blob=OuterRef("pk"))))
                .order_by("pk")[:batch_size]
            )
            if not blobs:
                return deleted
            tombstones = [
                Tombstone(location_id=location_id, key=content_key(digest))
                for location_id, digest in Placement.objects.filter(blob__in=blobs).values_list(
                    "location_id", "blob__digest"
                )
            ]
            Tombstone.objects.bulk_create(tombstones, ignore_conflicts=True)
            repository_blob.objects.filter(blob__in=blobs).delete()
            Blob.objects.filter(pk__in=[b.pk for b in blobs]).delete()
            deleted += len(blobs)
        # The shared region cache forgets them now; other processes' own caches within their
        # lifetime (QUAY_GEO_CACHE_SECONDS), after which the rows' absence answers 404.
        blob_facts_forget([blob.digest for blob in blobs])


def tombstones_process(*, limit: int = 5000) -> tuple[int, int]:
    """Delete tombstoned bytes; return (done, still failing). Failures retry with backoff."""
    now = timezone.now()
    done = failing = 0
    locations = {loc.pk: loc for loc in StorageLocation.objects.all()}
    due = Tombstone.objects.exclude(next_attempt_at__gt=now).order_by("pk")[:limit]
    for tombstone in due:
        location = locations.get(tombstone.location_id)
        if location is None:
            continue
        if Blob.objects.filter(
            placements__location=location, digest=_digest_of(tombstone.key)
        ).exists():
            tombstone.delete()  # the blob was pushed again meanwhile: keep its bytes
            continue
        try:
            location_engine(location).delete(tombstone.key)
        except StorageError as exc:
            tombstone.attempts += 1
            tombstone.last_error = str(exc)[:2000]
            delay = min(3600, 30 * 2 ** min(tombstone.attempts, 7))
            tombstone.next_attempt_at = now + timedelta(seconds=delay)
            tombstone.save(update_fields=["attempts", "last_error", "next_attempt_at"])
            failing += 1
            continue
        tombstone.delete()
        done += 1
    return done, failing


def _digest_of(key: str) -> str:
    algorithm, _, rest = key.partition("/")
    return f"{algorithm}:{rest.rsplit('/', 1)[-1]}"


def uploads_abandoned_abort() -> int:
    """Abort upload sessions untouched for a day, in their engines, and drop their rows."""
    blob_upload = apps.get_model("registry", "BlobUpload")
    cutoff = timezone.now() - _upload_expiry()
    aborted = 0
    for upload in blob_upload.objects.filter(updated_at__lt=cutoff).select_related("location"):
        try:
            location_engine(upload.location).upload_abort(upload.engine_state)
        except StorageError as exc:
            logger.warning("could not abort upload %s in %s: %s", upload.uuid, upload.location, exc)
            continue
        upload.delete()
        aborted += 1
    return aborted


def garbage_collect() -> dict[str, int]:
    """Run every garbage-collection step once."""
    blobs = blobs_unreferenced_delete()
    done, failing = tombstones_process()
    uploads = uploads_abandoned_abort()
    result = {"blobs": blobs, "bytes_deleted": done, "bytes_failing": failing, "uploads": uploads}
    if any(result.values()):
        logger.info("garbage collection: %s", result)
    return result
