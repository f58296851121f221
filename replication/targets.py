"""Which locations each blob must reach, computed set-wise."""

from collections import defaultdict
from collections.abc import Iterable

from django.apps import apps
from django.db.models import Exists, OuterRef, QuerySet

from .models import Blob, NamespaceReplication, Placement, ReplicationSettings, StorageLocation

LOCAL_REFUSED = (
    "Replication to a locally mounted directory is unsupported as it is only accessible on a "
    "single machine."
)


def targets_of_blobs(blob_ids: Iterable[int]) -> dict[int, set[int]]:
    """Return, per blob id, the primary keys of the locations it must reach."""
    blob_ids = list(blob_ids)
    if not blob_ids or not ReplicationSettings.load().storage_replication_enabled:
        return {}
    defaults = set(
        StorageLocation.objects.filter(replicate_by_default=True)
        .exclude(kind="local")
        .values_list("pk", flat=True)
    )
    targets: dict[int, set[int]] = defaultdict(set)
    for blob_id in blob_ids:
        targets[blob_id] = set(defaults)
    manifest_blob = apps.get_model("registry", "ManifestBlob")
    namespace_targets: dict[int, set[int]] = defaultdict(set)
    for namespace_id, location_id in NamespaceReplication.objects.exclude(
        location__kind="local"
    ).values_list("namespace_id", "location_id"):
        namespace_targets[namespace_id].add(location_id)
    if namespace_targets:
        rows = (
            manifest_blob.objects.filter(
                blob_id__in=blob_ids, manifest__repository__namespace_id__in=list(namespace_targets)
            )
            .values_list("blob_id", "manifest__repository__namespace_id")
            .distinct()
        )
        for blob_id, namespace_id in rows:
            targets[blob_id] |= namespace_targets[namespace_id]
    return dict(targets)


def blobs_missing_at(location: StorageLocation, *, namespace: str | None = None) -> QuerySet[Blob]:
    """Return the blobs that target ``location`` and have no placement there (unordered)."""
    missing = Blob.objects.filter(
        ~Exists(Placement.objects.filter(blob=OuterRef("pk"), location=location))
    )
    manifest_blob = apps.get_model("registry", "ManifestBlob")
    if namespace is not None:
        missing = missing.filter(
            Exists(
                manifest_blob.objects.filter(
                    blob=OuterRef("pk"), manifest__repository__namespace__name=namespace
                )
            )
        )
    if location.replicate_by_default:
        return missing
    namespace_ids = NamespaceReplication.objects.filter(location=location).values("namespace_id")
    return missing.filter(
        Exists(
            manifest_blob.objects.filter(
                blob=OuterRef("pk"), manifest__repository__namespace_id__in=namespace_ids
            )
        )
    )


def target_locations() -> list[StorageLocation]:
    """Return the locations that are a target of some blob (defaults and namespace targets)."""
    if not ReplicationSettings.load().storage_replication_enabled:
        return []
    with_namespace = NamespaceReplication.objects.values("location_id")
    return list(
        StorageLocation.objects.exclude(kind="local").filter(replicate_by_default=True)
        | StorageLocation.objects.exclude(kind="local").filter(pk__in=with_namespace)
    )
