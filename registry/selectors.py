"""Reads of the registry: repositories, blobs linked to them, manifests, tags, referrers."""

from typing import Any

from django.db import connection
from django.db.models import CharField, Exists, F, OuterRef, QuerySet, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Collate, Concat

from replication.models import Blob, Placement, PlacementState

from . import errors
from .models import BlobUpload, Manifest, Repository, RepositoryBlob, Tag
from .names import is_digest_reference, tag_valid

#: Page size of tags and catalog listings when the client asks for more (or for no limit).
LIST_PAGE_MAX = 1000


def repository_find(*, name: str) -> Repository | None:
    """Return the repository of a full name (``<namespace>/<rest>``), None if there is none."""
    namespace, _, rest = name.partition("/")
    return (
        Repository.objects.select_related("namespace")
        .filter(namespace__name=namespace, name=rest)
        .first()
    )


def repository_get(*, name: str) -> Repository:
    """Return the repository of a full name; raise NameUnknown if there is none."""
    repository = repository_find(name=name)
    if repository is None:
        raise errors.NameUnknown({"name": name}, message=f"repository {name} not known")
    return repository


def upload_get(*, repository: Repository, uuid: str) -> BlobUpload:
    """Return an upload session of this repository; raise BlobUploadUnknown if there is none."""
    upload = (
        BlobUpload.objects.select_related("location", "repository__namespace")
        .filter(repository=repository, uuid=uuid)
        .first()
    )
    if upload is None:
        raise errors.BlobUploadUnknown({"uuid": uuid[:100]})
    return upload


def blob_linked(*, repository: Repository, digest: str) -> Blob | None:
    """Return the blob of a digest if it is linked to the repository."""
    link = (
        RepositoryBlob.objects.select_related("blob")
        .filter(repository=repository, blob__digest=digest)
        .first()
    )
    return link.blob if link is not None else None


def _in_repository(name: str) -> dict[str, str]:
    """Return filter arguments that reach a repository's rows by its full name, through joins."""
    namespace, _, rest = name.partition("/")
    return {"repository__namespace__name": namespace, "repository__name": rest}


def blob_for_pull(*, name: str, digest: str) -> tuple[Blob, list[Placement]]:
    """Return a blob linked to the repository and its present placements; raise if none.

    One query when the blob is there (the metadata path: every ``HEAD`` of a pull), which also
    brings the placements (with their locations) the bytes are read from; a miss costs a second
    one to tell an unknown repository (NameUnknown) from an unknown blob (BlobUnknown).
    """
    linked = RepositoryBlob.objects.filter(**_in_repository(name), blob=OuterRef("blob"))
    placements = list(
        Placement.objects.select_related("blob", "location")
        .filter(blob__digest=digest, state=PlacementState.PRESENT)
        .filter(Exists(linked))
    )
    if not placements:
        repository_get(name=name)
        raise errors.BlobUnknown({"digest": digest})
    return placements[0].blob, placements


def blob_present_at(*, digest: str, location_id: int) -> bool:
    """Return whether a location holds verified bytes of a digest."""
    return Placement.objects.filter(
        blob__digest=digest, location_id=location_id, state=PlacementState.PRESENT
    ).exists()


def manifest_get(*, name: str, reference: str) -> Manifest:
    """Return the manifest a tag or digest names; raise ManifestUnknown if there is none.

    One query when it exists (a second on a miss, to answer NameUnknown for an unknown
    repository). A reference that is not a valid tag is unknown (404), as the conformance suite
    expects; a malformed digest raises DigestInvalid (the caller validated it).
    """
    manifest: Manifest | None = None
    if is_digest_reference(reference):
        manifest = Manifest.objects.filter(**_in_repository(name), digest=reference).first()
    elif tag_valid(reference):
        tag = (
            Tag.objects.select_related("manifest")
            .filter(**_in_repository(name), name=reference)
            .first()
        )
        manifest = tag.manifest if tag is not None else None
    if manifest is None:
        repository_get(name=name)
        raise errors.ManifestUnknown({"reference": reference[:300]})
    return manifest


def _byte_order(expression: Combinable | str) -> Any:
    """Return ``expression`` sorted in byte order ("C" collation on PostgreSQL).

    SQLite compares text bytewise already; PostgreSQL's database collation may not.
    """
    if isinstance(expression, str):
        expression = F(expression)
    if connection.vendor == "postgresql":
        return Collate(expression, "C")
    return expression


def tags_page(*, repository: Repository, n: int | None, last: str | None) -> tuple[list[str], bool]:
    """Return up to ``n`` tag names after ``last`` in lexical order, and whether more follow."""
    limit = LIST_PAGE_MAX if n is None else min(n, LIST_PAGE_MAX)
    tags = Tag.objects.filter(repository=repository).annotate(sorted_name=_byte_order("name"))
    if last:
        tags = tags.filter(sorted_name__gt=last)
    names = list(tags.order_by("sorted_name").values_list("name", flat=True)[: limit + 1])
    return names[:limit], len(names) > limit


def repositories_page(
    *, visible: QuerySet[Repository], n: int | None, last: str | None
) -> tuple[list[str], bool]:
    """Return up to ``n`` full names of ``visible`` after ``last``, and whether more follow."""
    limit = LIST_PAGE_MAX if n is None else min(n, LIST_PAGE_MAX)
    full_name = Concat(F("namespace__name"), Value("/"), F("name"), output_field=CharField())
    rows = visible.annotate(sorted_name=_byte_order(full_name))
    if last:
        rows = rows.filter(sorted_name__gt=last)
    names = list(rows.order_by("sorted_name").values_list("sorted_name", flat=True)[: limit + 1])
    return names[:limit], len(names) > limit


def referrers_list(
    *, repository: Repository, digest: str, artifact_type: str | None
) -> list[dict[str, Any]]:
    """Return the descriptors of the repository's manifests whose subject is ``digest``."""
    referrers = Manifest.objects.filter(repository=repository, subject_digest=digest)
    if artifact_type:
        referrers = referrers.filter(artifact_type=artifact_type)
    descriptors = []
    for manifest in referrers.order_by("pk"):
        descriptor: dict[str, Any] = {
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
        }
        if manifest.artifact_type:
            descriptor["artifactType"] = manifest.artifact_type
        if manifest.annotations:
            descriptor["annotations"] = manifest.annotations
        descriptors.append(descriptor)
    return descriptors
