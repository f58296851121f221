"""Reads of the registry: repositories, blobs linked to them, manifests, tags, referrers."""

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import User
from django.db import connection
from django.db.models import CharField, Exists, F, OuterRef, QuerySet, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Collate, Concat

from replication.models import Blob, Placement, PlacementState
from replication.regioncache import content_ttl, region_cache, tag_ttl
from replication.selectors import blob_facts_cached, blob_facts_remember

from . import errors
from .models import BlobUpload, Manifest, Repository, RepositoryBlob, Tag
from .names import is_digest_reference, tag_valid
from .permissions import repositories_pullable

#: Page size of tags and catalog listings when the client asks for more (or for no limit).
LIST_PAGE_MAX = 1000


def _repository_key(name: str) -> str:
    return f"r:{name}"


def repository_remember(*, name: str, repository: Repository) -> None:
    """Cache a repository (with its namespace loaded) by its full name."""
    region_cache.set(_repository_key(name), repository, ttl=content_ttl())


def repository_find(*, name: str) -> Repository | None:
    """Return the repository of a full name (``<namespace>/<rest>``), None if there is none.

    Repositories are never deleted, so a found one is cached (region cache) by its name.
    """
    cached = region_cache.get(_repository_key(name))
    if cached is not None:
        return cached
    namespace, _, rest = name.partition("/")
    repository = (
        Repository.objects.select_related("namespace")
        .filter(namespace__name=namespace, name=rest)
        .first()
    )
    region_cache.set(_repository_key(name), repository, ttl=content_ttl())
    return repository


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


def blob_readable_find(*, digest: str, user: User | None) -> Blob | None:
    """Return the blob of ``digest`` if a repository ``user`` may pull links it (one query).

    Only a blob with a present copy is returned: it can be served once linked elsewhere.
    """
    readable = RepositoryBlob.objects.filter(
        blob_id=OuterRef("pk"), repository__in=repositories_pullable(user=user)
    )
    present = Placement.objects.filter(blob_id=OuterRef("pk"), state=PlacementState.PRESENT)
    return Blob.objects.filter(Exists(readable), Exists(present), digest=digest).first()


def _in_repository(name: str) -> dict[str, str]:
    """Return filter arguments that reach a repository's rows by its full name, through joins."""
    namespace, _, rest = name.partition("/")
    return {"repository__namespace__name": namespace, "repository__name": rest}


def _link_key(name: str, digest: str) -> str:
    return f"l:{name}:{digest}"


def blob_link_remember(*, name: str, digest: str) -> None:
    """Cache the fact that a blob is linked to a repository (it was just pushed there)."""
    region_cache.set(_link_key(name, digest), True, ttl=content_ttl())


def blob_link_forget(*, name: str, digest: str) -> None:
    """Drop the cached fact that a blob is linked to a repository (it was unlinked)."""
    region_cache.delete([_link_key(name, digest)])


def blob_for_pull(*, name: str, digest: str) -> tuple[Blob, list[Placement]]:
    """Return a blob linked to the repository and its present placements; raise if none.

    No query when the region cache knows both the link and the blob's placements (the warm
    metadata path: every ``HEAD`` of a pull). Otherwise one query, which also brings the
    placements (with their locations) the bytes are read from; a miss costs a second one to
    tell an unknown repository (NameUnknown) from an unknown blob (BlobUnknown).
    """
    if region_cache.get(_link_key(name, digest)):
        cached = blob_facts_cached(digest)
        if cached is not None:
            return cached
    linked = RepositoryBlob.objects.filter(**_in_repository(name), blob=OuterRef("blob"))
    placements = list(
        Placement.objects.select_related("blob", "location")
        .filter(blob__digest=digest, state=PlacementState.PRESENT)
        .filter(Exists(linked))
    )
    if not placements:
        repository_get(name=name)
        raise errors.BlobUnknown({"digest": digest})
    blob = placements[0].blob
    region_cache.set(_link_key(name, digest), True, ttl=content_ttl())
    blob_facts_remember(blob, placements)
    return blob, placements


def blob_present_at(*, digest: str, location_id: int) -> bool:
    """Return whether a location holds verified bytes of a digest."""
    return Placement.objects.filter(
        blob__digest=digest, location_id=location_id, state=PlacementState.PRESENT
    ).exists()


def _manifest_key(name: str, digest: str) -> str:
    return f"m:{name}:{digest}"


def _tag_key(name: str, tag: str) -> str:
    return f"t:{name}:{tag}"


def manifest_remember(*, name: str, manifest: Manifest, tags: Sequence[str] = ()) -> None:
    """Cache a manifest by digest (and ``tags`` as pointing at it) for the pull path."""
    content = bytes(manifest.content)
    facts = (manifest.pk, manifest.repository_id, manifest.digest, manifest.media_type, content)
    region_cache.set(
        _manifest_key(name, manifest.digest), facts, ttl=content_ttl(), size=len(content) + 200
    )
    for tag in tags:
        region_cache.set(_tag_key(name, tag), manifest.digest, ttl=tag_ttl())


def manifest_forget(*, name: str, digests: Sequence[str] = (), tags: Sequence[str] = ()) -> None:
    """Drop cached manifests and tags of a repository (they were deleted or moved)."""
    region_cache.delete(
        [_manifest_key(name, digest) for digest in digests] + [_tag_key(name, tag) for tag in tags]
    )


def _manifest_cached(name: str, digest: str) -> Manifest | None:
    facts = region_cache.get(_manifest_key(name, digest))
    if facts is None:
        return None
    pk, repository_id, digest, media_type, content = facts
    return Manifest(
        pk=pk,
        repository_id=repository_id,
        digest=digest,
        media_type=media_type,
        content=content,
        size=len(content),
    )


def manifest_get(*, name: str, reference: str) -> Manifest:
    """Return the manifest a tag or digest names; raise ManifestUnknown if there is none.

    No query when the region cache has it (a tag's target is cached for a few seconds only,
    ``QUAY_GEO_TAG_CACHE_SECONDS``); one query when it exists (a second on a miss, to answer
    NameUnknown for an unknown repository). A reference that is not a valid tag is unknown
    (404), as the conformance suite expects; a malformed digest raises DigestInvalid (the
    caller validated it).
    """
    manifest: Manifest | None = None
    if is_digest_reference(reference):
        manifest = _manifest_cached(name, reference)
        if manifest is None:
            manifest = Manifest.objects.filter(**_in_repository(name), digest=reference).first()
            if manifest is not None:
                manifest_remember(name=name, manifest=manifest)
    elif tag_valid(reference):
        target = region_cache.get(_tag_key(name, reference))
        if target is not None:
            manifest = _manifest_cached(name, target)
        if manifest is None:
            tag = (
                Tag.objects.select_related("manifest")
                .filter(**_in_repository(name), name=reference)
                .first()
            )
            if tag is not None:
                manifest = tag.manifest
                manifest_remember(name=name, manifest=manifest, tags=[reference])
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
