"""Manifest pushes and deletes, tags, and the hook that tells replication about a new manifest."""

import hashlib
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from replication.services import placements_ensure

from .. import errors
from ..models import Manifest, ManifestBlob, ManifestChild, Repository, RepositoryBlob, Tag
from ..names import digest_parse, is_digest_reference, tag_check, tag_valid
from .manifest_parse import ParsedManifest, manifest_parse

logger = logging.getLogger(__name__)

MiB = 1024 * 1024


def manifest_max_bytes() -> int:
    """Return the largest manifest accepted (``QUAY_GEO_MANIFEST_MAX_BYTES``, default 4 MiB)."""
    return int(getattr(settings, "QUAY_GEO_MANIFEST_MAX_BYTES", 4 * MiB))


@dataclass(frozen=True)
class ManifestPushed:
    """The outcome of a manifest push."""

    manifest: Manifest
    tags: list[str]
    subject: str | None


def replication_manifest_committed(manifest: Manifest) -> None:
    """Tell replication that ``manifest`` (and the blobs it references) was committed.

    Called once per push, after the transaction that recorded it: the targets of every blob it
    references, children of an index included, are checked again, for namespaces whose extra
    locations the blobs' first push did not know.
    """
    placements_ensure(blob_ids=manifest_blob_ids(manifest))


def manifest_blob_ids(manifest: Manifest) -> set[int]:
    """Return the ids of every blob a manifest references, through nested indexes too."""
    blob_ids: set[int] = set()
    seen: set[int] = set()
    frontier = [manifest.pk]
    while frontier:
        seen.update(frontier)
        blob_ids.update(
            ManifestBlob.objects.filter(manifest_id__in=frontier).values_list("blob_id", flat=True)
        )
        children = ManifestChild.objects.filter(parent_id__in=frontier).values_list(
            "child_id", flat=True
        )
        frontier = [child for child in children if child not in seen]
    return blob_ids


def _digest_of(content: bytes, reference: str) -> str:
    """Return the manifest's digest: the reference's algorithm if it is a digest, else sha256."""
    if not is_digest_reference(reference):
        return f"sha256:{hashlib.sha256(content).hexdigest()}"
    wanted = digest_parse(reference)
    actual = hashlib.new(wanted.algorithm, content).hexdigest()
    if actual != wanted.hex:
        raise errors.DigestInvalid(
            {"reference": reference, "actual": f"{wanted.algorithm}:{actual}"},
            message="the manifest's digest does not match the reference",
        )
    return reference


def _references_resolve(
    repository: Repository, parsed: ParsedManifest
) -> tuple[list[int], list[int]]:
    """Return the ids of the blobs and child manifests a manifest references.

    Raise ManifestBlobUnknown when one is not in the repository (a foreign layer may be absent).
    """
    wanted = {str(d.digest) for d in parsed.blobs}
    blob_ids = dict(
        RepositoryBlob.objects.filter(repository=repository, blob__digest__in=wanted).values_list(
            "blob__digest", "blob_id"
        )
    )
    children = {str(d.digest) for d in parsed.children}
    child_ids = dict(
        Manifest.objects.filter(repository=repository, digest__in=children).values_list(
            "digest", "pk"
        )
    )
    missing = sorted(
        {str(d.digest) for d in parsed.blobs if not d.foreign and str(d.digest) not in blob_ids}
        | {digest for digest in children if digest not in child_ids}
    )
    if missing:
        raise errors.ManifestBlobUnknown(
            [{"digest": digest} for digest in missing],
            message=f"manifest references content unknown to {repository.full_name}: "
            + ", ".join(missing),
        )
    return sorted(set(blob_ids.values())), sorted(set(child_ids.values()))


def manifest_put(
    *,
    repository: Repository,
    reference: str,
    tags: list[str],
    content: bytes,
    content_type: str,
) -> ManifestPushed:
    """Store a manifest byte-exact, record what it references and point its tags at it."""
    wanted_tags = [] if is_digest_reference(reference) else [tag_check(reference)]
    wanted_tags = list(dict.fromkeys(wanted_tags + [tag_check(tag) for tag in tags]))
    digest = _digest_of(content, reference)
    parsed = manifest_parse(content, content_type)
    with transaction.atomic():
        blob_ids, child_ids = _references_resolve(repository, parsed)
        manifest, created = Manifest.objects.get_or_create(
            repository=repository,
            digest=digest,
            defaults={
                "media_type": parsed.media_type,
                "content": content,
                "size": len(content),
                "artifact_type": parsed.artifact_type,
                "subject_digest": str(parsed.subject.digest) if parsed.subject else "",
                "annotations": parsed.annotations,
            },
        )
        if created:
            ManifestBlob.objects.bulk_create(
                [ManifestBlob(manifest=manifest, blob_id=blob_id) for blob_id in blob_ids]
            )
            ManifestChild.objects.bulk_create(
                [ManifestChild(parent=manifest, child_id=child_id) for child_id in child_ids]
            )
        elif manifest.media_type != parsed.media_type:
            Manifest.objects.filter(pk=manifest.pk).update(media_type=parsed.media_type)
            manifest.media_type = parsed.media_type
        for tag in wanted_tags:
            Tag.objects.update_or_create(
                repository=repository, name=tag, defaults={"manifest": manifest}
            )
    logger.info("manifest %s pushed to %s, tags %s", digest, repository, wanted_tags)
    replication_manifest_committed(manifest)
    return ManifestPushed(
        manifest=manifest,
        tags=wanted_tags,
        subject=str(parsed.subject.digest) if parsed.subject else None,
    )


def manifest_delete(*, repository: Repository, reference: str) -> None:
    """Delete a manifest and its tags (digest reference), or only a tag (tag reference)."""
    if is_digest_reference(reference):
        digest_parse(reference)
        deleted, _ = Manifest.objects.filter(repository=repository, digest=reference).delete()
    elif tag_valid(reference):
        deleted, _ = Tag.objects.filter(repository=repository, name=reference).delete()
    else:
        deleted = 0
    if not deleted:
        raise errors.ManifestUnknown({"reference": reference[:300]})
    logger.info("deleted %s from %s", reference, repository)
