"""Writes about where bytes live: locations, blob commits, placements."""

from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from storage_engines.options import options_clean
from storage_engines.registry import engine_class

from .models import Blob, Placement, PlacementState, ReplicationSettings, StorageLocation


def config_version_bump(*, user: Any = None) -> int:
    """Increment the configuration version so every instance reloads it; return the new one."""
    ReplicationSettings.load()
    ReplicationSettings.objects.filter(pk=1).update(
        config_version=F("config_version") + 1, updated_at=timezone.now(), updated_by=user
    )
    return ReplicationSettings.load().config_version


def location_create(
    *,
    location_id: str,
    kind: str,
    options: dict[str, Any],
    replicate_by_default: bool = False,
    rank: int | None = None,
    serve_mode: str = "redirect",
) -> StorageLocation:
    """Validate the engine options and store a new location."""
    cleaned = options_clean(engine_class(kind).options_form, options)
    location = StorageLocation(
        location_id=location_id,
        kind=kind,
        replicate_by_default=replicate_by_default,
        serve_mode=serve_mode,
        rank=rank if rank is not None else StorageLocation.objects.count(),
    )
    location.set_engine_options({k: v for k, v in cleaned.items() if v not in (None, "")})
    location.full_clean()
    with transaction.atomic():
        location.save()
        config_version_bump()
    return location


def replication_enable(*, enabled: bool, user: Any = None) -> None:
    """Turn storage replication on or off."""
    with transaction.atomic():
        ReplicationSettings.load()
        ReplicationSettings.objects.filter(pk=1).update(storage_replication_enabled=enabled)
        config_version_bump(user=user)


def blob_commit(*, digest: str, size: int, sha256: str, location: StorageLocation) -> Blob:
    """Record that ``location`` holds verified bytes of a blob; return the blob."""
    with transaction.atomic():
        blob, _ = Blob.objects.get_or_create(digest=digest, defaults={"size": size, "sha256": sha256})
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
    return blob
