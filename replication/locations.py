"""Removing a location safely: never drop the last present copy of a blob."""

import time

from django.apps import apps
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet

from .models import Blob, NamespaceReplication, Placement, PlacementState, StorageLocation
from .selectors import preference_of_instance
from .services import config_version_bump, placements_enqueue


class LocationInUse(Exception):
    """The location holds the only present copy of some blobs."""


def _location(location_id: str) -> StorageLocation:
    location = StorageLocation.objects.filter(location_id=location_id).first()
    if location is None:
        raise LookupError(f"no storage location {location_id!r}")
    return location


def blobs_only_at(location: StorageLocation) -> QuerySet[Blob]:
    """Return the blobs whose only present placement is at ``location``."""
    elsewhere = Placement.objects.filter(blob=OuterRef("pk"), state=PlacementState.PRESENT).exclude(
        location=location
    )
    return Blob.objects.filter(
        placements__location=location, placements__state=PlacementState.PRESENT
    ).filter(~Exists(elsewhere))


def sole_copies_count(*, location_id: str) -> int:
    """Return how many blobs would be lost with this location."""
    return blobs_only_at(_location(location_id)).count()


def location_remove(*, location_id: str) -> int:
    """Remove a location with its placements, namespace targets and uploads; return the count."""
    location = _location(location_id)
    with transaction.atomic():
        StorageLocation.objects.select_for_update().get(pk=location.pk)
        sole = blobs_only_at(location).count()
        if sole:
            raise LocationInUse(
                f"{location_id} holds the only copy of {sole} blob(s); run "
                f"`manage.py removelocation {location_id} --replicate-first` to copy them "
                "elsewhere first"
            )
        dropped, _ = Placement.objects.filter(location=location).delete()
        NamespaceReplication.objects.filter(location=location).delete()
        apps.get_model("registry", "BlobUpload").objects.filter(location=location).delete()
        location.delete()
        config_version_bump(targets_changed=True)
    return dropped


def location_replicate_sole_copies(*, location_id: str, timeout: float) -> int:
    """Copy blobs whose only copy is at the location to the best other location; wait for them."""
    location = _location(location_id)
    others = [
        loc for loc in preference_of_instance() if loc.pk != location.pk and loc.kind != "local"
    ]
    if not others:
        raise LocationInUse(f"there is no other location to copy the blobs of {location_id} to")
    destination = next((loc for loc in others if loc.replicate_by_default), others[0])
    blob_ids = list(blobs_only_at(location).values_list("pk", flat=True))
    with transaction.atomic():
        Placement.objects.bulk_create(
            [Placement(blob_id=b, location=destination) for b in blob_ids], ignore_conflicts=True
        )
        Placement.objects.filter(
            blob_id__in=blob_ids, location=destination, state=PlacementState.FAILED
        ).update(state=PlacementState.PENDING, error_permanent=False, given_up_at=None, attempts=0)
        pending = Placement.objects.filter(
            blob_id__in=blob_ids, location=destination, state=PlacementState.PENDING
        ).values_list("pk", flat=True)
        placements_enqueue(placement_ids=list(pending))
    deadline = time.monotonic() + timeout
    while blobs_only_at(location).exists():
        if time.monotonic() > deadline:
            left = blobs_only_at(location).count()
            raise LocationInUse(f"{left} blob(s) still have their only copy at {location_id}")
        time.sleep(1)
    return len(blob_ids)
